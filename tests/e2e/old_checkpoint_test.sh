#!/usr/bin/env bash
# What: a checkpoint written before the model plug-in (by c9fd78c: np 2, tp 2, step 3 of a
# 1-layer GPT-2, tests/e2e/golden/checkpoint_c9fd78c_tp2; its manifest has no model.arch)
# still resumes: at its own layout the remaining steps are bitwise those of an uninterrupted
# run, and resharded to np 1 they agree with the np 1 run within 1e-5. Bitwise holds only on the
# OpenBLAS core that wrote it (SkylakeX: the uninterrupted run's first 3 steps differ per core);
# on another core (build.blas_core of `meshtrain info --json`) the tp 2 steps must agree within
# 1e-6 relative. Measured on Zen (AVX2): the correct load is within 2.3e-8; wrong loads are far
# off: params read one element off 5.4e-3, optimizer moment m lost 2.2e-3, the ranks' shards
# swapped 5.2e-4, the step-2 or step-4 checkpoint (relabelled step 3) 1.5e-3 / 5.3e-3 (worst of
# steps 3-5). One parameter scaled by 1.001 stays below 1e-7 in 3 steps: that is not caught.
# Why: issue #13 changed how the model is built and resharded; checkpoints users already have
# must keep working (or be refused by name, which a test-only architecture checks in
# tests/mpi/model_plugin_test.cc).
source "$(dirname "$0")/lib.sh"
cd "$MT_SOURCE_DIR"
cfg=(examples/tiny.yaml model.n_embd=32 model.n_layer=1 model.seq_len=16 train.steps=6 train.batch_size=4
     train.micro_batch=4 train.eval_every=0 optim.schedule=constant)
cp -r tests/e2e/golden/checkpoint_c9fd78c_tp2/step_00000003 "$WORK/old"
mpi -np 2 "$MESHTRAIN" train "${cfg[@]}" parallel.tp=2 run.dir="$WORK/full_tp2" >"$WORK/a.log" 2>&1 || { cat "$WORK/a.log"; fail "uninterrupted tp2"; }
mpi -np 2 "$MESHTRAIN" train "${cfg[@]}" parallel.tp=2 run.dir="$WORK/res_tp2" checkpoint.resume="$WORK/old" \
  >"$WORK/b.log" 2>&1 || { cat "$WORK/b.log"; fail "resume of the old checkpoint at tp 2"; }
grep -q "resumed from $WORK/old (step 3)" "$WORK/b.log" || { cat "$WORK/b.log"; fail "no resume line"; }
recorded_core=SkylakeX  # the OpenBLAS core of the machine that wrote the checkpoint (AVX-512)
core=$("$MESHTRAIN" info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["build"]["blas_core"])') ||
  fail "no BLAS core from $MESHTRAIN info --json"
if [[ $core == "$recorded_core" ]]; then
  diff <(step_losses "$WORK/full_tp2" 3) <(step_losses "$WORK/res_tp2" 3) || fail "tp 2 resume is not bitwise"
  echo "tp 2: steps 3-5 after the old checkpoint are bitwise those of the uninterrupted run (OpenBLAS core $core)"
else
  python3 - "$WORK/full_tp2" "$WORK/res_tp2" "$core" "$recorded_core" <<'PY' || fail "tp 2 resume differs (beyond 1e-6)"
import json, sys
def load(d): return {r["step"]: r["loss"] for r in map(json.loads, open(d + "/metrics.jsonl")) if "loss" in r}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert sorted(b) == [3, 4, 5], sorted(b)
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in b)
print(f"tp 2: steps 3-5 after the old checkpoint within {worst:.2e} (tolerance 1e-6) of the uninterrupted run, "
      f"not bitwise: OpenBLAS core {sys.argv[3]} here, {sys.argv[4]} on the machine that wrote the checkpoint")
sys.exit(0 if worst <= 1e-6 else 1)
PY
fi
"$MESHTRAIN" train "${cfg[@]}" run.dir="$WORK/full_np1" >"$WORK/c.log" 2>&1 || { cat "$WORK/c.log"; fail "np 1"; }
"$MESHTRAIN" train "${cfg[@]}" run.dir="$WORK/res_np1" checkpoint.resume="$WORK/old" >"$WORK/d.log" 2>&1 ||
  { cat "$WORK/d.log"; fail "resharded resume at np 1"; }
grep -q "resharded from world 2 dp 1 tp 2" "$WORK/d.log" || { cat "$WORK/d.log"; fail "no reshard line"; }
python3 - "$WORK/full_np1" "$WORK/res_np1" <<'PY' || fail "resharded resume differs"
import json, sys
def load(d): return {r["step"]: r["loss"] for r in map(json.loads, open(d + "/metrics.jsonl")) if "loss" in r}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert sorted(b) == [3, 4, 5], sorted(b)
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in b)
print(f"np 1 resharded: steps 3-5 within {worst:.2e} of the uninterrupted run")
sys.exit(0 if worst <= 1e-5 else 1)
PY
echo "PASS: old checkpoint"
