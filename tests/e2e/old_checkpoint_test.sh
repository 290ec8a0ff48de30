#!/usr/bin/env bash
# What: a checkpoint written before the model plug-in (by c9fd78c: np 2, tp 2, step 3 of a
# 1-layer GPT-2, tests/e2e/golden/checkpoint_c9fd78c_tp2; its manifest has no model.arch)
# still resumes: at its own layout the remaining steps are bitwise those of an uninterrupted
# run, and resharded to np 1 they agree with the np 1 run within 1e-5.
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
diff <(step_losses "$WORK/full_tp2" 3) <(step_losses "$WORK/res_tp2" 3) || fail "tp 2 resume is not bitwise"
echo "tp 2: steps 3-5 after the old checkpoint are bitwise those of the uninterrupted run"
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
