#!/usr/bin/env bash
# meshtrain scale on a 2-point experiment (np 1, and np 2 as tp 2) writes results.csv,
# the plots and report.md, and the CSV's numbers are the runs' own figures.
source "$(dirname "$0")/lib.sh"
cat > "$WORK/exp.yaml" <<YAML
config: $MT_SOURCE_DIR/examples/tiny.yaml
overrides: [train.batch_size=8, train.micro_batch=2, model.n_embd=32, model.seq_len=16, train.threads=1]
steps: 3
warmup: 1
repetitions: 2
points:
  - {np: 1}
  - {np: 2, tp: 2}
YAML
"$MESHTRAIN" scale "$WORK/exp.yaml" --out "$WORK/out"
for f in results.csv report.md throughput.svg efficiency.svg breakdown.svg commands.txt; do
  [ -s "$WORK/out/$f" ] || fail "missing $f"
done
python3 - "$WORK/out" <<'PY'
import csv, json, sys, xml.dom.minidom
d = sys.argv[1]
rows = list(csv.DictReader(open(d + "/results.csv")))
assert [(r["np"], r["dp"], r["tp"]) for r in rows] == [("1", "1", "1"), ("2", "1", "2")], rows
for i, r in enumerate(rows):
    runs = [json.load(open(f"{d}/point{i}_rep{k}.json")) for k in range(2)]
    assert all(j["world"] == int(r["np"]) and j["tp"] == int(r["tp"]) for j in runs)
    tps = sum(j["tokens_per_s"] for j in runs) / 2
    assert abs(float(r["tokens_per_s"]) - tps) <= 0.1, (r, tps)
    ms = sum(j["ms_per_step"] for j in runs) / 2
    assert abs(float(r["ms_per_step"]) - ms) <= 1e-3, (r, ms)
assert float(rows[0]["efficiency"]) == 1.0
assert all(float(r["predicted_ms"]) > 0 for r in rows), rows
report = open(d + "/report.md").read()
assert "alpha = " in report and "| 1024 |" in report, "cost model section missing"
for svg in ("throughput", "efficiency", "breakdown"):
    xml.dom.minidom.parse(f"{d}/{svg}.svg")  # well-formed
assert "| 2 | 1 x 2 |" in open(d + "/report.md").read()
print("scale: CSV matches the runs;", rows)
PY
# a bad experiment is a clear error
printf 'config: x.yaml\npoints:\n  - {np: 2, dp: 2, tp: 2}\n' > "$WORK/bad.yaml"
set +e; out=$("$MESHTRAIN" scale "$WORK/bad.yaml" --out "$WORK/o2" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && echo "$out" | grep -q "np 2 != dp 2 x tp 2" || fail "bad experiment: $out"
