#!/usr/bin/env bash
# SIGKILL while a checkpoint is being written: the half-written step_N.tmp is never used;
# resume=auto takes the previous complete checkpoint, and the loss stream continues
# bit-identically to the uninterrupted run.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
# a large vocabulary makes the checkpoint big (~50 MB) and its write slow enough to hit
common=(train.steps=12 train.eval_every=0 train.log_every=4 model.vocab_size=30000 data.markov_vocab=16
        model.n_embd=128 model.seq_len=32 train.batch_size=4 train.micro_batch=4 checkpoint.every=4)
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/full" >/dev/null
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/k" > "$WORK/k.log" 2>&1 & pid=$!
caught=""
for _ in $(seq 1 3000); do
  if [ -d "$WORK/k/checkpoints/step_00000008.tmp" ]; then kill -9 $pid; caught=1; break; fi
  sleep 0.002
done
wait $pid 2>/dev/null || true
[ -n "$caught" ] || fail "never saw the step-8 checkpoint being written"
[ ! -e "$WORK/k/checkpoints/step_00000008/COMPLETE" ] || fail "the step-8 checkpoint completed before the kill"
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/k" resume=auto 2>&1)
grep -q "resumed from .*step_00000004" <<< "$out" || fail "did not resume from step 4: $out"
diff <(step_losses "$WORK/full") <(step_losses "$WORK/k") || fail "loss stream differs after the kill"
[ ! -e "$WORK/k/checkpoints/step_00000008.tmp" ] || fail "stale .tmp directory not cleaned up"
