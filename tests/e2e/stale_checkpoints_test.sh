#!/usr/bin/env bash
# Checkpoints newer than the step a run starts from belong to a run it replaces (a fresh start
# in a used run.dir, or resume=PATH rolling back to an older checkpoint). They must neither
# make keep-N pruning delete the new run's checkpoints nor be what resume=auto picks later:
# they are moved aside (kept, under checkpoints/superseded_*), with a warning.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(model.n_embd=32 model.seq_len=16 train.batch_size=8 train.micro_batch=4 train.threads=1
        run.tensorboard=false train.log_every=100 train.eval_every=0 train.eval_batches=1 run.peak_gflops=1
        checkpoint.every=2 checkpoint.keep=3)
ck="$WORK/r/checkpoints"
"$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=6 run.dir="$WORK/r" > /dev/null 2>&1
[ "$(ls "$ck" | tr '\n' ' ')" = "step_00000002 step_00000004 step_00000006 " ] || fail "run A: $(ls "$ck")"

# a fresh run B in the same run.dir (another lr), ending (as if killed) after step 3
"$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=3 optim.lr=0.001 run.dir="$WORK/r" > "$WORK/b.log" 2>&1 \
  || { cat "$WORK/b.log"; fail "run B failed"; }
[ -e "$ck/step_00000002/COMPLETE" ] && [ -e "$ck/step_00000003/COMPLETE" ] || fail "run B's checkpoints were pruned: $(ls "$ck")"
grep -q "superseded" "$WORK/b.log" || fail "no warning about the older run's checkpoints: $(cat "$WORK/b.log")"
ls -d "$ck"/superseded_*/step_00000006 > /dev/null 2>&1 || fail "run A's step-6 checkpoint was not kept aside: $(ls -R "$ck")"
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=6 optim.lr=0.001 run.dir="$WORK/r" resume=auto 2>&1)
grep -q "resumed from .*step_00000003" <<< "$out" || fail "resume=auto did not continue run B: $out"

# rolling back: resume=PATH to step 3 (checkpoints 3, 4, 6 now), ending (as if killed) at step 5
"$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=5 checkpoint.every=3 optim.lr=0.001 run.dir="$WORK/r" \
  resume="$ck/step_00000003" > "$WORK/c.log" 2>&1 || { cat "$WORK/c.log"; fail "rollback run failed"; }
[ -e "$ck/step_00000005/COMPLETE" ] || fail "the rolled-back run's step-5 checkpoint is gone: $(ls "$ck")"
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=6 checkpoint.every=3 optim.lr=0.001 run.dir="$WORK/r" resume=auto 2>&1)
grep -q "resumed from .*step_00000005" <<< "$out" || fail "resume=auto did not continue the rolled-back run: $out"
echo "stale checkpoints: moved aside, the new run's kept and resumed"
