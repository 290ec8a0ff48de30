#!/usr/bin/env bash
# Preemption under mpirun -np 2: SIGTERM to the ranks (as Slurm sends it) mid-run -> every
# rank finishes its step, a checkpoint is written, the job exits 0; resume=auto then ends
# bit-identical to the uninterrupted run. A second signal exits promptly, and the run still
# resumes from its last complete checkpoint.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=400 train.eval_every=0 train.log_every=50 model.n_embd=64 model.seq_len=64
        train.batch_size=16 train.micro_batch=8 train.threads=1 parallel.dp=2)
wait_steps() {  # wait_steps DIR N: until metrics.jsonl has N lines
  for _ in $(seq 1 500); do
    [ -f "$1/metrics.jsonl" ] && [ "$(wc -l < "$1/metrics.jsonl")" -ge "$2" ] && return 0; sleep 0.02
  done; fail "run in $1 made no progress"
}
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/full" >/dev/null

"$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/pre" > "$WORK/pre.log" 2>&1 & mpid=$!  # mpirun itself, not a shell function
wait_steps "$WORK/pre" 20
pkill -TERM -P $mpid -f meshtrain
set +e; wait $mpid; rc=$?; set -e
[ $rc -eq 0 ] || { cat "$WORK/pre.log"; fail "preempted job exited $rc, not 0"; }
[ ! -e "$WORK/pre/summary.json" ] || [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["steps"])' "$WORK/pre/summary.json")" != 400 ] \
  || fail "the run finished before the signal; the test proves nothing"
ls "$WORK/pre/checkpoints" | grep -q "^step_" || fail "no checkpoint after preemption"
grep -q "preempted after step" "$WORK/pre.log" || fail "no preemption message"
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/pre" resume=auto >/dev/null
diff <(step_losses "$WORK/full") <(step_losses "$WORK/pre") || fail "resumed run differs from the uninterrupted one"

# a second signal: prompt exit, nothing corrupted
"$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" checkpoint.every=5 run.dir="$WORK/two" > "$WORK/two.log" 2>&1 & mpid=$!
wait_steps "$WORK/two" 30
pkill -TERM -P $mpid -f meshtrain; pkill -TERM -P $mpid -f meshtrain
set +e; wait $mpid; set -e
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" checkpoint.every=5 run.dir="$WORK/two" resume=auto >/dev/null
diff <(step_losses "$WORK/full") <(step_losses "$WORK/two") || fail "run resumed after a double signal differs"
pgrep -f "$WORK" >/dev/null && fail "processes left behind" || true
