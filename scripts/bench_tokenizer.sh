#!/usr/bin/env bash
# Tokenizer speed per core: meshtrain's native BPE against the Hugging Face `tokenizers`
# library (Rust, through its Python binding) on the same text, the same documents, one
# thread each, in one run.
#   scripts/bench_tokenizer.sh [TEXT_FILE] [--tokenizer PATH] [--mb 50]
# Without TEXT_FILE, `meshtrain bench tokenizer` generates ~--mb MB from the license texts and
# saves it for the library. Both sides cut the text into documents at blank lines ("\n\n")
# and encode one document per call; the library runs encode_batch over all documents with
# TOKENIZERS_PARALLELISM=false and RAYON_NUM_THREADS=1 (one thread, no per-call Python
# overhead), and a per-document encode() loop; the better of the two is compared. The token
# counts and a hash of all ids must agree (the script fails otherwise). Installs `tokenizers`
# with pip if missing.
set -euo pipefail
MESHTRAIN=${MESHTRAIN:-$(dirname "$0")/../build/bin/meshtrain}
text="" tok="" mb=50
while [ $# -gt 0 ]; do
  case "$1" in
    --tokenizer) tok=$2; shift 2 ;;
    --mb) mb=$2; shift 2 ;;
    *) text=$1; shift ;;
  esac
done
tok=${tok:-$(dirname "$0")/../tests/fixtures/hf/bpe-gpt2style}
python3 -c "import tokenizers" 2>/dev/null || pip install --quiet tokenizers
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$text" ]; then
  "$MESHTRAIN" bench tokenizer --tokenizer "$tok" --mb "$mb" --save-text "$work/text.txt" --json "$work/ours.json"
  text=$work/text.txt
else
  "$MESHTRAIN" bench tokenizer "$text" --tokenizer "$tok" --json "$work/ours.json"
fi
TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 RAYON_RS_NUM_CPUS=1 python3 - "$tok" "$text" "$work/ours.json" <<'PY'
import json, os, sys, time
import tokenizers
tok_path, text_path, ours_path = sys.argv[1:4]
if os.path.isdir(tok_path):
    tok_path = os.path.join(tok_path, "tokenizer.json")
tok = tokenizers.Tokenizer.from_file(tok_path)
text = open(text_path, encoding="utf-8").read()
docs = text.split("\n\n")
nbytes = sum(len(d.encode("utf-8")) for d in docs)
t0 = time.perf_counter()
enc = tok.encode_batch(docs)
t_batch = time.perf_counter() - t0
t0 = time.perf_counter()
for d in docs:
    tok.encode(d)
t_loop = time.perf_counter() - t0
h, n, mask = 0, 0, (1 << 64) - 1
for e in enc:
    for i in e.ids:
        h = (h * 1000003 + i) & mask
    n += len(e.ids)
ours = json.load(open(ours_path))
lib = nbytes / 1e6 / min(t_batch, t_loop)  # the library's better figure
print(f"tokenizers  {tokenizers.__version__}: {nbytes / 1e6 / t_batch:.2f} MB/s on one thread (encode_batch, "
      f"{t_batch:.2f} s); {nbytes / 1e6 / t_loop:.2f} MB/s with an encode() per document ({t_loop:.2f} s)")
print(f"ids         tokens {n} vs ours {ours['tokens']}, hash {h:016x} vs ours {ours['hash']}")
print(f"per core    meshtrain {ours['mb_per_s']:.2f} MB/s, tokenizers {lib:.2f} MB/s: "
      f"ratio {ours['mb_per_s'] / lib:.2f}x")
if n != ours["tokens"] or f"{h:016x}" != ours["hash"]:
    sys.exit("FAIL: the ids differ from the library's")
PY
