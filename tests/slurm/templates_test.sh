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
# The cluster's start and stop: tests/slurm/cluster.sh.
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/cluster.sh"
trap 'sl_stop; rc=$?; rm -rf "$WORK"; exit $rc' EXIT  # replaces lib.sh's trap
sl_require
T0=$(date +%s)
sl_munge
SL_NODES=localhost sl_conf "NodeName=localhost CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=2000"
sl_slurmctld
sl_slurmd localhost
sl_wait_idle 1
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
