#!/usr/bin/env bash
# The data loader's benchmarks (docs/dataset-format.md), printed as a small report:
#  1. loader throughput vs a raw sequential H5Dread of the same shards (`meshtrain bench data`,
#     concat windows of 1024 and 128 tokens, and documents);
#  2. data wait as a share of the step on examples/small.yaml trained from HDF5;
#  3. on a dataset of skewed document lengths at dp 2: imbalance (max / mean replica compute
#     time) with `balanced` vs `round_robin`; with replica 1 slowed 2x
#     (data.debug_slow_rank=1), tokens/s of `dynamic` vs `static`.
# Usage: bash scripts/bench_loader.sh [OUT_DIR]   (default runs/bench-loader; datasets are
# kept there and reused; PARTS=3 runs only part 3, ROUNDS=n repeats part 3's runs). Needs a build (scripts/build.sh). Timings depend on the machine's
# load: run it on a quiet machine and compare figures of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
MT=${MESHTRAIN:-build/bin/meshtrain}
OUT=${1:-runs/bench-loader}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi() { mpirun --allow-run-as-root --oversubscribe --bind-to none "$@"; }

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
# 1. throughput: 16 M tokens of the Markov language (vocab 512), 4 shards of 4 Mi tokens
if [ ! -f "$OUT/concat/manifest.json" ]; then
  "$MT" prep --from markov --docs 4000 --doc-len 4096 --markov-vocab 512 --markov-order 1 --shard-tokens 4194304 \
    --out "$OUT/concat" >/dev/null
fi
PARTS=${PARTS:-123}
if [[ $PARTS == *1* ]]; then
echo "== 1. loader vs raw H5Dread"
"$MT" bench data "$OUT/concat" --seq-len 1024 --batch 64 --json "$OUT/data-1024.json"
"$MT" bench data "$OUT/concat" --seq-len 128 --batch 512 --json "$OUT/data-128.json"
"$MT" bench data "$OUT/concat" --mode documents --seq-len 1024 --batch 64 --json "$OUT/data-docs.json"
fi

if [[ $PARTS == *2* ]]; then
echo "== 2. data wait on examples/small.yaml (from HDF5)"
"$MT" bench step examples/small.yaml data.source=hdf5 data.path="$OUT/concat" --warmup 2 --steps 10 \
  --json "$OUT/step-small.json" | grep -E "ms/step|data wait"
fi
[[ $PARTS == *3* ]] || exit 0

# 3. skewed documents: lengths 8..513 (median ~70), a 2-layer width-128 GPT, 4 Ki-token batches
if [ ! -f "$OUT/skewed/manifest.json" ]; then
  "$MT" prep --from markov --docs 20000 --doc-len 513 --doc-len-dist skewed --doc-len-min 8 --markov-vocab 512 \
    --markov-order 1 --val-fraction 0.02 --out "$OUT/skewed" >/dev/null
fi
common=(data.source=hdf5 data.path="$OUT/skewed" data.mode=documents data.batch_tokens=4096 model.n_layer=2
        model.n_head=4 model.n_embd=128 model.vocab_size=512 model.seq_len=512 train.micro_batch=4 train.steps=40
        train.eval_every=0 train.log_every=1000 train.threads=1 parallel.dp=2 run.tensorboard=false)
run() { mpi -np 2 "$MT" train examples/tiny.yaml "${common[@]}" "$@" >/dev/null; }
ROUNDS=${ROUNDS:-2}  # the four runs interleaved, ROUNDS times: load changes show as spread
for k in $(seq 1 "$ROUNDS"); do
  run data.schedule=round_robin run.dir="$OUT/rr-$k"
  run data.schedule=balanced run.dir="$OUT/bal-$k"
  run data.schedule=static data.debug_slow_rank=1 data.debug_slow_factor=2 run.dir="$OUT/slow-static-$k"
  run data.schedule=dynamic data.debug_slow_rank=1 data.debug_slow_factor=2 run.dir="$OUT/slow-dynamic-$k"
done
echo "== 3. skewed documents at dp 2 (steps 5..39; $ROUNDS rounds; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def stats(name):
    recs = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl") if '"loss"' in l][5:]
    imb = sum(r["imbalance"] for r in recs) / len(recs)
    tps = sum(r["tokens"] for r in recs) / (sum(r["ms"] for r in recs) / 1000)
    share = sum(r["replica_tokens"][1] for r in recs) / sum(r["tokens"] for r in recs)
    return imb, tps, share
for k in range(1, rounds + 1):
    rows = {n: stats(f"{n}-{k}") for n in ("rr", "bal", "slow-static", "slow-dynamic")}
    print(f"  round {k}")
    for n, (imb, tps, share) in rows.items():
        print(f"    {n:<13} imbalance {imb:5.3f}   {tps:8.0f} tokens/s   replica 1 trained {100*share:4.1f}% of the tokens")
    print(f"    imbalance: balanced {rows['bal'][0]:.3f} vs round_robin {rows['rr'][0]:.3f}")
    print(f"    replica 1 slowed 2x: dynamic / static tokens/s = {rows['slow-dynamic'][1] / rows['slow-static'][1]:.2f}x")
PY
