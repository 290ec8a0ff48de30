#!/usr/bin/env bash
# The two-level cost model across simulated hosts (2 hosts x 2 ranks): `bench network` fits
# intra- and inter-host alpha/beta and writes them as JSON with its measured vs predicted flat
# and hierarchical (parallel.allreduce = hierarchical on all ranks) all-reduce; `meshtrain scale` launches its points through the simhosts launcher (np 2 on one
# host, np 4 on two), reads that file as its `network:` and puts hosts, predicted ms and the
# error % beside the measured ms in results.csv and report.md. How close the predictions are
# is a measurement (docs/scaling.md, tests/multihost/cost_model_table.sh), not checked here.
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/simhosts.sh"
mh_require
MH_SLOTS=2 mh_up 2
export MH_PREFIX  # the launcher below is simhosts.sh's command-line form: it finds the hosts by prefix

mh_mpirun -np 4 "$MESHTRAIN" bench network --min-bytes 4096 --max-bytes 16777216 --factor 16 --iters 2 --rounds 3 \
  --warmup 1 --json "$WORK/net.json" > "$WORK/net.txt" 2>&1 || { cat "$WORK/net.txt"; fail "bench network across 2 hosts"; }
grep -q "2 host(s) x 2 rank(s)" "$WORK/net.txt" || fail "bench network did not see 2 hosts x 2: $(cat "$WORK/net.txt")"
python3 - "$WORK/net.json" <<'PY' || fail "bench network JSON"
import json, sys
j = json.load(open(sys.argv[1]))
n = j["network"]
assert j["hosts"] == 2 and j["world"] == 4 and n["ranks_per_host"] == 2, j
for lvl in ("intra", "inter"):
    assert n[lvl]["gbytes_per_s"] > 0 and n[lvl]["alpha_us"] >= 0, n
assert [r["bytes"] for r in j["rows"]] == [4096, 65536, 1048576, 16777216], j["rows"]
for r in j["rows"]:
    assert r["flat_us"] > 0 and r["flat_predicted_us"] > 0 and r["intra_us"] > 0 and r["inter_us"] > 0, r
    assert r["inter_bytes"] == r["bytes"] // 2, r   # the inter level runs the flat ring's per-host share
    assert abs(r["error_pct"] - 100 * (r["flat_predicted_us"] - r["flat_us"]) / r["flat_us"]) < 1e-6, r
    assert r["hierarchical_us"] > 0 and r["hierarchical_predicted_us"] > 0, r
    assert abs(r["hierarchical_error_pct"] - 100 * (r["hierarchical_predicted_us"] - r["hierarchical_us"])
               / r["hierarchical_us"]) < 1e-6, r
assert n["hier_min_bytes"] == 65536, n
# below hier_min_bytes the backend (and so the model) stays flat
assert j["rows"][0]["hierarchical_predicted_us"] == j["rows"][0]["flat_predicted_us"], j["rows"][0]
print("bench network:", n)
PY

cat > "$WORK/exp.yaml" <<YAML
config: $MT_SOURCE_DIR/examples/tiny.yaml
overrides: [train.batch_size=4, train.micro_batch=2, model.n_embd=32, model.seq_len=16, train.threads=1]
mode: weak
steps: 2
warmup: 1
points:
  - {np: 2, dp: 2}
  - {np: 4, dp: 4}
mpirun: bash $MT_SOURCE_DIR/tests/multihost/simhosts.sh mpirun
mpirun_args: []
network: net.json
hosts_share_cores: true
YAML
"$MESHTRAIN" scale "$WORK/exp.yaml" --out "$WORK/out" > "$WORK/scale.txt" 2>&1 || { cat "$WORK/scale.txt"; fail "scale across hosts"; }
grep -q "simhosts.sh mpirun" "$WORK/out/commands.txt" || fail "not launched through simhosts: $(cat "$WORK/out/commands.txt")"
grep -q "allreduce.json" "$WORK/out/commands.txt" && fail "measured its own 2-rank all-reduce despite network:"
python3 - "$WORK/out" "$WORK/net.json" <<'PY' || fail "scale CSV / report"
import csv, json, sys
d, net = sys.argv[1], json.load(open(sys.argv[2]))["network"]
rows = list(csv.DictReader(open(d + "/results.csv")))
assert [(r["np"], r["hosts"]) for r in rows] == [("2", "1"), ("4", "2")], rows
for r in rows:
    ms, pred, err = float(r["ms_per_step"]), float(r["predicted_ms"]), float(r["error_pct"])
    assert ms > 0 and pred > 0, r
    assert abs(err - 100 * (pred - ms) / ms) <= 0.1, r
# the run on 2 hosts went through the 2 hosts: its bench json records the world
assert json.load(open(d + "/point1_rep0.json"))["world"] == 4
report = open(d + "/report.md").read()
assert "the dp all-reduce hierarchical (parallel.allreduce = auto)" in report, report
assert "Two-level network from" in report and "inter-host alpha = %.2f us" % net["inter"]["alpha_us"] in report, report
line = next(l for l in report.splitlines() if l.startswith("| 4 | 4 x 1 |"))
cells = [c.strip() for c in line.strip("|").split("|")]
assert cells[11] == "2" and cells[12] == "%+.1f%%" % float(rows[1]["error_pct"]), cells
print("scale across hosts:", [(r["np"], r["hosts"], r["ms_per_step"], r["predicted_ms"], r["error_pct"]) for r in rows])
PY
echo "PASS"
