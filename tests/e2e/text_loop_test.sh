#!/usr/bin/env bash
# The README's loop on real text, shortened: prep the Debian license texts with a Hugging Face
# tokenizer.json (2 ranks), train a small Llama a few steps, generate from the run, export it
# to Hugging Face format, then generate and eval from the export. The export carries the
# dataset's tokenizer.json and its eos id; greedy text from the export equals greedy text from
# the checkpoint; eval of the export equals eval of the checkpoint (same parameters, same data).
source "$(dirname "$0")/lib.sh"
cd "$MT_SOURCE_DIR"
TOK=tests/fixtures/hf/bpe-gpt2style/tokenizer.json
mapfile -t texts < <(find /usr/share/common-licenses -type f | sort)
[ "${#texts[@]}" -ge 4 ] || { echo "no license texts under /usr/share/common-licenses"; exit 77; }
mpi -np 2 "$MESHTRAIN" prep --from text "${texts[@]}" --tokenizer "$TOK" --out "$WORK/data" > "$WORK/prep.log" 2>&1 ||
  { cat "$WORK/prep.log"; fail "prep"; }
cmp "$TOK" "$WORK/data/tokenizer.json" || fail "the dataset lacks its tokenizer.json"
"$MESHTRAIN" train examples/llama-text.yaml data.path="$WORK/data" run.dir="$WORK/run" train.steps=6 \
  train.eval_every=0 checkpoint.every=6 model.n_layer=2 model.seq_len=64 > "$WORK/train.log" 2>&1 ||
  { cat "$WORK/train.log"; fail "train"; }
gen=(--prompt "This License" --max-new-tokens 24 --temperature 0)
"$MESHTRAIN" generate "$WORK/run" "${gen[@]}" > "$WORK/g_ckpt.txt" 2> "$WORK/g_ckpt.log" ||
  { cat "$WORK/g_ckpt.log"; fail "generate from the run"; }
grep -q "tokenizer.json" "$WORK/g_ckpt.log" || { cat "$WORK/g_ckpt.log"; fail "generate did not use the dataset's tokenizer"; }
"$MESHTRAIN" export "$WORK/run" --format hf --out "$WORK/hf" > "$WORK/export.log" 2>&1 || { cat "$WORK/export.log"; fail "export"; }
cmp "$TOK" "$WORK/hf/tokenizer.json" || fail "the export lacks the tokenizer.json"
python3 - "$WORK/hf" <<'PY'
import json, sys
d = sys.argv[1]
g, c = json.load(open(d + "/generation_config.json")), json.load(open(d + "/config.json"))
tok = json.load(open(d + "/tokenizer.json"))
eos = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|endoftext|>")
assert g["eos_token_id"] == eos and c["eos_token_id"] == eos, (g, c, eos)
assert c["model_type"] == "llama" and c["num_hidden_layers"] == 2 and c["vocab_size"] == 512, c
PY
"$MESHTRAIN" generate "hf:$WORK/hf" "${gen[@]}" > "$WORK/g_hf.txt" 2> "$WORK/g_hf.log" ||
  { cat "$WORK/g_hf.log"; fail "generate from the export"; }
[ -s "$WORK/g_ckpt.txt" ] || fail "no text generated"
cmp "$WORK/g_ckpt.txt" "$WORK/g_hf.txt" || fail "greedy text differs between the checkpoint and its export"
"$MESHTRAIN" eval "$WORK/run" --json "$WORK/e_ckpt.json" > /dev/null 2>&1 || fail "eval of the run"
"$MESHTRAIN" eval "hf:$WORK/hf" data.path="$WORK/data" model.seq_len=64 train.eval_batches=2 train.micro_batch=16 --json "$WORK/e_hf.json" \
  > "$WORK/e_hf.log" 2>&1 || { cat "$WORK/e_hf.log"; fail "eval of the export"; }
python3 - "$WORK/e_ckpt.json" "$WORK/e_hf.json" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"eval: checkpoint {a['loss']!r}, export {b['loss']!r} over {a['tokens']} tokens")
assert a["tokens"] == b["tokens"] and a["loss"] == b["loss"], (a, b)
PY
echo "text_loop_test: ok"
