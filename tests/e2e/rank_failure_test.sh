#!/usr/bin/env bash
# Rank failure and hangs never leave a job hanging:
#  - kill -9 of one rank of -np 4: every process is gone within the timeout, and the job's
#    output names the dead rank;
#  - a rank that stops progressing (SIGSTOP) under -np 4: its peers time out in their
#    collective after parallel.timeout_s, name the rank, op, sequence number and bytes, and
#    abort the job; every process, the stopped one included, is gone.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=100000 train.eval_every=0 train.log_every=100 model.n_embd=64 model.seq_len=64
        train.batch_size=16 train.micro_batch=4 train.threads=1 parallel.timeout_s=4)

# 1) SIGKILL one rank
"$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" \
  run.dir="$WORK/k" > "$WORK/k.log" 2>&1 & mpid=$!
wait_steps "$WORK/k" 5
victim=$(rank_pids "$WORK/k" | sed -n 3p)
kill -9 "$victim"
gone_within 15 "$WORK/k" $mpid
wait $mpid 2>/dev/null && fail "job with a killed rank exited 0" || true
grep -Eq "rank [0-9]+ .*(exited on signal 9|Killed)" "$WORK/k.log" || { cat "$WORK/k.log" | tail -20; fail "no message names the killed rank"; }

# 2) SIGSTOP one rank: the others time out and abort the job
"$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" \
  run.dir="$WORK/s" > "$WORK/s.log" 2>&1 & mpid=$!
wait_steps "$WORK/s" 5
victim=$(rank_pids "$WORK/s" | sed -n 2p)
kill -STOP "$victim"
gone_within 30 "$WORK/s" $mpid
wait $mpid 2>/dev/null && fail "job with a hung rank exited 0" || true
# ... and the members of the communicator it waited on, as world ranks with their hosts
H=$(hostname)
grep -Eq "timed out after [0-9]+ s waiting in [a-z_]+ #[0-9]+ \([0-9]+ bytes\) on communicator '[a-z]+' \(rank [0-9] of 4; members: world ranks 0 \($H\), 1 \($H\), 2 \($H\), 3 \($H\)\)" "$WORK/s.log" \
  || { tail -20 "$WORK/s.log"; fail "no timeout message naming op, sequence number, bytes and the members' hosts"; }
grep -q "aborting the job" "$WORK/s.log" || fail "no abort message"
