#!/usr/bin/env bash
# `bench step --dry-run`: one process, no MPI, nothing allocated. Llama 3 8B's shapes give
# Meta's parameter count (8,030,261,248), every valid tp of a 64-rank world is listed with the
# configured one marked, tp 8's per-rank parameters are 1/8 of the model (plus vocab padding)
# and fit an 80 GB GPU; a tp the shapes do not split over is refused naming the key.
source "$(dirname "$0")/lib.sh"
cd "$MT_SOURCE_DIR"
out=$("$MESHTRAIN" bench step examples/llama3-8b.yaml --dry-run --world 64)
echo "$out"
grep -q "8030261248 parameters" <<< "$out" || fail "Llama 3 8B parameter count"
grep -q "dp 8 x tp 8 .*<- configured" <<< "$out" || fail "configured layout not marked"
for l in "dp 64 x tp 1" "dp 32 x tp 2" "dp 16 x tp 4" "dp 4 x tp 16"; do
  grep -q "$l" <<< "$out" || fail "missing layout $l"
done
python3 - "$out" <<'PY'
import sys
rows = {l.split()[1] + "x" + l.split()[4]: [float(x) for x in l.split()[5:11]]
        for l in sys.argv[1].splitlines() if l.strip().startswith("dp ")}
p8 = rows["8x8"][0] * 2**30 / 4        # fp32 params per rank at tp 8
want = (8030261248 + (128512 - 128256) * 4096 * 2) / 8
assert abs(p8 - want) / want < 1e-3, (p8, want)
assert rows["8x8"][-1] < 80 / 1.073741824, rows["8x8"]   # GiB, an 80 GB H100
assert rows["64x1"][-1] > rows["8x8"][-1]
print("tp 8: params per rank", p8, "total", rows["8x8"][-1], "GiB")
PY
set +e
bad=$("$MESHTRAIN" bench step examples/llama3-8b.yaml parallel.tp=3 --dry-run 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "tp 3 accepted"
echo "$bad" | grep -q "parallel.tp" || fail "tp error does not name parallel.tp: $bad"
echo PASS
