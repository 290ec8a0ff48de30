#!/usr/bin/env bash
# Activation recomputation end to end (train.recompute: full and selective): per-step losses
# are bitwise those of recompute none at np 1 (GPT-2 and Llama), at tp 2 (full re-issues the
# blocks' tp all-reduces, selective recomputes only local attention and MLP activations) and
# at dp 2 x tp 2 with ZeRO-1; the start-up memory line shows the saving (full < selective <
# none); `bench step --dry-run` models both; an unknown value is refused naming the key.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=50 train.eval_every=0 train.log_every=1 model.n_layer=3 model.n_embd=64 model.seq_len=32
        model.vocab_size=50 data.markov_vocab=16 train.batch_size=8 train.micro_batch=4
        train.threads=1 parallel.bucket_mb=0.05)
same() {  # same RUN_A RUN_B: identical per-step losses, exactly as written
  diff <(step_losses "$1") <(step_losses "$2") >/dev/null || fail "$(basename "$2") differs from $(basename "$1")"
  [ "$(step_losses "$1" | wc -l)" -eq 50 ] || fail "$1: expected 50 steps"
  echo "$(basename "$2"): 50 steps bitwise equal to $(basename "$1")"
}
for r in none full selective; do
  "$MESHTRAIN" train "$CFG" "${common[@]}" train.recompute=$r run.dir="$WORK/np1-$r" > "$WORK/np1-$r.log" 2>&1
  "$MESHTRAIN" train "$CFG" "${common[@]}" model.arch=llama model.n_kv_head=2 train.recompute=$r \
    run.dir="$WORK/llama-$r" > /dev/null 2>&1
  mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 train.recompute=$r run.dir="$WORK/tp2-$r" \
    > /dev/null 2>&1
  mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 parallel.dp=2 parallel.zero=1 \
    train.recompute=$r run.dir="$WORK/dp2tp2z-$r" > /dev/null 2>&1
done
for r in np1 llama tp2 dp2tp2z; do
  same "$WORK/$r-none" "$WORK/$r-full"
  same "$WORK/$r-none" "$WORK/$r-selective"
done
# the memory line (a model big enough for MiB): full holds less and names what none would hold
big=(train.steps=1 train.eval_every=0 model.n_layer=4 model.n_embd=128 model.seq_len=128 train.batch_size=8
     train.micro_batch=8 train.threads=1)
for r in none full selective; do
  "$MESHTRAIN" train "$CFG" "${big[@]}" train.recompute=$r run.dir="$WORK/mem-$r" > "$WORK/mem-$r.log" 2>&1
done
grep -q "activations .* MiB (recompute full; none: .* MiB)" "$WORK/mem-full.log" || fail "no recompute in memory line"
grep -q "activations .* MiB (recompute selective; none: .* MiB)" "$WORK/mem-selective.log" ||
  fail "no selective recompute in memory line"
# the dry run models it (GPT-2 124M at micro_batch 4 x 1024: GiB of activations)
dn=$("$MESHTRAIN" bench step "$MT_SOURCE_DIR/examples/gpt2-124m.yaml" --dry-run train.micro_batch=4 | grep "<- configured")
df=$("$MESHTRAIN" bench step "$MT_SOURCE_DIR/examples/gpt2-124m.yaml" --dry-run train.micro_batch=4 train.recompute=full |
     grep "<- configured")
ds=$("$MESHTRAIN" bench step "$MT_SOURCE_DIR/examples/gpt2-124m.yaml" --dry-run train.micro_batch=4 \
     train.recompute=selective | grep "<- configured")
python3 - "$WORK" "$dn" "$df" "$ds" <<'PY'
import re, sys
def acts(f):
    return float(re.search(r"activations ([0-9.]+) MiB", open(f).read()).group(1))
w = sys.argv[1]
n, f, s = acts(f"{w}/mem-none.log"), acts(f"{w}/mem-full.log"), acts(f"{w}/mem-selective.log")
for r in ("full", "selective"):
    none_said = float(re.search(r"none: ([0-9.]+) MiB", open(f"{w}/mem-{r}.log").read()).group(1))
    assert none_said == n, (r, n, none_said)
assert f < n / 2 and f < s < n, (n, f, s)
print(f"memory line: activations {n} MiB (none) -> {s} MiB (selective) -> {f} MiB (full)")
# dp x tp | params working grads optim activ.
dn, df, ds = (float(a.split()[9]) for a in sys.argv[2:5])
assert df < dn / 2 and df < ds < dn, (dn, df, ds)
# selective drops 11 of 12 layers' probabilities (4 x 12 heads x 1024 x 1024) and GELU outputs
# (4096 x 3072), fp32; the table rounds to 0.01 GiB
dropped = 11 * (4 * 12 * 1024 * 1024 + 4096 * 3072) * 4 / 2**30
assert abs((dn - ds) - dropped) < 0.011, (dn, ds, dropped)
print(f"dry run, gpt2-124m micro_batch 4: activations {dn} GiB (none) -> {ds} GiB (selective) -> {df} GiB (full)")
PY
set +e
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.recompute=partial run.dir="$WORK/bad" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "recompute partial was accepted"
grep -q "train.recompute" <<< "$out" || fail "the refusal does not name the key: $out"
grep -q "selective" <<< "$out" || fail "the refusal does not list the values: $out"
