#!/usr/bin/env bash
# A rank whose MPI_Abort never returns (a launcher that cannot be reached: its daemon dead or
# its host cut off) still exits: abort_job()'s watchdog ends it 10 s after the call, with a
# message, so no rank outlives a failed job. MPI_Abort is replaced by one that blocks forever
# (LD_PRELOAD of a 3-line library), one rank of -np 2 is stopped, the other times out
# (parallel.timeout_s=1), aborts, and must exit by itself; mpirun then sees a rank exit non-zero
# and ends the stopped one.
source "$(dirname "$0")/lib.sh"
command -v cc > /dev/null || { echo "SKIP: needs a C compiler (cc) for the MPI_Abort stand-in"; exit 77; }
cat > "$WORK/hang_abort.c" <<'EOF'
#include <stdio.h>
#include <unistd.h>
int MPI_Abort(void* comm, int code) {
  (void)comm, (void)code;
  fputs("hang_abort: MPI_Abort blocks\n", stderr);
  for (;;) pause();
}
EOF
cc -shared -fPIC -o "$WORK/hang_abort.so" "$WORK/hang_abort.c" || fail "cannot build the MPI_Abort stand-in"

timeout -k 5 90 "$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np 2 \
  -x LD_PRELOAD="$WORK/hang_abort.so" "$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" train.steps=100000 \
  train.eval_every=0 train.log_every=1000 train.threads=1 parallel.timeout_s=1 run.dir="$WORK/r" > "$WORK/log" 2>&1 &
mpid=$!
wait_steps "$WORK/r" 3
kill -STOP "$(rank_pids "$WORK/r" | sed -n 2p)"
gone_within 40 "$WORK/r" $mpid
rc=0; wait $mpid || rc=$?
[ $rc != 124 ] && [ $rc != 137 ] || fail "mpirun hung until the outer timeout"
grep -q "hang_abort: MPI_Abort blocks" "$WORK/log" ||
  { tail -20 "$WORK/log"; fail "the blocking MPI_Abort was not called"; }
grep -q "meshtrain: MPI_Abort did not end this rank within 10 s: exiting" "$WORK/log" ||
  { tail -20 "$WORK/log"; fail "no watchdog exit"; }
echo "PASS"
