#!/usr/bin/env bash
# A host that fails ends the whole job, on every host, within parallel.timeout_s + 15 s, and
# the output names the host (Open MPI's message) and its ranks (meshtrain's banner), for both
# ways a host fails (2 simulated hosts x 2 ranks, dp 2 x tp 2):
#  - kill -9 of every process on host 2 (its ranks and its orted), parallel.timeout_s=8, which
#    is below the keepalive's 11 s: rank 0 warns at start-up;
#  - host 2's ranks frozen (SIGSTOP), parallel.timeout_s=8: host 1's ranks time out naming
#    the world ranks and hosts of the communicator they waited on;
#  - a silent link cut of host 2 (`ip link set down` on its veth: no FIN, no RST) with
#    parallel.timeout_s=20. Before the keepalive flags (docs/user-guide.md, "When a host
#    fails"; mh_mpirun passes them) the ranks timed out and called MPI_Abort, but mpirun then
#    waited for host 2's unreachable daemon: it hung, with an orphan orted on host 2, until
#    an outer timeout.
# "Gone" means: no mpirun (nor the `timeout` around it) and no process at all inside either
# host's namespace (ranks, orted). mpirun runs under `timeout -k` so a regression fails here
# instead of hanging the suite.
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/simhosts.sh"
mh_require
MH_SLOTS=2 mh_up 2
H1=$(mh_host 1) H2=$(mh_host 2)
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
BOUND=15
common=(train.steps=100000 train.eval_every=0 train.log_every=1000 model.n_embd=64 model.seq_len=64
        train.batch_size=16 train.micro_batch=4 train.threads=1 parallel.tp=2)

# what is left of job NAME: processes with its run dir on the command line (mpirun, timeout,
# ranks) and every process inside either host (ranks, orted), as "where:comm[pid]"
job_left() {
  local p h out=""
  for p in $(pgrep -f -- "run.dir=$WORK/$1" || true); do out+=" root:$(cat /proc/$p/comm 2>/dev/null)[$p]"; done
  for h in $H1 $H2; do
    for p in $(mh_host_pids "$h"); do out+=" $h:$(cat /proc/$p/comm 2>/dev/null)[$p]"; done
  done
  echo "$out"
}

# run_case NAME ACTION TS WARN: train across the 2 hosts with parallel.timeout_s=TS, ACTION
# host 2 after a few steps, then every process of the job must be gone within TS + BOUND
# seconds and the log must name host 2; WARN=1: the start-up warning about the keepalive
# settings must be there (TS below their 11 s + 1), 0: must not.
run_case() {
  local name=$1 action=$2 TS=$3 warn=$4 mpid left t0 el rc=0
  MH_TIMEOUT=$((TS + BOUND + 30)) mh_mpirun -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" \
    parallel.timeout_s="$TS" run.dir="$WORK/$name" > "$WORK/$name.log" 2>&1 & mpid=$!
  for _ in $(seq 1 600); do
    [ -f "$WORK/$name/metrics.jsonl" ] && [ "$(wc -l < "$WORK/$name/metrics.jsonl")" -ge 3 ] && break
    kill -0 $mpid 2>/dev/null || { tail -20 "$WORK/$name.log"; fail "$name: the job ended before the failure"; }
    sleep 0.1
  done
  [ "$(wc -l < "$WORK/$name/metrics.jsonl")" -ge 3 ] || fail "$name: no progress in 60 s"
  [ -n "$(mh_host_pids "$H2")" ] || fail "$name: nothing runs on $H2"
  t0=$(date +%s.%N)
  $action "$H2"
  local end=$((SECONDS + TS + BOUND))
  while :; do
    left=$(job_left "$name")
    { [ -z "$left" ] && ! kill -0 $mpid 2>/dev/null; } || [ $SECONDS -ge $end ] && break
    sleep 0.1
  done
  el=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
  [ -z "$left" ] ||
    { tail -30 "$WORK/$name.log"; fail "$name: processes left $el s after the failure (bound $TS + $BOUND s):$left"; }
  wait $mpid || rc=$?
  [ $rc != 0 ] || fail "$name: mpirun exited 0 after a host failed"
  [ $rc != 124 ] && [ $rc != 137 ] || fail "$name: mpirun hung until the outer timeout"
  # Open MPI names the host: "Remote daemon: [[j,0],2] on node H2" (the host's orted is lost)
  # or "process rank R with PID P on node H2 exited on signal 9" (a rank died first)
  grep -Eq "(Remote daemon: .* on node|rank [0-9]+ with PID [0-9]+ on node) $H2( |\$)" "$WORK/$name.log" ||
    { tail -30 "$WORK/$name.log"; fail "$name: no message names $H2"; }
  # the banner maps hosts to ranks: host 2 ran ranks 2-3
  grep -q "4 rank(s) on 2 host(s), 2 per host: $H1 \[0-1\], $H2 \[2-3\]" "$WORK/$name.log" ||
    fail "$name: the banner does not name the ranks of each host"
  # the harness passes the recommended keepalive flags (11 s): warned only when TS is below
  if [ "$warn" = 1 ]; then
    grep -q "warn: launch: 2 hosts under mpirun, and Open MPI's daemons notice an unreachable host 11 s after" \
      "$WORK/$name.log" || fail "$name: no warning that parallel.timeout_s=$TS is below the keepalive's 11 s"
  else
    ! grep -q "When a host fails" "$WORK/$name.log" || fail "$name: keepalive warning despite the flags"
  fi
  echo "$name: every process on both hosts and mpirun gone $el s after the failure (bound $TS + $BOUND s)," \
    "mpirun exit $rc"
}

# frozen: host 2's ranks stop progressing (SIGSTOP; its orted still answers). The ranks on
# host 1 time out after parallel.timeout_s, and their message names the members of the
# communicator they waited on with their hosts (world ranks 2, 3 on host 2); the job ends.
frozen_case() {
  local TS=8 mpid p left end rc=0
  MH_TIMEOUT=$((TS + BOUND + 30)) mh_mpirun -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" \
    parallel.timeout_s="$TS" run.dir="$WORK/frozen" > "$WORK/frozen.log" 2>&1 & mpid=$!
  for _ in $(seq 1 600); do
    [ -f "$WORK/frozen/metrics.jsonl" ] && [ "$(wc -l < "$WORK/frozen/metrics.jsonl")" -ge 3 ] && break
    kill -0 $mpid 2>/dev/null || { tail -20 "$WORK/frozen.log"; fail "frozen: the job ended before the failure"; }
    sleep 0.1
  done
  for p in $(mh_host_pids "$H2"); do [ "$(cat /proc/$p/comm 2>/dev/null)" = meshtrain ] && kill -STOP "$p"; done
  end=$((SECONDS + TS + BOUND))
  while :; do
    left=$(job_left frozen)
    { [ -z "$left" ] && ! kill -0 $mpid 2>/dev/null; } || [ $SECONDS -ge $end ] && break
    sleep 0.1
  done
  [ -z "$left" ] || { tail -30 "$WORK/frozen.log"; fail "frozen: processes left after $TS + $BOUND s:$left"; }
  wait $mpid || rc=$?
  [ $rc != 0 ] || fail "frozen: mpirun exited 0"
  grep -Eq "timed out after [0-9]+ s waiting in .*members: world ranks .*[23] \($H2\)" "$WORK/frozen.log" ||
    { tail -30 "$WORK/frozen.log"; fail "frozen: the timeout does not name the members on $H2"; }
  echo "frozen: the timeout named $(grep -Eo "members: world ranks( ?[0-9]+ \([^)]*\),?)+" "$WORK/frozen.log" | head -1)," \
    "all gone, mpirun exit $rc"
}
frozen_case

# a killed host is noticed at once, whatever parallel.timeout_s: 8 s, below the keepalive's 11 s
# (warned); a cut needs parallel.timeout_s above them (20 s, no warning)
run_case kill mh_kill_host 8 1
run_case cut mh_cut_link 20 0   # last: host 2 stays cut off until the teardown
echo "PASS"
