# shellcheck shell=bash
# What: a private Slurm cluster for the slurm tests, started by the test and stopped after it
# (sourced after tests/e2e/lib.sh; not a test itself: no _test suffix).
#  - sl_require: root, slurm-wlm and munge (installed with apt-get if missing), Slurm's PMIx
#    plugin; skips (exit 77) without root, fails when they cannot be installed (skips with
#    SL_MISSING=skip). Clears Slurm/MPI variables inherited from an outer job.
#  - sl_munge: a private munged (own key and socket under $WORK), so the test neither touches
#    nor minds a Slurm or munge that already runs on the machine.
#  - sl_conf NODE_LINES...: $S/slurm.conf on free ports (SL_CTLD_HOST: SlurmctldHost, default
#    localhost; each argument one NodeName line; SL_NODES: the partition's nodes).
#  - sl_slurmctld, sl_slurmd [PREFIX...] (PREFIX runs slurmd elsewhere, e.g. in a namespace),
#    sl_wait_idle N: until N nodes are idle.
#  - sl_stop: cancels the test's jobs (JOBS), shuts the daemons down and kills any left by
#    PID (DAEMON_PIDS); prints the logs when the test failed. Call it from the EXIT trap.
#  - job_field ID FIELD, wait_job ID [RESTARTS], check_run DIR STEPS [WORLD].
# Jobs are polled with scontrol every 0.2 s: `sbatch --wait` polls with a growing interval
# and added ~8 s to a 2 s job here.

JOBS=()
DAEMON_PIDS=()
S="$WORK/slurm"
M="$WORK/munge"

sl_require() {
  if [ "$(id -u)" -ne 0 ]; then echo "SKIP: slurmd needs root"; exit 77; fi
  # a clean slate even when the test itself runs inside a Slurm job or under mpirun
  local v
  for v in $(compgen -e | grep -E '^(SLURM_|SBATCH_|SRUN_|SALLOC_|OMPI_COMM_WORLD_|PMIX_|PMI_)' || true); do unset "$v"; done
  unset ENVIRONMENT MT_PROGRESS
  local need=()
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || need+=(slurm-wlm)
  command -v munged >/dev/null || need+=(munge)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}"; }
    apt_install > "$WORK/apt.log" 2>&1 ||
      { apt-get -o DPkg::Lock::Timeout=300 update -qq >> "$WORK/apt.log" 2>&1 && apt_install >> "$WORK/apt.log" 2>&1; } ||
      { tail -20 "$WORK/apt.log"
        [ "${SL_MISSING:-fail}" = skip ] && { echo "SKIP: could not install ${need[*]}"; exit 77; }
        fail "could not install ${need[*]}"; }
  fi
  [ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so ] || ls /usr/lib/*/slurm*/mpi_pmix*.so >/dev/null 2>&1 ||
    fail "Slurm has no mpi_pmix plugin"
}

# jobs, then daemons (scontrol shutdown, then by PID); the logs when the test failed
sl_stop() {
  local rc=$? pid
  set +e
  if [ -n "${SLURM_CONF:-}" ] && [ ${#DAEMON_PIDS[@]} -gt 0 ]; then
    [ ${#JOBS[@]} -gt 0 ] && scancel "${JOBS[@]}" 2>/dev/null
    for _ in $(seq 50); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
    scontrol shutdown >/dev/null 2>&1
  fi
  for pid in "${DAEMON_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { kill -TERM "$pid"; sleep 1; kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"; }
  done
  DAEMON_PIDS=()
  if [ $rc -ne 0 ]; then
    for f in "$S"/*.log "$WORK"/*.out; do [ -f "$f" ] && { echo "---- $f"; tail -30 "$f"; }; done
  fi
  return $rc
}

sl_munge() {
  chmod 755 "$WORK"
  mkdir -p "$M" && chown munge:munge "$M" && chmod 755 "$M"
  runuser -u munge -- mungekey -c -k "$M/munge.key" || fail "mungekey"
  runuser -u munge -- /usr/sbin/munged --socket="$M/munge.sock" --key-file="$M/munge.key" \
    --pid-file="$M/munged.pid" --log-file="$M/munged.log" --seed-file="$M/munged.seed" || fail "munged did not start"
  for _ in $(seq 50); do [ -s "$M/munged.pid" ] && break; sleep 0.1; done
  DAEMON_PIDS+=("$(cat "$M/munged.pid")")
  munge -S "$M/munge.sock" -n | unmunge -S "$M/munge.sock" >/dev/null || fail "munge credential round trip"
}

# sl_conf "NodeName=..." ...: slurm.conf with one NodeName line per argument
sl_conf() {
  mkdir -p "$S/state"
  read -r CTLD_PORT SLURMD_PORT < <(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("", 0))
print(*[x.getsockname()[1] for x in s])')
  local line
  {
    cat <<CONF
ClusterName=mttest
# job ids of their own: PMIx names its namespaces slurm.pmix.<job>.<step> machine-wide, so two
# of these clusters running job 1 at once (parallel test runs) would collide
FirstJobId=$(( (RANDOM * 32768 + RANDOM) % 50000000 + 1000 ))
SlurmctldHost=${SL_CTLD_HOST:-localhost}
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# own munged; cred_expire also sets how long a requeued job waits (default 120 s)
AuthInfo=socket=$M/munge.sock,cred_expire=5
StateSaveLocation=$S/state
# %n: the node's name, so that several slurmd on this machine keep apart
SlurmdSpoolDir=$S/spool-%n
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd-%n.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
MinJobAge=600
# a requeued job becomes eligible after cred_expire, then waits for the main scheduler's
# periodic pass (60 s by default): run it every second
SchedulerParameters=sched_interval=1
CONF
    for line in "$@"; do echo "$line"; done
    echo "PartitionName=debug Nodes=${SL_NODES:-localhost} Default=YES MaxTime=10 State=UP"
  } > "$S/slurm.conf"
  export SLURM_CONF="$S/slurm.conf"
}

sl_slurmctld() {
  slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
  for _ in $(seq 50); do [ -s "$S/slurmctld.pid" ] && break; sleep 0.1; done
  DAEMON_PIDS=("$(cat "$S/slurmctld.pid")" "${DAEMON_PIDS[@]}")
}

# sl_slurmd NODE [PREFIX...]: start slurmd for NODE (its pid file names it), run under PREFIX
sl_slurmd() {
  local node=$1; shift
  "$@" slurmd -f "$SLURM_CONF" || fail "slurmd for $node did not start"
  for _ in $(seq 50); do [ -s "$S/slurmd-$node.pid" ] && break; sleep 0.1; done
  [ -s "$S/slurmd-$node.pid" ] || fail "slurmd for $node wrote no pid file"
  DAEMON_PIDS=("$(cat "$S/slurmd-$node.pid")" "${DAEMON_PIDS[@]}")
}

sl_wait_idle() {
  local n=$1
  for _ in $(seq 150); do [ "$(sinfo -h -N -o %T 2>/dev/null | grep -c idle)" -ge "$n" ] && return; sleep 0.2; done
  fail "$n node(s) did not come up: $(sinfo -N 2>&1)"
}

job_field() { scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# wait_job ID [RESTARTS]: until the job has finished (after RESTARTS requeues); its state
wait_job() {
  local st
  for _ in $(seq 600); do
    st=$(job_field "$1" JobState)
    case "$st" in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)
        [ "$(job_field "$1" Restarts)" -ge "${2:-0}" ] && { echo "$st"; return; } ;;
    esac
    sleep 0.2
  done
  echo "STUCK($st)"
}
# check_run DIR STEPS [WORLD]: every step recorded exactly once, the summary complete
check_run() { python3 - "$1" "$2" "${3:-2}" <<'PY'
import json, sys
d, n, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steps = [json.loads(l)["step"] for l in open(d + "/metrics.jsonl") if '"loss"' in l]
assert steps == list(range(n)), f"steps recorded: {steps[:5]}...{steps[-5:]} ({len(steps)})"
s = json.load(open(d + "/summary.json"))
assert s["steps"] == n and s["world"] == world and s["final_loss"] > 0, s
PY
}

# sl_trap_first: run sl_stop before whatever the EXIT trap does now (e.g. the simulated
# hosts' teardown, which would otherwise kill the slurmd inside them first)
sl_trap_first() {
  local _sl_prev=""
  _sl_cap() { _sl_prev=${3:-}; }
  eval "_sl_cap $(trap -p EXIT)"
  # shellcheck disable=SC2064  # the previous trap's text, expanded now
  trap "sl_stop; $_sl_prev" EXIT
}
