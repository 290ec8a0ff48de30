#!/usr/bin/env bash
# Launch detection without Slurm: `meshtrain info --json` alone and under mpirun -np 2 and 4
# (launcher, ranks, local ranks, hosts as each rank reported them), mpirun with the variables
# an sbatch script leaves behind (every rank inherits SLURM_PROCID=0: ignored, no warning),
# and stale launcher variables in a plain run: info and train refuse (exit 1, nothing
# written) instead of training alone. The real srun and mpirun-in-sbatch launches are in
# slurm_test.sh.
source "$(dirname "$0")/lib.sh"
# start clean even when the test itself runs inside a Slurm job or under mpirun
for v in $(compgen -e | grep -E '^(SLURM_|OMPI_COMM_WORLD_|PMIX_|PMI_)' || true); do unset "$v"; done
unset ENVIRONMENT MT_PROGRESS
# check_info FILE LAUNCHER WORLD: the JSON of `info --json` matches what the launch must be
check_info() { python3 - "$@" <<'PY'
import json, socket, sys
j = json.load(open(sys.argv[1])); launcher, world = sys.argv[2], int(sys.argv[3])
assert j["launcher"] == launcher and j["world"] == world, (j["launcher"], j["world"])
ranks = j["ranks"]
assert [r["rank"] for r in ranks] == list(range(world)), ranks
for r in ranks:
    assert r["launcher"] == launcher and r["size"] == world, r
    assert (r["local_rank"], r["local_size"]) == (r["rank"], world), r   # one node: local = global
    assert r["host"] == socket.gethostname(), r
    assert not r["warnings"] and not r["errors"], r
assert j["hosts"] == [{"host": socket.gethostname(), "ranks": list(range(world))}], j["hosts"]
assert j["num_nodes"] == 1 and j["threads_per_rank"] >= 1
b = j["build"]
assert b["mpi"].startswith("Open MPI") and b["hdf5"].count(".") == 2, b
print(f"info: {launcher} x {world} ok")
PY
}
env -u OMPI_COMM_WORLD_RANK "$MESHTRAIN" info --json > "$WORK/plain.json"
check_info "$WORK/plain.json" none 1
mpi -np 2 "$MESHTRAIN" info --json > "$WORK/np2.json"
check_info "$WORK/np2.json" mpirun 2
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["ranks"][1]["vars"]; assert r["OMPI_COMM_WORLD_LOCAL_RANK"]=="1", r' "$WORK/np2.json"
mpi -np 4 "$MESHTRAIN" info --json > "$WORK/np4.json"
check_info "$WORK/np4.json" mpirun 4

# threads follow the CPU affinity mask, not the node's CPU count (a job sharing a node)
taskset -c 0 "$MESHTRAIN" info --json > "$WORK/one-cpu.json"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["threads_per_rank"] == 1 and j["ranks"][0]["cpus"] == 1, j' "$WORK/one-cpu.json" \
  || fail "threads per rank ignore the affinity mask"
# bench sgemm measures with the threads a training rank would run
taskset -c 0 "$MESHTRAIN" bench sgemm > "$WORK/sgemm.txt"
grep -q "^sgemm (OpenBLAS core .*, 1 thread(s))" "$WORK/sgemm.txt" || { cat "$WORK/sgemm.txt"; fail "bench sgemm ignores the affinity mask"; }

# the variables mpirun inside an sbatch script passes on: SLURM_PROCID=0 on every rank
SLURM_JOB_ID=77 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NTASKS=2 ENVIRONMENT=BATCH \
  mpi -np 2 "$MESHTRAIN" info --json > "$WORK/sb.json"
check_info "$WORK/sb.json" mpirun-in-sbatch 2
python3 - "$WORK/sb.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["ranks"]:
    assert r["slurm_job_id"] == "77" and r["vars"]["SLURM_PROCID"] == "0", r
    assert any("ignored SLURM_PROCID=0" in n for n in r["notes"]), r
PY
# the human form says the same
SLURM_JOB_ID=77 SLURM_PROCID=0 ENVIRONMENT=BATCH mpi -np 2 "$MESHTRAIN" info > "$WORK/sb.txt"
grep -q "^launcher  mpirun-in-sbatch (Slurm job 77" "$WORK/sb.txt" || { cat "$WORK/sb.txt"; fail "info text"; }

# the banner of a real run names the launcher, the hosts and the mesh
mpi -np 2 "$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" train.steps=2 train.threads=1 parallel.tp=2 \
  run.dir="$WORK/run" > "$WORK/run.log" 2>&1
grep -q "launcher mpirun | 2 rank(s) on 1 host(s), 2 per host: $(hostname) \[0-1\]" "$WORK/run.log" || { cat "$WORK/run.log"; fail "banner hosts"; }
grep -q "mesh dp 1 x tp 2 | device cpu" "$WORK/run.log" || fail "banner mesh"
grep -q "build: cuda=0 .*Open MPI .*HDF5 " "$WORK/run.log" || fail "banner versions"
python3 - "$WORK/run/launch.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 1 and lines[0]["launcher"] == "mpirun" and lines[0]["world"] == 2, lines
assert [r["local_rank"] for r in lines[0]["ranks"]] == [0, 1], lines
PY
# mpirun gives ranks a pseudo-terminal even when its output goes to a file (slurm-*.out):
# plain lines there, no progress line redrawn with escape codes, unless MT_PROGRESS=1 asks
! grep -q $'\033' "$WORK/run.log" || fail "escape codes in a log file written through mpirun"
MT_PROGRESS=1 mpi -np 2 "$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" train.steps=2 train.threads=1 \
  parallel.tp=2 run.dir="$WORK/run2" > "$WORK/run2.log" 2>&1
grep -q $'\033\\[K' "$WORK/run2.log" || fail "MT_PROGRESS=1 did not force the progress line"

# stale launcher variables in a plain run: MPI says a world of 1, the variable says 2
set +e
OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=1 "$MESHTRAIN" info --json > "$WORK/stale.json"; rc=$?
out=$(OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=1 "$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" \
      train.steps=2 run.dir="$WORK/stale" 2>&1); rc2=$?
set -e
[ $rc -eq 1 ] || fail "info with stale variables exited $rc"
python3 - "$WORK/stale.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["ranks"][0]
assert r["size"] == 1 and r["rank"] == 0, r            # MPI wins
assert any("says 2 ranks but MPI_Init gave this process a world of 1" in e for e in r["errors"]), r
assert any("OMPI_COMM_WORLD_RANK=1 contradicts MPI's rank 0" in w for w in r["warnings"]), r
PY
[ $rc2 -eq 1 ] && grep -q "world of 1" <<< "$out" || fail "train with stale variables: rc $rc2: $out"
[ ! -e "$WORK/stale" ] || fail "train with stale variables wrote its run directory"
echo "launch env: all modes ok"
