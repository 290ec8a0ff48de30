#!/usr/bin/env bash
# What: reproduces the two-level cost model's predicted / measured table (docs/scaling.md):
# on 4 simulated hosts of 2 ranks (simhosts.sh), unshaped and with every host's link limited
# to 1 Gbit/s (mh_slow), it runs `meshtrain bench network` on 2 and 4 hosts REPS times (each
# run fits intra- and inter-host alpha/beta and predicts the flat and the hierarchical
# all-reduce of all ranks from them, next to their measured times), then a small data-parallel `meshtrain scale` experiment over 1, 2 and 4 hosts with the
# network the 4-host runs fitted (parallel.allreduce = $SCALE_ALLREDUCE, default auto: hierarchical
# across hosts) (their median, level by level); it prints the medians over the
# repetitions as Markdown.
# Not a ctest test: minutes of measurements, and the outcome is a measurement, not a pass/fail.
#   bash tests/multihost/cost_model_table.sh [OUT_DIR]     (root; REPS=3 SIZES_FACTOR=4 MAX_BYTES=16777216;
#                                                          REUSE=1: keep OUT_DIR's bench network runs, redo scale)
# Why: the cost model must predict multi-host points from alpha/beta measured on the hosts.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
MESHTRAIN=${MESHTRAIN:-$SRC/build/bin/meshtrain}
OUT=${1:-$SRC/runs/cost-model-table}
REPS=${REPS:-3}
FACTOR=${SIZES_FACTOR:-4}
MAX_BYTES=${MAX_BYTES:-16777216}
SCALE_ALLREDUCE=${SCALE_ALLREDUCE:-auto}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$SRC/tests/multihost/simhosts.sh"
mh_require
mkdir -p "$OUT"
mh_up 4
export MH_PREFIX   # for the `simhosts.sh mpirun` launcher of the scale experiment
for rep in $(seq 1 "$REPS"); do
  [ "${REUSE:-0}" = 1 ] && [ -s "$OUT/net_1gbit_h4_r$rep.json" ] && continue
  for shape in unshaped 1gbit; do
    if [ "$shape" = unshaped ]; then mh_fast; else mh_slow 1gbit; fi
    for H in 2 4; do
      echo "== rep $rep, $shape, $H hosts ($(date +%T), load $(cut -d' ' -f1 /proc/loadavg))"
      mh_mpirun -np $((2 * H)) "$MESHTRAIN" bench network --factor "$FACTOR" --max-bytes "$MAX_BYTES" \
        --json "$OUT/net_${shape}_h${H}_r$rep.json" | tee "$OUT/net_${shape}_h${H}_r$rep.txt"
    done
  done
done
# the network the experiment uses: the median of the 4-host runs' fits, level by level
python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
runs = [json.load(open(f))["network"] for f in sorted(glob.glob(sys.argv[1] + "/net_1gbit_h4_r*.json"))]
net = dict(runs[0])
for lvl in ("intra", "inter"):
    net[lvl] = {k: statistics.median(r[lvl][k] for r in runs) for k in ("alpha_us", "gbytes_per_s")}
json.dump({"network": net}, open(sys.argv[1] + "/net_1gbit_h4_median.json", "w"), indent=2)
PY
# data parallelism over 1, 2 and 4 hosts (2 ranks each), weak scaling, links at 1 Gbit/s
mh_slow 1gbit
cat > "$OUT/scale.yaml" <<YAML
config: $SRC/examples/tiny.yaml
overrides: [train.batch_size=8, train.micro_batch=8, train.threads=1, model.n_embd=128, model.n_layer=2,
            model.seq_len=32, run.tensorboard=false, parallel.allreduce=$SCALE_ALLREDUCE]
mode: weak
steps: 4
warmup: 2
repetitions: $REPS
points:
  - {np: 2, dp: 2}
  - {np: 4, dp: 4}
  - {np: 8, dp: 8}
mpirun: bash $SRC/tests/multihost/simhosts.sh mpirun
mpirun_args: []
network: net_1gbit_h4_median.json
hosts_share_cores: true
YAML
echo "== scale ($(date +%T), load $(cut -d' ' -f1 /proc/loadavg))"
rm -rf "$OUT/scale"
"$MESHTRAIN" scale "$OUT/scale.yaml" --out "$OUT/scale"
python3 - "$OUT" "$REPS" "$SCALE_ALLREDUCE" <<'PY'
import csv, glob, json, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
med = statistics.median
print("\n### bench network: flat and hierarchical all-reduce, measured vs predicted (medians of %d runs)\n" % reps)
for shape in ("unshaped", "1gbit"):
    for h in (2, 4):
        runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/net_{shape}_h{h}_r*.json"))]
        if not runs: continue
        n = runs[0]["network"]
        fit = lambda lvl: "alpha %.0f us, %.3f GB/s" % (med(r["network"][lvl]["alpha_us"] for r in runs),
                                                       med(r["network"][lvl]["gbytes_per_s"] for r in runs))
        print(f"**{h} hosts x {n['ranks_per_host']} ranks, {shape}** (intra: {fit('intra')}; inter: {fit('inter')})\n")
        print("| bytes | flat measured us | predicted us | error | runs' errors | hier. measured us | predicted us | error | runs' errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        for i, row in enumerate(runs[0]["rows"]):
            m = med(r["rows"][i]["flat_us"] for r in runs)
            p = med(r["rows"][i]["flat_predicted_us"] for r in runs)
            errs = " ".join("%+.0f%%" % r["rows"][i]["error_pct"] for r in runs)
            hp = med(r["rows"][i]["hierarchical_predicted_us"] for r in runs)
            if "hierarchical_us" in row:
                hm = med(r["rows"][i]["hierarchical_us"] for r in runs)
                herrs = " ".join("%+.0f%%" % r["rows"][i]["hierarchical_error_pct"] for r in runs)
                hier = f"{hm:.0f} | {hp:.0f} | {100 * (hp - hm) / hm:+.1f}% | {herrs}"
            else:
                hier = f"- | {hp:.0f} | - | -"
            print(f"| {row['bytes']} | {m:.0f} | {p:.0f} | {100 * (p - m) / m:+.1f}% | {errs} | {hier} |")
        print()
rows = list(csv.DictReader(open(f"{out}/scale/results.csv")))
print("### meshtrain scale: data parallel over hosts, 1 Gbit/s links, parallel.allreduce = %s (mean of %d repetitions)\n"
      % (sys.argv[3], reps))
print("| ranks | hosts | dp | measured ms/step (+- sd) | predicted ms | error | compute ms | comm ms | predicted comm ms | comm error |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    c, pc = float(r["comm_ms"]), float(r["predicted_comm_ms"])
    print(f"| {r['np']} | {r['hosts']} | {r['dp']} | {float(r['ms_per_step']):.1f} +- {float(r['ms_stdev']):.1f} | "
          f"{float(r['predicted_ms']):.1f} | {float(r['error_pct']):+.1f}% | {float(r['compute_ms']):.1f} | {c:.1f} | "
          f"{pc:.1f} | {100 * (pc - c) / c:+.1f}% |")
PY
