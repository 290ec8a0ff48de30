#!/usr/bin/env bash
# Hierarchical all-reduce across 2 simulated hosts x 2 ranks (correctness, not speed):
#  - `bench allreduce --allreduce both` at odd element counts (3 .. 352947, x7): the hierarchical
#    table says "hierarchical: 2 x 2" and every row of both tables passes the closed-form check;
#  - training dp 4 with parallel.allreduce = flat, hierarchical and auto: auto picks
#    hierarchical across hosts (the log line), the losses of hierarchical equal flat's within
#    1e-5 relative (another summation order: not bit-identical), auto's equal hierarchical's
#    bit for bit, and every rank ends with identical parameters.
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/simhosts.sh"
mh_require
MH_SLOTS=2 mh_up 2

mh_mpirun -np 4 "$MESHTRAIN" bench allreduce --allreduce both --min-bytes 12 --max-bytes 1500000 --factor 7 \
  --iters 2 --rounds 1 --warmup 0 --json "$WORK/bench.json" > "$WORK/bench.txt" 2>&1 ||
  { cat "$WORK/bench.txt"; fail "bench allreduce across 2 hosts"; }
cat "$WORK/bench.txt"
python3 - "$WORK/bench.json" <<'PY' || fail "bench allreduce: flat vs hierarchical"
import json, sys
j = json.load(open(sys.argv[1]))
t = {x["allreduce"]: x for x in j["tables"]}
assert t["hierarchical"]["note"].startswith("hierarchical: 2 x 2"), t["hierarchical"]["note"]
assert "2 host(s)" in t["flat"]["note"], t["flat"]["note"]
for mode, x in t.items():
    counts = [r["bytes"] // 4 for r in x["rows"]]
    assert len(counts) == 7 and all(c % 2 for c in counts), counts
    bad = [r["bytes"] for r in x["rows"] if not r["ok"]]
    assert not bad, f"{mode}: wrong results at {bad} bytes"
print("bench: both tables correct at", counts, "elements")
PY

CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=12 train.eval_every=0 train.log_every=4 model.n_embd=64 model.seq_len=32
        train.batch_size=16 train.micro_batch=4 train.threads=1 parallel.bucket_mb=0.05 parallel.dp=4)
for mode in flat hierarchical auto; do
  mh_mpirun -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.allreduce=$mode run.dir="$WORK/$mode" \
    > "$WORK/$mode.log" 2>&1 || { cat "$WORK/$mode.log"; fail "train with parallel.allreduce=$mode across 2 hosts"; }
done
grep -q "dp all-reduce: flat: 4 rank(s) on 2 host(s)" "$WORK/flat.log" || { cat "$WORK/flat.log"; fail "flat: log line"; }
for mode in hierarchical auto; do
  grep -q "dp all-reduce: hierarchical: 2 x 2 ranks" "$WORK/$mode.log" || { cat "$WORK/$mode.log"; fail "$mode: not hierarchical"; }
done
compare_losses "$WORK/flat" "$WORK/hierarchical" 1e-5 || fail "hierarchical losses differ from flat's"
[ "$(losses "$WORK/auto")" = "$(losses "$WORK/hierarchical")" ] || fail "auto differs from hierarchical"
python3 - "$WORK" <<'PY' || fail "parameters across ranks"
import json, sys
for r in ("flat", "hierarchical"):
    s = json.load(open(f"{sys.argv[1]}/{r}/summary.json"))
    sums = s["param_checksums"]
    assert len(sums) == 4 and len(set(sums)) == 1, f"{r}: parameters differ across ranks: {sums}"
print("flat and hierarchical: 4 ranks hold identical parameters")
PY
echo "PASS"
