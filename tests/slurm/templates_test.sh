#!/usr/bin/env bash
# A real Slurm cluster of one node, started for this test and stopped after it:
#  - installs slurm-wlm and munge if missing (apt-get; needs root, like slurmd itself);
#  - starts a private munged (own key and socket), slurmctld and slurmd from a generated
#    minimal slurm.conf in the test's temporary directory, on free ports, so it neither
#    touches nor minds a Slurm or munge that already runs on the machine;
#  - submits the templates users copy, examples/slurm/train-srun.sbatch and
#    train-mpirun.sbatch, with 2 tasks on a tiny config, and checks each job: state and exit
#    code, metrics.jsonl and summary.json, and the launch each rank detected (launch.jsonl:
#    launcher srun / mpirun-in-sbatch, ranks 0 and 1, local ranks 0 and 1, Slurm's inherited
#    SLURM_PROCID=0 ignored under mpirun, no warnings);
#  - preemption as the templates' --signal=B:USR1@120 delivers it (scancel --signal=USR1
#    --batch): the script forwards it, the ranks checkpoint and exit 0, the script requeues
#    the job, which resumes and completes every step exactly once;
#  - a launcher that exits 0 without a finished or preempted run fails the job;
#  - `srun -n 2 meshtrain info --json` from the shell reports srun, ranks 0/1, local ranks 0/1;
#  - `srun --mpi=pmi2` (which Debian's Open MPI cannot use) prints meshtrain's hint;
#  - stops every daemon it started, by PID, also when a check fails (EXIT trap).
# Jobs are polled with scontrol every 0.2 s: `sbatch --wait` polls with a growing interval
# and added ~8 s to a 2 s job here.
source "$(dirname "$0")/../e2e/lib.sh"
trap - EXIT  # replaced by cleanup below, which also removes $WORK
if [ "$(id -u)" -ne 0 ]; then echo "SKIP: slurmd needs root"; exit 77; fi
# a clean slate even when the test itself runs inside a Slurm job or under mpirun
for v in $(compgen -e | grep -E '^(SLURM_|SBATCH_|SRUN_|SALLOC_|OMPI_COMM_WORLD_|PMIX_|PMI_)' || true); do unset "$v"; done
unset ENVIRONMENT MT_PROGRESS
T0=$(date +%s)

# ---- packages ----
need=()
command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}"; }
  apt_install > "$WORK/apt.log" 2>&1 ||
    { apt-get -o DPkg::Lock::Timeout=300 update -qq >> "$WORK/apt.log" 2>&1 && apt_install >> "$WORK/apt.log" 2>&1; } ||
    { tail -20 "$WORK/apt.log"; fail "could not install ${need[*]}"; }
fi
[ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so ] || ls /usr/lib/*/slurm*/mpi_pmix*.so >/dev/null 2>&1 ||
  fail "Slurm has no mpi_pmix plugin"

# ---- cleanup: jobs, then daemons by PID, then the directory ----
JOBS=()
DAEMON_PIDS=()
cleanup() {
  local rc=$?
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
  if [ $rc -ne 0 ]; then
    for f in "$WORK"/slurm/*.log "$WORK"/*.out; do [ -f "$f" ] && { echo "---- $f"; tail -30 "$f"; }; done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

# ---- munge: a private daemon with its own key and socket ----
chmod 755 "$WORK"
M="$WORK/munge"
mkdir -p "$M" && chown munge:munge "$M" && chmod 755 "$M"
runuser -u munge -- mungekey -c -k "$M/munge.key" || fail "mungekey"
runuser -u munge -- /usr/sbin/munged --socket="$M/munge.sock" --key-file="$M/munge.key" \
  --pid-file="$M/munged.pid" --log-file="$M/munged.log" --seed-file="$M/munged.seed" || fail "munged did not start"
for _ in $(seq 50); do [ -s "$M/munged.pid" ] && break; sleep 0.1; done
DAEMON_PIDS+=("$(cat "$M/munged.pid")")
munge -S "$M/munge.sock" -n | unmunge -S "$M/munge.sock" >/dev/null || fail "munge credential round trip"

# ---- slurm.conf: one node with 2 CPUs, on free ports ----
S="$WORK/slurm"
mkdir -p "$S/state" "$S/spool"
read -r CTLD_PORT SLURMD_PORT < <(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
cat > "$S/slurm.conf" <<CONF
ClusterName=mttest
# job ids of their own: PMIx names its namespaces slurm.pmix.<job>.<step> machine-wide, so two
# of these clusters running job 1 at once (parallel test runs) would collide
FirstJobId=$(( (RANDOM * 32768 + RANDOM) % 50000000 + 1000 ))
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# own munged; cred_expire also sets how long a requeued job waits (default 120 s)
AuthInfo=socket=$M/munge.sock,cred_expire=5
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
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
NodeName=localhost CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=2000
PartitionName=debug Nodes=localhost Default=YES MaxTime=10 State=UP
CONF
export SLURM_CONF="$S/slurm.conf"
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
for _ in $(seq 50); do [ -s "$S/slurmctld.pid" ] && break; sleep 0.1; done
DAEMON_PIDS=("$(cat "$S/slurmctld.pid")" "${DAEMON_PIDS[@]}")
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
for _ in $(seq 50); do [ -s "$S/slurmd.pid" ] && break; sleep 0.1; done
DAEMON_PIDS=("$(cat "$S/slurmd.pid")" "${DAEMON_PIDS[@]}")
for _ in $(seq 150); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.2; done
sinfo -h -o %T | grep -q idle || fail "the node did not come up: $(sinfo 2>&1)"
echo "cluster up in $(( $(date +%s) - T0 )) s (daemons ${DAEMON_PIDS[*]})"

# ---- jobs ----
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
TINY=(train.micro_batch=8 train.eval_every=0 train.log_every=10 model.n_embd=64 run.tensorboard=false)
# submit NAME TEMPLATE [override ...]: prints the job id; RUN_DIR is $WORK/NAME
submit() {
  local name=$1 tpl=$2; shift 2
  MESHTRAIN="$MESHTRAIN" CONFIG="$CFG" RUN_DIR="$WORK/$name" \
    sbatch --parsable --chdir="$WORK" -o "$WORK/$name.out" -J "$name" --nodes=1 --ntasks-per-node=2 \
    --cpus-per-task=1 --time=3 "$MT_SOURCE_DIR/examples/slurm/$tpl" "$@"
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
# check_run DIR STEPS: every step recorded exactly once, the summary complete
check_run() { python3 - "$@" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
steps = [json.loads(l)["step"] for l in open(d + "/metrics.jsonl") if '"loss"' in l]
assert steps == list(range(n)), f"steps recorded: {steps[:5]}...{steps[-5:]} ({len(steps)})"
s = json.load(open(d + "/summary.json"))
assert s["steps"] == n and s["world"] == 2 and s["final_loss"] > 0, s
PY
}
# check_launch DIR LAUNCHER JOB [RESTARTS]: what each rank detected, from launch.jsonl
check_launch() { python3 - "$@" <<'PY'
import json, socket, sys
d, launcher, job = sys.argv[1], sys.argv[2], sys.argv[3]
lines = [json.loads(l) for l in open(d + "/launch.jsonl")]
assert [l["slurm_restart_count"] for l in lines] == list(range(int(sys.argv[4]) + 1 if len(sys.argv) > 4 else 1)), lines
for l in lines:
    assert l["launcher"] == launcher and l["world"] == 2 and l["slurm_job_id"] == job, l
    assert l["hosts"] == [{"host": socket.gethostname(), "ranks": [0, 1]}], l["hosts"]
    for i, r in enumerate(l["ranks"]):
        assert (r["rank"], r["size"], r["local_rank"], r["local_size"]) == (i, 2, i, 2), r
        assert r["launcher"] == launcher and r["slurm_job_id"] == job and not r["warnings"] and not r["errors"], r
        v = r["vars"]
        if launcher == "srun":
            assert r["slurm_step_id"] != "" and v["SLURM_PROCID"] == str(i) and v["SLURM_LOCALID"] == str(i), r
            assert "OMPI_COMM_WORLD_RANK" not in v, v   # srun sets none of Open MPI's variables
        else:  # mpirun inside the batch script: Slurm's task variables are the batch shell's
            assert v["OMPI_COMM_WORLD_RANK"] == str(i) and v["OMPI_COMM_WORLD_LOCAL_RANK"] == str(i), v
            assert v["SLURM_PROCID"] == "0" and r["slurm_step_id"] == "", r
            assert any("ignored SLURM_PROCID=0" in n for n in r["notes"]), r
print(f"{launcher}: {len(lines)} start(s), ranks 0 and 1 with local ranks 0 and 1")
PY
}

t=$(date +%s)
J1=$(submit srun train-srun.sbatch "${TINY[@]}" train.steps=30 parallel.dp=2); JOBS+=("$J1")
st=$(wait_job "$J1"); [ "$st" = COMPLETED ] && [ "$(job_field "$J1" ExitCode)" = 0:0 ] || fail "srun job $J1: $st"
check_run "$WORK/srun" 30 || fail "srun job: metrics"
check_launch "$WORK/srun" srun "$J1" || fail "srun job: launch detection"
grep -q "launcher srun (Slurm job $J1, step 0" "$WORK/srun.out" || fail "srun job: banner"
echo "srun template: ok in $(( $(date +%s) - t )) s"

t=$(date +%s)
J2=$(submit mpirun train-mpirun.sbatch "${TINY[@]}" train.steps=30 parallel.tp=2); JOBS+=("$J2")
st=$(wait_job "$J2"); [ "$st" = COMPLETED ] && [ "$(job_field "$J2" ExitCode)" = 0:0 ] || fail "mpirun job $J2: $st"
check_run "$WORK/mpirun" 30 || fail "mpirun job: metrics"
check_launch "$WORK/mpirun" mpirun-in-sbatch "$J2" || fail "mpirun job: launch detection"
grep -q "launcher mpirun-in-sbatch (Slurm job $J2" "$WORK/mpirun.out" || fail "mpirun job: banner"
echo "mpirun-in-sbatch template: ok in $(( $(date +%s) - t )) s"

# preemption: SIGUSR1 to the batch shell, as --signal=B:USR1@120 sends it before the limit
t=$(date +%s)
N=60
J3=$(submit pre train-srun.sbatch "${TINY[@]}" train.steps=$N parallel.dp=2); JOBS+=("$J3")
for _ in $(seq 300); do
  [ -f "$WORK/pre/metrics.jsonl" ] && [ "$(wc -l < "$WORK/pre/metrics.jsonl")" -ge 10 ] && break; sleep 0.1
done
scancel --signal=USR1 --batch "$J3"
st=$(wait_job "$J3" 1); [ "$st" = COMPLETED ] || fail "preempted job $J3: $st"
grep -q "USR1 received" "$WORK/pre.out" && grep -q "requeueing" "$WORK/pre.out" || fail "preempted job: not requeued"
grep -q "resumed from .*step_" "$WORK/pre.out" || fail "requeued job did not resume from its checkpoint"
ls "$WORK/pre/checkpoints" | grep -q '^step_' || fail "no checkpoint"
check_run "$WORK/pre" $N || fail "preempted job: steps lost or repeated"
check_launch "$WORK/pre" srun "$J3" 1 || fail "preempted job: launch records"
echo "preemption + requeue: ok in $(( $(date +%s) - t )) s"

# a launcher that exits 0 without a finished or preempted run (a step that never launched)
# makes the job FAILED, not COMPLETED: /bin/true stands in for meshtrain
J4=$(MESHTRAIN=/bin/true CONFIG="$CFG" RUN_DIR="$WORK/none" sbatch --parsable --chdir="$WORK" -o "$WORK/none.out" \
     -J none --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=3 "$MT_SOURCE_DIR/examples/slurm/train-srun.sbatch")
JOBS+=("$J4")
st=$(wait_job "$J4"); [ "$st" = FAILED ] && grep -q "neither finished nor was preempted" "$WORK/none.out" \
  || fail "a run that never started left job $J4 $st"

# srun from the shell (its own allocation): every rank's view from `meshtrain info --json`
timeout 120 srun -n 2 -t 1 "$MESHTRAIN" info --json > "$WORK/srun-info.json" || fail "srun meshtrain info"
python3 - "$WORK/srun-info.json" <<'PY' || fail "srun info: wrong detection"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["launcher"] == "srun" and j["world"] == 2 and len(j["hosts"]) == 1, j
for i, r in enumerate(j["ranks"]):
    assert (r["rank"], r["local_rank"], r["local_size"]) == (i, i, 2) and r["launcher"] == "srun", r
    assert r["vars"]["SLURM_PROCID"] == str(i) and r["slurm_step_id"] != "" and not r["warnings"], r
PY

# srun --mpi=pmi2: Debian's Open MPI fails in MPI_Init; meshtrain says what to use first
set +e; out=$(timeout 60 srun --mpi=pmi2 -n 2 -t 1 "$MESHTRAIN" info 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "use \`srun --mpi=pmix\`" <<< "$out" || fail "no pmi2 hint (rc $rc): $out"
echo "slurm test: all ok in $(( $(date +%s) - T0 )) s"
