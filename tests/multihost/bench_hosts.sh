#!/usr/bin/env bash
# What: the flat vs hierarchical all-reduce table of issue #18 on simulated hosts (not a test:
# it measures, it checks nothing but the bench's own check column): `meshtrain bench allreduce
# --allreduce both` on 1 host x 4 ranks, 2 hosts x 2 and 4 hosts x 1 (and 4 x 2 with
# BH_BIG=1: 8 ranks on this machine's cores), each unshaped and with every host's link
# rate-limited (mh_slow, tbf 1gbit; one host has no link to shape), REPEATS times; prints one
# row per (layout, link, size) with the median flat and hierarchical busbw (GB/s), their ratio
# and raw MPI_Allreduce's, and keeps the JSON in $BH_OUT.
# Why: the numbers for the closing note, reproducible with one command:
#   MESHTRAIN=build/bin/meshtrain bash tests/multihost/bench_hosts.sh
# Settings: REPEATS (3), BH_SIZES_MINMAX ("1048576 67108864": sizes from min to max, x4 each),
# BH_RATE (1gbit), BH_OUT (a temporary directory), BH_BIG (0), BH_LAYOUTS ("1x4 2x2 4x1"). Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MESHTRAIN=${MESHTRAIN:-$here/../../build/bin/meshtrain}
MESHTRAIN=$(readlink -f "$MESHTRAIN")
REPEATS=${REPEATS:-3}
BH_RATE=${BH_RATE:-1gbit}
BH_OUT=${BH_OUT:-$(mktemp -d /tmp/bench-hosts.XXXXXX)}
read -r BH_MIN BH_MAX <<<"${BH_SIZES_MINMAX:-1048576 67108864}"
mkdir -p "$BH_OUT"
source "$here/simhosts.sh"
mh_require

layouts=${BH_LAYOUTS:-"1x4 2x2 4x1"}
[ "${BH_BIG:-0}" = 1 ] && layouts="$layouts 4x2"
for layout in $layouts; do
  hosts=${layout%x*} slots=${layout#*x}
  ( MH_SLOTS=$slots mh_up "$hosts" > /dev/null
    for link in unshaped "$BH_RATE"; do
      [ "$hosts" = 1 ] && [ "$link" != unshaped ] && continue
      if [ "$link" = unshaped ]; then mh_fast; else mh_slow "$link"; fi
      for k in $(seq 1 "$REPEATS"); do
        # shaped links: 64 MiB takes ~1 s per all-reduce, so fewer iterations
        it="--iters 5 --rounds 3 --warmup 2"; [ "$link" != unshaped ] && it="--iters 2 --rounds 3 --warmup 1"
        mh_mpirun --oversubscribe -np $((hosts * slots)) "$MESHTRAIN" bench allreduce --allreduce both \
          --min-bytes "$BH_MIN" --max-bytes "$BH_MAX" --factor 4 $it \
          --json "$BH_OUT/$layout-$link-$k.json" > "$BH_OUT/$layout-$link-$k.txt" 2>&1 ||
          { cat "$BH_OUT/$layout-$link-$k.txt"; exit 1; }
      done
    done )
done

python3 - "$BH_OUT" <<'PY'
import glob, json, os, statistics as st, sys
rows = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    layout, link, _ = os.path.basename(f)[:-5].split("-")
    j = json.load(open(f))
    t = {x["allreduce"]: x for x in j["tables"]}
    for fl, hi in zip(t["flat"]["rows"], t["hierarchical"]["rows"]):
        r = rows.setdefault((layout, link, fl["bytes"]), {"flat": [], "hier": [], "raw": [], "ok": True, "note": t["hierarchical"]["note"]})
        r["flat"].append(fl["fw_busbw"]); r["hier"].append(hi["fw_busbw"])
        r["raw"].append(st.median([fl["raw_busbw"], hi["raw_busbw"]]))
        r["ok"] &= fl["ok"] and hi["ok"]
print(f"# busbw GB/s, median of runs; hosts x ranks; link; machine shared with other jobs")
print(f"{'layout':>6} {'link':>9} {'bytes':>10} {'flat':>7} {'hier':>7} {'hier/flat':>9} {'raw MPI':>8} {'runs':>4} check")
for (layout, link, b), r in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] != "unshaped", kv[0][2])):
    f, h, w = st.median(r["flat"]), st.median(r["hier"]), st.median(r["raw"])
    print(f"{layout:>6} {link:>9} {b:>10} {f:7.3f} {h:7.3f} {h / f:9.2f} {w:8.3f} {len(r['flat']):>4} {'ok' if r['ok'] else 'WRONG'}")
for layout in sorted({k[0] for k in rows}):
    print(f"# {layout}: " + next(r["note"] for k, r in rows.items() if k[0] == layout))
PY
echo "# JSON and tables: $BH_OUT"
