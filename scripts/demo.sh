#!/usr/bin/env bash
# The first README command: install what is missing, build, write the demo dataset (the
# built-in synthetic Markov language as HDF5 shards, `meshtrain prep --from markov`) and train
# the demo GPT from it through the prefetching loader; the last line compares eval loss to
# the language's entropy floor (recorded in the dataset's manifest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
data=runs/demo-data
if [ ! -f "$data/manifest.json" ]; then
  # the language of examples/tiny.yaml: 16 tokens, order 2, sharpness 2, seed 1234
  ./build/bin/meshtrain prep --from markov --docs 2000 --doc-len 1024 --markov-vocab 16 --markov-order 2 \
    --markov-sharpness 2.0 --seed 1234 --shard-tokens 524288 --out "$data"
fi
./build/bin/meshtrain train examples/tiny.yaml data.source=hdf5 data.path="$data" run.dir=runs/demo "$@"
echo
echo "run directory: runs/demo (config.yaml, metrics.jsonl, summary.json); dataset: $data"
cat runs/demo/summary.json
