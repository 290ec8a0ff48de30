#!/usr/bin/env bash
# meshtrain scale on a 2-point experiment (np 1, and np 2 as tp 2, 2 repetitions each) writes
# results.csv, the plots and report.md; the CSV's numbers are the runs' own per-step metrics
# (each point's metrics.jsonl) averaged, recomputed here independently; the report shows
# measured vs predicted. A weak-scaling experiment grows the global batch with dp.
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
import csv, json, statistics, sys, xml.dom.minidom
d = sys.argv[1]
rows = list(csv.DictReader(open(d + "/results.csv")))
assert [(r["np"], r["dp"], r["tp"]) for r in rows] == [("1", "1", "1"), ("2", "1", "2")], rows
for i, r in enumerate(rows):
    # the runs' own per-step records: 3 timed steps each, in <out>/point<i>_rep<k>/metrics.jsonl
    reps = []
    for k in range(2):
        recs = [json.loads(l) for l in open(f"{d}/point{i}_rep{k}/metrics.jsonl")]
        assert [x["step"] for x in recs] == [1, 2, 3], recs            # after 1 warm-up step
        j = json.load(open(f"{d}/point{i}_rep{k}.json"))
        assert j["world"] == int(r["np"]) and j["tp"] == int(r["tp"]), j
        ms = statistics.mean(x["ms"] for x in recs)
        assert abs(j["ms_per_step"] - ms) <= 1e-9 * ms, (j["ms_per_step"], ms)  # bench's figure, same steps
        reps.append(dict(ms=ms, tps=j["tokens_per_step"] / (ms / 1000),
                         compute=statistics.mean(x["compute_ms"] for x in recs),
                         exposed=statistics.mean(x["exposed_comm_ms"] for x in recs),
                         data=statistics.mean(x["data_wait_ms"] for x in recs),
                         comm=statistics.mean(x["comm_ms"] for x in recs)))
    mean = lambda key: sum(x[key] for x in reps) / 2
    for col, key, tol in (("ms_per_step", "ms", 1e-3), ("tokens_per_s", "tps", 0.1), ("compute_ms", "compute", 1e-3),
                          ("exposed_comm_ms", "exposed", 1e-3), ("data_wait_ms", "data", 1e-3), ("comm_ms", "comm", 1e-3)):
        assert abs(float(r[col]) - mean(key)) <= tol, (col, r[col], mean(key))
    assert abs(float(r["ms_stdev"]) - statistics.stdev([x["ms"] for x in reps])) <= 1e-3, r
    assert abs(float(r["compute_ms"]) + float(r["exposed_comm_ms"]) + float(r["data_wait_ms"])
               - float(r["ms_per_step"])) <= 3e-3, r                   # the breakdown adds up
assert float(rows[0]["efficiency"]) == 1.0
eff = float(rows[1]["tokens_per_s"]) / (2 * float(rows[0]["tokens_per_s"]))
assert abs(float(rows[1]["efficiency"]) - eff) <= 1e-4, (rows[1]["efficiency"], eff)
assert all(float(r["predicted_ms"]) > 0 for r in rows), rows
report = open(d + "/report.md").read()
assert "alpha = " in report and "| 1024 |" in report, "cost model section missing"
assert "predicted / measured" in report and "load average" in report, report
for svg in ("throughput", "efficiency", "breakdown"):
    xml.dom.minidom.parse(f"{d}/{svg}.svg")  # well-formed
texts = lambda f: [t.firstChild.data for t in xml.dom.minidom.parse(f"{d}/{f}.svg").getElementsByTagName("text") if t.firstChild]
assert {"measured", "predicted", "linear"} <= set(texts("throughput")), texts("throughput")
assert {"compute", "exposed comm", "data wait"} <= set(texts("breakdown")), texts("breakdown")
line = next(l for l in report.splitlines() if l.startswith("| 2 | 1 x 2 |"))
cells = [c.strip() for c in line.strip("|").split("|")]
assert cells[2].startswith(f"{float(rows[1]['ms_per_step']):.1f} +- "), cells      # measured, with its spread
assert cells[8] == f"{float(rows[1]['predicted_ms']):.1f}", cells                 # predicted
assert abs(float(cells[9]) - float(rows[1]["predicted_ms"]) / float(rows[1]["ms_per_step"])) <= 0.006, cells
print("scale: CSV matches the runs' metrics;", rows)
PY
# weak scaling: the global batch grows with dp, the work per rank stays
cat > "$WORK/weak.yaml" <<YAML
config: $MT_SOURCE_DIR/examples/tiny.yaml
overrides: [train.batch_size=4, train.micro_batch=2, model.n_embd=32, model.seq_len=16, train.threads=1]
mode: weak
steps: 2
warmup: 1
points:
  - {np: 1}
  - {np: 2, dp: 2}
YAML
"$MESHTRAIN" scale "$WORK/weak.yaml" --out "$WORK/weak"
python3 - "$WORK/weak" <<'PY'
import json, sys
d = sys.argv[1]
a, b = (json.load(open(f"{d}/point{i}_rep0.json")) for i in (0, 1))
assert b["tokens_per_step"] == 2 * a["tokens_per_step"] and b["dp"] == 2, (a, b)
assert "weak scaling" in open(d + "/report.md").read()
PY
# a pipeline point: parallel.pp reaches the run; the CSV has pp, the measured bubble (the runs'
# own per-step records) and the modelled one, theoretical_bubble(1f1b, pp 2, m 4) = 1/5
cat > "$WORK/pipe.yaml" <<YAML
config: $MT_SOURCE_DIR/examples/tiny.yaml
overrides: [train.batch_size=8, train.micro_batch=2, model.n_embd=32, model.seq_len=16, train.threads=1,
            parallel.pp_schedule=1f1b]
steps: 2
warmup: 1
points:
  - {np: 1}
  - {np: 2, pp: 2}
YAML
"$MESHTRAIN" scale "$WORK/pipe.yaml" --out "$WORK/pipe"
grep -q "parallel.dp=1 parallel.tp=1 parallel.pp=2" "$WORK/pipe/commands.txt" || fail "pp not passed: $(cat "$WORK/pipe/commands.txt")"
python3 - "$WORK/pipe" <<'PY'
import csv, json, statistics, sys
d = sys.argv[1]
rows = list(csv.DictReader(open(d + "/results.csv")))
assert [(r["np"], r["dp"], r["tp"], r["pp"]) for r in rows] == [("1", "1", "1", "1"), ("2", "1", "1", "2")], rows
assert float(rows[0]["bubble"]) == 0 and float(rows[0]["predicted_bubble"]) == 0, rows[0]
assert abs(float(rows[1]["predicted_bubble"]) - 0.2) <= 1e-4, rows[1]
j = json.load(open(f"{d}/point1_rep0.json"))
assert j["pp"] == 2 and j["world"] == 2, j
recs = [json.loads(l) for l in open(f"{d}/point1_rep0/metrics.jsonl")]
bubble = statistics.mean(x["bubble"] for x in recs)
assert 0 < bubble < 1 and abs(float(rows[1]["bubble"]) - bubble) <= 1e-4, (rows[1]["bubble"], bubble)
assert float(rows[1]["predicted_ms"]) > 0, rows[1]
line = next(l for l in open(d + "/report.md") if l.startswith("| 2 | 1 x 1 x pp 2 |"))
cells = [c.strip() for c in line.strip().strip("|").split("|")]
assert cells[10].endswith(f"({100 * float(rows[1]['predicted_bubble']):.1f}%)"), line   # pipeline bubble (predicted)
assert cells[11] == "1" and cells[12] == f"{float(rows[1]['error_pct']):+.1f}%", line     # hosts, error
print("scale pipeline:", rows[1])
PY
# a bad experiment is a clear error
printf 'config: x.yaml\npoints:\n  - {np: 2, dp: 2, tp: 2}\n' > "$WORK/bad.yaml"
set +e; out=$("$MESHTRAIN" scale "$WORK/bad.yaml" --out "$WORK/o2" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "np 2 != dp 2 x tp 2" <<< "$out" || fail "bad experiment: $out"
printf 'config: x.yaml\npoints:\n  - {np: 4, dp: 1, pp: 2}\n' > "$WORK/bad2.yaml"
set +e; out=$("$MESHTRAIN" scale "$WORK/bad2.yaml" --out "$WORK/o3" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "np 4 != dp 1 x tp 1 x pp 2" <<< "$out" || fail "bad pipeline experiment: $out"
