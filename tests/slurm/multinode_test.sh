#!/usr/bin/env bash
# A real Slurm cluster of two nodes on this one machine: each node is a simulated host of
# tests/multihost/simhosts.sh (a network namespace with its own IP on a private bridge), the
# same templates as templates_test.sh, now with --nodes=2:
#  - one slurmctld in the root namespace, listening on the bridge address
#    (SlurmctldHost=<this host>(bridge IP)); one slurmd per host inside the host's namespace,
#    with the host's name as its hostname (UTS namespace) and Slurm node name
#    (NodeName=<host> NodeAddr=<its IP>); munge shared (the namespaces share the filesystem);
#  - sbatch --nodes=2 --ntasks-per-node=2 of train-srun.sbatch and train-mpirun.sbatch, dp 2 x
#    tp 2 on a tiny config: the jobs complete, metrics and summary are written, and launch.jsonl
#    names both hosts with ranks 0,1 / 2,3, local ranks 0,1 on each, and the node ids (srun:
#    SLURM_NODEID 0 / 1; mpirun: Slurm's inherited variables ignored, which on the second node
#    describe mpirun's one-node daemon step: SLURM_NODEID=0, SLURM_NTASKS=1);
#  - `srun --mpi=pmix -N 2 -n 2 meshtrain info --json` from the shell (root namespace): 2 nodes;
#  - preemption (scancel --signal=USR1 --batch, as --signal=B:USR1@120 delivers it) of each
#    template across both nodes: the ranks on both hosts checkpoint and exit 0, the job is
#    requeued, resumes and completes every step exactly once;
#  - teardown: daemons by PID (tests/slurm/cluster.sh), then the hosts (the harness's trap).
# Test-side settings only, none a real cluster needs: OMPI_MCA_mpi_yield_when_idle=1 (the
# hosts share this machine's 2 cores), and TmpFS on a per-host directory (a real node has its
# own /tmp; the hosts here share one, where both slurmstepd of a step would make the same
# PMIx directory spmix_appdir_<uid>_<job>.<step> and the second fails "File exists").
# Open MPI needs no interface settings: every rank runs inside a host, which has only lo and
# the bridge link.
# Known flake, not meshtrain's: under heavy load with other jobs running, about 1 in 100
# `srun --mpi=pmix` launches across the two hosts loses a rank to a SIGSEGV inside MPI_Init.
# A core dump shows rank 1 still waiting in MPI_Init's first (modex) PMIx fence when rank 0
# of the same job, already past MPI_Init's final fence, sends its first message; Open MPI
# 4.1.4's btl/tcp hands it to ob1's handler, not registered yet (a call through NULL). So the
# fence let one node go early (Slurm 22.05 pmix_v4 plugin, PMIx 4.2.2). 0 in 120 launches one
# after another; hence RUN_SERIAL (tests/CMakeLists.txt).
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/../multihost/simhosts.sh"
source "$(dirname "$0")/cluster.sh"
trap 'rc=$?; rm -rf "$WORK"; exit $rc' EXIT  # replaces lib.sh's trap; then hosts, then Slurm
SL_MISSING=skip sl_require   # templates_test.sh fails when Slurm cannot be installed
mh_require
command -v nsenter >/dev/null || { echo "SKIP: needs nsenter (util-linux)"; exit 77; }
T0=$(date +%s)
MH_SLOTS=2 mh_up 2
sl_trap_first   # Slurm's daemons stop before the hosts go
H1=$(mh_host 1) H2=$(mh_host 2) NET=$(cat "$MH_DIR/net")
export OMPI_MCA_mpi_yield_when_idle=1

sl_munge
node() { echo "NodeName=$1 NodeAddr=$2 CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=2000"; }
SL_CTLD_HOST="$(hostname -s)($NET.1)" SL_NODES="$H1,$H2" sl_conf "$(node "$H1" "$NET.11")" "$(node "$H2" "$NET.12")"
echo "TmpFS=$S/tmp" >> "$SLURM_CONF"
mkdir -p "$S/tmp"
sl_slurmctld
# slurmd inside host H: its network namespace (nsenter, not `ip netns exec`, which remounts
# /sys without /sys/fs/cgroup and slurmd fails "Unable to initialize cgroup plugin"), its
# hostname, and its own TmpFS (a bind mount in a private mount namespace)
for h in "$H1" "$H2"; do
  mkdir -p "$S/spool-$h" "$S/tmp-$h"
  sl_slurmd "$h" nsenter --net="/run/netns/$h" unshare --uts --mount \
    sh -c 'hostname "$0" && mount --bind "$1" "$2" && shift 2 && exec "$@"' "$h" "$S/tmp-$h" "$S/tmp"
done
sl_wait_idle 2
echo "cluster of 2 hosts up in $(( $(date +%s) - T0 )) s (daemons ${DAEMON_PIDS[*]})"

# ---- jobs ----
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
TINY=(train.micro_batch=8 train.eval_every=0 train.log_every=10 model.n_embd=64 run.tensorboard=false
      parallel.dp=2 parallel.tp=2)
# submit NAME TEMPLATE [override ...]: prints the job id; RUN_DIR is $WORK/NAME
submit() {
  local name=$1 tpl=$2; shift 2
  MESHTRAIN="$MESHTRAIN" CONFIG="$CFG" RUN_DIR="$WORK/$name" \
    sbatch --parsable --chdir="$WORK" -o "$WORK/$name.out" -J "$name" --nodes=2 --ntasks-per-node=2 \
    --cpus-per-task=1 --time=3 "$MT_SOURCE_DIR/examples/slurm/$tpl" "${TINY[@]}" "$@"
}
# check_launch DIR LAUNCHER JOB RESTARTS: what each rank of each start detected (launch.jsonl)
check_launch() { python3 - "$@" "$H1" "$H2" <<'PY'
import json, sys
d, launcher, job, restarts, h1, h2 = sys.argv[1:7]
lines = [json.loads(l) for l in open(d + "/launch.jsonl")]
assert [l["slurm_restart_count"] for l in lines] == list(range(int(restarts) + 1)), lines
for l in lines:
    assert l["launcher"] == launcher and l["world"] == 4 and l["slurm_job_id"] == job, l
    assert l["hosts"] == [{"host": h1, "ranks": [0, 1]}, {"host": h2, "ranks": [2, 3]}], l["hosts"]
    for i, r in enumerate(l["ranks"]):
        node = i // 2
        assert (r["rank"], r["size"], r["host"], r["local_rank"], r["local_size"], r["num_nodes"]) == \
            (i, 4, [h1, h2][node], i % 2, 2, 2), r
        assert r["launcher"] == launcher and r["slurm_job_id"] == job and not r["warnings"] and not r["errors"], r
        v = r["vars"]
        assert v["SLURM_JOB_NUM_NODES"] == "2", v
        if launcher == "srun":
            assert (v["SLURM_PROCID"], v["SLURM_LOCALID"], v["SLURM_NODEID"]) == (str(i), str(i % 2), str(node)), v
            assert r["slurm_step_id"] != "" and "OMPI_COMM_WORLD_RANK" not in v, r
        else:  # mpirun: rank from Open MPI; Slurm's task variables are the batch shell's (node 0)
            # or, on the second node, those of mpirun's one-task daemon step: all ignored
            assert (v["OMPI_COMM_WORLD_RANK"], v["OMPI_COMM_WORLD_LOCAL_RANK"]) == (str(i), str(i % 2)), v
            assert (v["SLURM_PROCID"], v["SLURM_NODEID"]) == ("0", "0") and r["slurm_step_id"] == "", r
            assert any("ignored SLURM_PROCID=0" in n for n in r["notes"]), r
            if node == 1:  # its orted was started by Slurm (mpirun's plm slurm: srun), one task
                assert v["SLURM_NTASKS"] == "1" and any("SLURM_STEP_ID=0" in n for n in r["notes"]), r
print(f"{launcher}: {len(lines)} start(s), {h1} ranks 0,1 and {h2} ranks 2,3, local ranks 0,1 on each")
PY
}
banner_ok() { grep -q "launcher $2 (Slurm job $3.* 4 rank(s) on 2 host(s), 2 per host: $H1 \[0-1\], $H2 \[2-3\]" "$1"; }

for tpl in srun mpirun; do
  t=$(date +%s)
  launcher=$tpl; [ $tpl = mpirun ] && launcher=mpirun-in-sbatch
  J=$(submit $tpl train-$tpl.sbatch train.steps=30); JOBS+=("$J")
  st=$(wait_job "$J"); [ "$st" = COMPLETED ] && [ "$(job_field "$J" ExitCode)" = 0:0 ] || fail "$tpl job $J: $st"
  [ "$(job_field "$J" NumNodes)" = 2 ] || fail "$tpl job $J ran on $(job_field "$J" NodeList)"
  check_run "$WORK/$tpl" 30 4 || fail "$tpl job: metrics"
  check_launch "$WORK/$tpl" $launcher "$J" 0 || fail "$tpl job: launch detection"
  banner_ok "$WORK/$tpl.out" $launcher "$J" || fail "$tpl job: banner"
  echo "$tpl template on 2 nodes: ok in $(( $(date +%s) - t )) s"
done

# srun from the shell (root namespace, its own allocation): a rank on each host
t=$(date +%s)
timeout 120 srun --mpi=pmix -N 2 -n 2 -t 1 "$MESHTRAIN" info --json > "$WORK/srun-info.json" || fail "srun meshtrain info"
python3 - "$WORK/srun-info.json" "$H1" "$H2" <<'PY' || fail "srun info across 2 nodes: wrong detection"
import json, sys
j, h1, h2 = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
assert j["launcher"] == "srun" and j["world"] == 2 and j["num_nodes"] == 2, j
assert [(h["host"], h["ranks"]) for h in j["hosts"]] == [(h1, [0]), (h2, [1])], j["hosts"]
for i, r in enumerate(j["ranks"]):
    assert (r["rank"], r["host"], r["local_rank"], r["local_size"]) == (i, [h1, h2][i], 0, 1), r
    assert (r["vars"]["SLURM_PROCID"], r["vars"]["SLURM_NODEID"]) == (str(i), str(i)) and not r["warnings"], r
print("srun info: ranks", [(r["rank"], r["host"]) for r in j["ranks"]])
PY
echo "srun --mpi=pmix -N 2 -n 2: ok in $(( $(date +%s) - t )) s"

# preemption across both nodes: SIGUSR1 to the batch shell on the first node, forwarded by
# srun / mpirun to the ranks on both; the requeued job starts again on both nodes
N=60
for tpl in srun mpirun; do
  t=$(date +%s)
  launcher=$tpl; [ $tpl = mpirun ] && launcher=mpirun-in-sbatch
  J=$(submit pre-$tpl train-$tpl.sbatch train.steps=$N); JOBS+=("$J")
  for _ in $(seq 300); do
    [ -f "$WORK/pre-$tpl/metrics.jsonl" ] && [ "$(wc -l < "$WORK/pre-$tpl/metrics.jsonl")" -ge 10 ] && break; sleep 0.1
  done
  scancel --signal=USR1 --batch "$J"
  st=$(wait_job "$J" 1); [ "$st" = COMPLETED ] || fail "preempted $tpl job $J: $st"
  out="$WORK/pre-$tpl.out"
  grep -q "USR1 received" "$out" && grep -q "requeueing" "$out" || fail "preempted $tpl job: not requeued"
  grep -q "resumed from .*step_" "$out" || fail "requeued $tpl job did not resume from its checkpoint"
  compgen -G "$WORK/pre-$tpl/checkpoints/step_*" > /dev/null || fail "$tpl: no checkpoint"
  check_run "$WORK/pre-$tpl" $N 4 || fail "preempted $tpl job: steps lost or repeated"
  check_launch "$WORK/pre-$tpl" $launcher "$J" 1 || fail "preempted $tpl job: launch records"
  echo "$tpl template: preemption + requeue across 2 nodes: ok in $(( $(date +%s) - t )) s"
done
echo "slurm multinode test: all ok in $(( $(date +%s) - T0 )) s"
