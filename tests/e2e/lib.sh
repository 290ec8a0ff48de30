# Shared helpers for the end-to-end tests (sourced, not a test itself: no _test suffix).
set -euo pipefail
: "${MESHTRAIN:?set by ctest}" "${MT_SOURCE_DIR:?set by ctest}"
MPIEXEC=${MPIEXEC:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
WORK=$(mktemp -d /tmp/mt-e2e.XXXXXX)
# on exit (a failed check included) no process of this test outlives it: every run.dir is under $WORK
trap 'pkill -f -- "$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mpi() { "$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# losses RUN_DIR -> one loss per line, exactly as written (JSON doubles round-trip)
losses() { python3 -c 'import json,sys
for l in open(sys.argv[1]+"/metrics.jsonl"):
    r=json.loads(l)
    if "loss" in r: print(repr(r["loss"]))' "$1"; }
# compare_losses A B RTOL: per-step losses of two runs agree within RTOL relative
compare_losses() { python3 - "$1" "$2" "$3" <<'PY'
import json, sys
def load(d): return [json.loads(l)["loss"] for l in open(d + "/metrics.jsonl") if '"loss"' in l]
a, b, rtol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
assert len(a) == len(b) and len(a) > 0, f"step counts differ: {len(a)} vs {len(b)}"
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"compared {len(a)} steps: max relative difference {worst:.3e} (tolerance {rtol:g})")
sys.exit(0 if worst <= rtol else 1)
PY
}
# step_losses RUN_DIR [FIRST]: "step loss" per step record with step >= FIRST, exactly as written
step_losses() { python3 -c 'import json,sys
for l in open(sys.argv[1]+"/metrics.jsonl"):
    r=json.loads(l)
    if "loss" in r and r["step"] >= int(sys.argv[2]): print(r["step"], repr(r["loss"]))' "$1" "${2:-0}"; }
# the meshtrain processes of the run in DIR (rank_pids DIR); until DIR/metrics.jsonl has N lines
# (wait_steps DIR N); until no process of DIR and the launcher are left (gone_within S DIR PID)
rank_pids() { pgrep -f -- "run.dir=$1" | while read -r p; do [ "$(cat /proc/$p/comm 2>/dev/null)" = meshtrain ] && echo $p; done; }
wait_steps() {
  for _ in $(seq 1 500); do
    [ -f "$1/metrics.jsonl" ] && [ "$(wc -l < "$1/metrics.jsonl")" -ge "$2" ] && return 0; sleep 0.02
  done; fail "run in $1 made no progress"
}
gone_within() {  # gone_within SECONDS DIR MPIRUN_PID
  for _ in $(seq 1 $(( $1 * 10 ))); do
    if [ -z "$(rank_pids "$2")" ] && ! kill -0 "$3" 2>/dev/null; then return 0; fi; sleep 0.1
  done; fail "processes left after $1 s: $(rank_pids "$2")"
}
