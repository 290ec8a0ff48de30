#!/usr/bin/env bash
# Activation recomputation end to end (train.recompute: full): per-step losses are bitwise
# those of recompute none at np 1 (GPT-2 and Llama), at tp 2 (the recomputed blocks re-issue
# their tp all-reduces) and at dp 2 x tp 2 with ZeRO-1; the start-up memory line shows the
# saving; `bench step --dry-run` models it; selective is refused naming the key.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=10 train.eval_every=0 train.log_every=1 model.n_layer=3 model.n_embd=64 model.seq_len=32
        model.vocab_size=50 data.markov_vocab=16 train.batch_size=8 train.micro_batch=4
        train.threads=1 parallel.bucket_mb=0.05)
same() {  # same RUN_A RUN_B: identical per-step losses, exactly as written
  diff <(step_losses "$1") <(step_losses "$2") >/dev/null || fail "$(basename "$2") differs from $(basename "$1")"
  [ "$(step_losses "$1" | wc -l)" -eq 10 ] || fail "$1: expected 10 steps"
  echo "$(basename "$2"): 10 steps bitwise equal to $(basename "$1")"
}
for r in none full; do
  "$MESHTRAIN" train "$CFG" "${common[@]}" train.recompute=$r run.dir="$WORK/np1-$r" > "$WORK/np1-$r.log" 2>&1
  "$MESHTRAIN" train "$CFG" "${common[@]}" model.arch=llama model.n_kv_head=2 train.recompute=$r \
    run.dir="$WORK/llama-$r" > /dev/null 2>&1
  mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 train.recompute=$r run.dir="$WORK/tp2-$r" \
    > /dev/null 2>&1
  mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 parallel.dp=2 parallel.zero=1 \
    train.recompute=$r run.dir="$WORK/dp2tp2z-$r" > /dev/null 2>&1
done
for r in np1 llama tp2 dp2tp2z; do same "$WORK/$r-none" "$WORK/$r-full"; done
# the memory line (a model big enough for MiB): full holds less and names what none would hold
big=(train.steps=1 train.eval_every=0 model.n_layer=4 model.n_embd=128 model.seq_len=128 train.batch_size=8
     train.micro_batch=8 train.threads=1)
for r in none full; do
  "$MESHTRAIN" train "$CFG" "${big[@]}" train.recompute=$r run.dir="$WORK/mem-$r" > "$WORK/mem-$r.log" 2>&1
done
grep -q "activations .* MiB (recompute full; none: .* MiB)" "$WORK/mem-full.log" || fail "no recompute in memory line"
# the dry run models it (GPT-2 124M at micro_batch 4 x 1024: GiB of activations)
dn=$("$MESHTRAIN" bench step "$MT_SOURCE_DIR/examples/gpt2-124m.yaml" --dry-run train.micro_batch=4 | grep "<- configured")
df=$("$MESHTRAIN" bench step "$MT_SOURCE_DIR/examples/gpt2-124m.yaml" --dry-run train.micro_batch=4 train.recompute=full |
     grep "<- configured")
python3 - "$WORK" "$dn" "$df" <<'PY'
import re, sys
def acts(f):
    return float(re.search(r"activations ([0-9.]+) MiB", open(f).read()).group(1))
n, f = acts(f"{sys.argv[1]}/mem-none.log"), acts(f"{sys.argv[1]}/mem-full.log")
none_said = float(re.search(r"none: ([0-9.]+) MiB", open(f"{sys.argv[1]}/mem-full.log").read()).group(1))
assert f < n / 2 and none_said == n, (n, f, none_said)
print(f"memory line: activations {n} MiB (none) -> {f} MiB (full)")
dn, df = float(sys.argv[2].split()[9]), float(sys.argv[3].split()[9])  # dp x tp | params working grads optim activ.
assert df < dn / 2, (dn, df)
print(f"dry run, gpt2-124m micro_batch 4: activations {dn} GiB (none) -> {df} GiB (full)")
PY
set +e
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.recompute=selective run.dir="$WORK/bad" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "recompute selective was accepted"
echo "$out" | grep -q "train.recompute" || fail "selective refusal does not name the key: $out"
echo "$out" | grep -q "not built yet" || fail "selective refusal does not say it is not built: $out"
