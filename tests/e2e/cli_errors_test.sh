#!/usr/bin/env bash
# The binary reports bad input clearly, exits non-zero, and does not create a run directory.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
expect_error() {  # expect_error PATTERN ARGS...
  local pat=$1; shift
  set +e; out=$("$MESHTRAIN" "$@" 2>&1); rc=$?; set -e
  [ $rc -ne 0 ] || fail "exit 0 for: $*"
  grep -q -- "$pat" <<< "$out" || fail "no '$pat' in output of '$*': $out"
}
expect_error "did you mean 'train.steps'" train "$CFG" train.step=5 run.dir="$WORK/x"
expect_error "cannot open the config file" train "$WORK/none.yaml"
printf 'model:\n  n_embd: 100\n  n_head: 3\n' > "$WORK/bad.yaml"
expect_error "bad.yaml:2" train "$WORK/bad.yaml" run.dir="$WORK/x"
expect_error "not divisible by train.micro_batch" train "$CFG" train.batch_size=10 train.micro_batch=4 run.dir="$WORK/x"
[ ! -e "$WORK/x" ] || fail "a failed start created the run directory"
# (to a file: grep -q would close the pipe early, and pipefail would see SIGPIPE once the help
# is longer than one stdio buffer)
"$MESHTRAIN" train --help > "$WORK/help.txt"
grep -q "train.steps" "$WORK/help.txt" && grep -q "data.schedule" "$WORK/help.txt" || fail "train --help lacks the config keys"
"$MESHTRAIN" bench step --help >/dev/null
# a checkpoint directory that cannot be written fails before the first step, not at the
# first checkpoint (or preemption) after hours of training; it names the key
touch "$WORK/afile"
tiny=(model.n_embd=32 model.seq_len=16 train.batch_size=8 train.micro_batch=4 train.threads=1 train.steps=3)
expect_error "checkpoint.dir" train "$CFG" "${tiny[@]}" checkpoint.every=2 checkpoint.dir="$WORK/afile/ck" run.dir="$WORK/y"
! grep -q "step .*/3" <<< "$out" || fail "training started before the checkpoint directory error: $out"
expect_error "run.dir" train "$CFG" "${tiny[@]}" run.dir="$WORK/afile/run"
# resume=PATH naming a run directory or its checkpoints/ (not one checkpoint) says which to pass;
# a checkpoint directory without its COMPLETE marker is refused as incomplete
"$MESHTRAIN" train "$CFG" "${tiny[@]}" checkpoint.every=2 run.dir="$WORK/ok" > /dev/null 2>&1
expect_error "resume=$WORK/ok/checkpoints/step_00000003" train "$CFG" "${tiny[@]}" run.dir="$WORK/z" resume="$WORK/ok"
expect_error "resume=$WORK/ok/checkpoints/step_00000003" train "$CFG" "${tiny[@]}" run.dir="$WORK/z" resume="$WORK/ok/checkpoints"
! grep -q "(rank 0) (rank 0)" <<< "$out" || fail "the rank is named twice: $out"
cp -r "$WORK/ok/checkpoints/step_00000002" "$WORK/half"; rm "$WORK/half/COMPLETE"
expect_error "COMPLETE" train "$CFG" "${tiny[@]}" run.dir="$WORK/z" resume="$WORK/half"
