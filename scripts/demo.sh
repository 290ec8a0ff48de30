#!/usr/bin/env bash
# The first README command: install what is missing, build, and train the demo GPT on the
# built-in synthetic Markov language; the last line compares eval loss to the entropy floor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
./build/bin/meshtrain train examples/tiny.yaml run.dir=runs/demo "$@"
echo
echo "run directory: runs/demo (config.yaml, metrics.jsonl, summary.json)"
cat runs/demo/summary.json
