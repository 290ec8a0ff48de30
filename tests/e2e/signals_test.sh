#!/usr/bin/env bash
# SIGINT (Ctrl-C) and SIGHUP to a single training process act as SIGTERM does: a message, a
# checkpoint after the step, exit 0, and resume=auto continues; a second signal exits at
# once. A SIGHUP that the parent ignores (nohup) stays ignored. A configuration error that
# every rank finds aborts the job without any rank announcing a checkpoint for mpirun's SIGTERM.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(model.n_embd=32 model.seq_len=16 train.batch_size=8 train.micro_batch=4 train.threads=1
        run.tensorboard=false train.log_every=1000 train.eval_every=0 train.eval_batches=1 run.peak_gflops=1
        train.steps=1000000)
# bash starts `cmd &` with SIGINT ignored (no job control): restore the default first, as an
# interactive shell would
start() { exec python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGHUP, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])' "$MESHTRAIN" train "$CFG" "${common[@]}" "$@"; }

for sig in INT HUP; do
  d="$WORK/$sig"
  (start run.dir="$d") > "$WORK/$sig.log" 2>&1 & pid=$!
  wait_steps "$d" 5
  kill -$sig $pid
  set +e; wait $pid; rc=$?; set -e
  [ $rc -eq 0 ] || fail "SIG$sig: exit $rc, not 0: $(cat "$WORK/$sig.log")"
  grep -q "SIG$sig received" "$WORK/$sig.log" || fail "SIG$sig: no message: $(cat "$WORK/$sig.log")"
  grep -q "preempted after step" "$WORK/$sig.log" || fail "SIG$sig: no checkpoint line"
  ls "$d/checkpoints" | grep -q "^step_" || fail "SIG$sig: no checkpoint"
  out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=3 run.dir="$d" resume=auto 2>&1) || fail "resume: $out"
  grep -q "resumed from" <<< "$out" || fail "SIG$sig: the run did not resume: $out"
done

# a second SIGINT: at once, with a line saying so
(start run.dir="$WORK/two") > "$WORK/two.log" 2>&1 & pid=$!
wait_steps "$WORK/two" 5
kill -INT $pid; kill -INT $pid
set +e; wait $pid; rc=$?; set -e
[ $rc -eq 0 ] || [ $rc -eq 130 ] || fail "double SIGINT: exit $rc"
grep -q "SIGINT received" "$WORK/two.log" || fail "double SIGINT: no message: $(cat "$WORK/two.log")"

# nohup: SIGHUP stays ignored, the run goes on (then SIGTERM ends it)
(trap '' HUP; exec "$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/nohup") > "$WORK/nohup.log" 2>&1 & pid=$!
wait_steps "$WORK/nohup" 5
kill -HUP $pid
n=$(wc -l < "$WORK/nohup/metrics.jsonl")
wait_steps "$WORK/nohup" $(( n + 20 ))
kill -0 $pid || fail "nohup'ed run stopped on SIGHUP"
! grep -q "SIGHUP" "$WORK/nohup.log" || fail "an ignored SIGHUP was acted on"
kill -TERM $pid; wait $pid || fail "SIGTERM after the ignored SIGHUP"

# an error found by every rank while the trainer is built (4 ranks: the aborting rank's
# SIGTERM reaches the others while they unwind the same error)
set +e; out=$(mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" train.batch_size=12 run.dir="$WORK/bad" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "not divisible" <<< "$out" || fail "the configuration error was not reported: $out"
! grep -q "checkpointing" <<< "$out" || fail "an aborting job announced a checkpoint: $out"
echo "SIGINT and SIGHUP checkpoint and exit 0; nohup keeps SIGHUP ignored; an aborted job announces no checkpoint"
