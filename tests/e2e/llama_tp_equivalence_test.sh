#!/usr/bin/env bash
# Llama (model.arch llama) on the mesh: 50 steps at tp 2, tp 4 (4 query heads, 2 kv heads:
# each kv head replicated on 2 ranks, its gradient summed over them), dp 2 x tp 2 and ZeRO-1,
# and a tied head at tp 2, reproduce the per-step losses of np 1 within 1e-5 relative; dp
# replicas of a tp slice hold bit-identical parameters; a checkpoint written at tp 4 resumes
# resharded at tp 2 on the np 1 trajectory; bad shapes are clear errors naming the key,
# raised before the run directory exists.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/llama-tiny.yaml"
common=(train.steps=50 train.eval_every=0 train.log_every=25 model.n_embd=64 model.ffn_dim=96 model.seq_len=32
        model.vocab_size=50 data.markov_vocab=16 train.batch_size=8 train.micro_batch=4
        train.threads=1 parallel.bucket_mb=0.05)
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/np1"
"$MESHTRAIN" train "$CFG" "${common[@]}" model.tie_embeddings=true run.dir="$WORK/np1tied"
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 run.dir="$WORK/tp2"
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=4 checkpoint.every=25 run.dir="$WORK/tp4"
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 parallel.dp=2 run.dir="$WORK/dp2tp2"
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 parallel.dp=2 parallel.zero=1 run.dir="$WORK/dp2tp2z"
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 model.tie_embeddings=true run.dir="$WORK/tp2tied"
for r in tp2 tp4 dp2tp2 dp2tp2z; do
  compare_losses "$WORK/np1" "$WORK/$r" 1e-5 || fail "$r differs from np1"
done
compare_losses "$WORK/np1tied" "$WORK/tp2tied" 1e-5 || fail "tied head at tp 2 differs from np1"
python3 - "$WORK" <<'PY'
import json, sys
for r in ("dp2tp2", "dp2tp2z"):
    s = json.load(open(f"{sys.argv[1]}/{r}/summary.json"))
    sums, tp = s["param_checksums"], s["tp"]
    for t in range(tp):
        assert len(set(sums[t::tp])) == 1, f"{r}: tp slice {t} differs across dp replicas"
# tp 4 with 2 kv heads: ranks 0,1 hold kv head 0 and ranks 2,3 kv head 1, so the checksums of
# all four differ (their q, o, gate|up, down slices differ) but the run must not have diverged
a = [json.loads(l)["loss"] for l in open(f"{sys.argv[1]}/tp4/metrics.jsonl") if '"loss"' in l]
assert a[-1] < a[0], f"tp4 did not learn: {a[0]} -> {a[-1]}"
print("dp replicas agree; tp4 learned")
PY
# resume the tp 4 checkpoint (replicated kv heads) at tp 2: the remaining steps on the np 1 trajectory
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 checkpoint.resume="$WORK/tp4/checkpoints/step_00000025" \
  run.dir="$WORK/tp4to2" >"$WORK/tp4to2.log" 2>&1 || { cat "$WORK/tp4to2.log"; fail "resume tp4 -> tp2"; }
python3 - "$WORK" <<'PY' || fail "resumed tp4 -> tp2 left the np1 trajectory"
import json, sys
def load(d): return {json.loads(l)["step"]: json.loads(l)["loss"] for l in open(d + "/metrics.jsonl") if '"loss"' in l}
a, b = load(sys.argv[1] + "/np1"), load(sys.argv[1] + "/tp4to2")
steps = sorted(b)
assert steps and steps[0] > 20 and steps[-1] == max(a), steps
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)
print(f"resumed tp4 -> tp2: steps {steps[0]}..{steps[-1]} within {worst:.2e} of np1")
assert worst <= 1e-5
PY
# bad shapes: each names its key, and nothing is written
expect_error() {  # expect_error KEY OVERRIDES...
  local key=$1; shift
  set +e
  out=$("$MESHTRAIN" train "$CFG" "${common[@]}" "$@" run.dir="$WORK/bad" 2>&1); rc=$?
  set -e
  [ $rc -ne 0 ] || fail "accepted: $*"
  grep -q "$key" <<< "$out" || fail "error for '$*' does not name $key: $out"
  [ ! -e "$WORK/bad" ] || fail "a failed start ($*) created the run directory"
}
expect_error model.n_kv_head model.n_kv_head=3
expect_error model.n_embd model.n_embd=66
expect_error model.n_head model.n_embd=60 model.n_head=4 model.n_kv_head=4   # head size 15: odd
set +e
out=$(mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" model.n_head=8 model.n_kv_head=8 model.n_embd=64 parallel.tp=4 \
      model.ffn_dim=98 run.dir="$WORK/bad" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "ffn_dim 98 at tp 4 was accepted"
grep -q "model.ffn_dim" <<< "$out" || fail "tp error does not name model.ffn_dim: $out"
[ ! -e "$WORK/bad" ] || fail "a failed start created the run directory"
echo "PASS"
