#!/usr/bin/env bash
# train.nonfinite=skip has a limit: after train.max_skips_in_row consecutive skipped steps a
# diverged run stops (non-zero exit, a message naming the count and the key, the last good
# checkpoint kept); fewer skips in a row finish; 0 = unlimited; the consecutive count travels
# in the checkpoint, so a resumed run continues it. train.debug_nan_steps poisons the
# gradients of that many consecutive steps from train.debug_nan_step on.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=20 train.eval_every=0 train.eval_batches=1 train.log_every=100 model.n_embd=32
        model.seq_len=16 train.batch_size=8 train.micro_batch=4 train.threads=1 run.tensorboard=false
        run.peak_gflops=1 train.nonfinite=skip)
skipped() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/summary.json"))["skipped_steps"])' "$1"; }

# 5 NaN steps (5..9) with max_skips_in_row=3: stops at the third (step 7), non-zero, named;
# the step-5 checkpoint (before the first NaN) is kept and nothing is written after it
set +e
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/limit" checkpoint.every=5 train.max_skips_in_row=3 \
      train.debug_nan_step=5 train.debug_nan_steps=5 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "a run past max_skips_in_row exited 0: $out"
grep -q "3 consecutive steps skipped for a non-finite gradient norm (steps 5 to 7), train.max_skips_in_row = 3" <<< "$out" \
  || fail "no message naming the count and the key: $out"
[ -f "$WORK/limit/checkpoints/step_00000005/COMPLETE" ] || fail "the last good checkpoint is missing"
[ ! -e "$WORK/limit/checkpoints/step_00000010" ] || fail "a checkpoint was written after the limit"
[ ! -e "$WORK/limit/summary.json" ] || fail "a stopped run wrote summary.json"
[ "$(step_losses "$WORK/limit" 0 | wc -l)" = 8 ] || fail "steps 0..7 should be recorded"

# the default limit (10) with 2 NaN steps in a row: the run finishes, both skips counted
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/two" train.debug_nan_step=5 train.debug_nan_steps=2 >/dev/null
[ "$(skipped "$WORK/two")" = 2 ] || fail "default limit, 2 NaN steps: expected 2 skipped steps"
# 0 = unlimited: 12 NaN steps in a row (more than the default 10) finish
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/unlimited" train.max_skips_in_row=0 \
  train.debug_nan_step=2 train.debug_nan_steps=12 >/dev/null
[ "$(skipped "$WORK/unlimited")" = 12 ] || fail "max_skips_in_row=0: expected 12 skipped steps"

# the count survives a resume: NaN at steps 8..11, limit 3, checkpoint after step 9 (2 in a
# row so far). The run stops at step 10; resuming from its step-10 checkpoint stops at step 10
# again (a count restarted at 0 would reach only 2 and finish).
nan=(checkpoint.every=10 train.max_skips_in_row=3 train.debug_nan_step=8 train.debug_nan_steps=4)
set +e
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" "${nan[@]}" run.dir="$WORK/resume" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] && grep -q "(steps 8 to 10), train.max_skips_in_row = 3" <<< "$out" || fail "first run: $out"
[ -f "$WORK/resume/checkpoints/step_00000010/COMPLETE" ] || fail "no step-10 checkpoint to resume from"
set +e
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" "${nan[@]}" run.dir="$WORK/resume" resume=auto 2>&1); rc=$?
set -e
grep -q "resumed from .*step_00000010" <<< "$out" || fail "did not resume from step 10: $out"
[ $rc -ne 0 ] && grep -q "3 consecutive steps skipped .*(steps 8 to 10)" <<< "$out" \
  || fail "the resumed run lost the consecutive count: rc $rc: $out"
echo "ok"
