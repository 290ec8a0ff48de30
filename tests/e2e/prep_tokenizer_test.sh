#!/usr/bin/env bash
# meshtrain prep --from jsonl|text --tokenizer (a Hugging Face tokenizer.json, the copied
# tests/fixtures/hf/bpe-gpt2style fixture):
#  - the fixture's samples.jsonl as a corpus: h5dump's tokens are exactly the ids the Python
#    `tokenizers` library gave for each line (committed in samples.jsonl), each document
#    followed by the end-of-text token 0, and doc_offsets hold those boundaries; --from text
#    is one document per file, the same way; tokenizer.json is copied into the dataset and
#    the manifest names it with vocab_size 512;
#  - a larger corpus (license paragraphs over two files, blank lines, --text-key body) prepped
#    by 1, 2 and 3 ranks under mpirun: every file of the datasets is byte-identical;
#  - errors: a line without the key (file:line named), a line that is not JSON, an unsupported
#    tokenizer (its type named);
#  - a few training steps on the dataset (packed rows, data.eod_token = the end-of-text id).
source "$(dirname "$0")/lib.sh"
TOK="$MT_SOURCE_DIR/tests/fixtures/hf/bpe-gpt2style"
command -v h5dump >/dev/null || fail "h5dump missing (scripts/deps.sh installs hdf5-tools)"
h5vals() { h5dump -d "$2" -y -w 0 "$1" | python3 -c 'import sys; s=sys.stdin.read(); b=s[s.index("DATA {")+6:]; b=b[:b.index("}")]; print(" ".join(b.replace(",", " ").split()))'; }

# 1. ids equal the library's, eos after each document
"$MESHTRAIN" prep --from jsonl --tokenizer "$TOK" "$TOK/samples.jsonl" --val-fraction 0 --out "$WORK/samples" >/dev/null
python3 - "$TOK/samples.jsonl" "$WORK/samples" "$(h5vals "$WORK/samples/train_00000.h5" tokens)" \
  "$(h5vals "$WORK/samples/train_00000.h5" doc_offsets)" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
want = [i for l in lines for i in l["ids"] + [0]]
got = [int(x) for x in sys.argv[3].split()]
assert got == want, f"tokens differ from the library's ids: {got[:20]} vs {want[:20]}"
offs, pos = [0], 0
for l in lines:
    pos += len(l["ids"]) + 1
    offs.append(pos)
assert [int(x) for x in sys.argv[4].split()] == offs, sys.argv[4]
m = json.load(open(sys.argv[2] + "/manifest.json"))
assert m["vocab_size"] == 512 and m["tokenizer"] == "tokenizer.json" and m["generator"]["text"]["eos_id"] == 0, m
print(f"{len(lines)} documents, {len(got)} tokens: the library's ids, each document ended by <|endoftext|>")
PY
cmp "$TOK/tokenizer.json" "$WORK/samples/tokenizer.json" || fail "tokenizer.json not copied into the dataset"
printf 'Hello world' > "$WORK/hello.txt"
"$MESHTRAIN" prep --from text --tokenizer "$TOK/tokenizer.json" "$WORK/hello.txt" --val-fraction 0 --out "$WORK/hello" >/dev/null
[ "$(h5vals "$WORK/hello/train_00000.h5" tokens)" = "40 69 395 79 274 260 76 68 0" ] || fail "text: $(h5vals "$WORK/hello/train_00000.h5" tokens)"
# more ranks than documents: ranks without any send nothing, the dataset is the same
mpi -np 3 "$MESHTRAIN" prep --from text --tokenizer "$TOK/tokenizer.json" "$WORK/hello.txt" --val-fraction 0 \
  --out "$WORK/hello3" >/dev/null
cmp "$WORK/hello/train_00000.h5" "$WORK/hello3/train_00000.h5" || fail "text at -np 3 differs"

# 2. the same dataset whatever the number of ranks
python3 - "$WORK" <<'PY'
import json, sys
paras = [p for n in ("GPL-3", "Apache-2.0") for p in open(f"/usr/share/common-licenses/{n}").read().split("\n\n")]
for k, name in enumerate(("c1.jsonl", "c2.jsonl")):
    with open(sys.argv[1] + "/" + name, "w") as f:
        for i in range(k * 150, k * 150 + 150):
            f.write(json.dumps({"id": i, "body": paras[i % len(paras)] + " <|endoftext|> é日🙂"}) + "\n")
            if i % 40 == 0:
                f.write("\n")
PY
opts=(--from jsonl --text-key body --tokenizer "$TOK" "$WORK/c1.jsonl" "$WORK/c2.jsonl" --shard-tokens 8000
      --val-fraction 0.1)
"$MESHTRAIN" prep "${opts[@]}" --out "$WORK/np1" >/dev/null
mpi -np 2 "$MESHTRAIN" prep "${opts[@]}" --out "$WORK/np2" >/dev/null
mpi -np 3 "$MESHTRAIN" prep "${opts[@]}" --out "$WORK/np3" >/dev/null
n=$(ls "$WORK/np1" | wc -l)
[ "$n" -ge 5 ] || fail "expected several shards, got $(ls "$WORK/np1")"
for np in np2 np3; do
  [ "$(ls "$WORK/np1")" = "$(ls "$WORK/$np")" ] || fail "$np has other files: $(ls "$WORK/$np")"
  for f in "$WORK/np1"/*; do cmp "$f" "$WORK/$np/$(basename "$f")" || fail "$np: $(basename "$f") differs from -np 1"; done
done
"$MESHTRAIN" inspect "$WORK/np3" | grep -q "all shards verify" || fail "inspect np3"
echo "-np 1, 2, 3: the same $n files, byte for byte"

# 3. errors
printf '{"text": "ok"}\n{"body": "no text key"}\n' > "$WORK/nokey.jsonl"
set +e; out=$("$MESHTRAIN" prep --from jsonl --tokenizer "$TOK" "$WORK/nokey.jsonl" --out "$WORK/bad" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q 'nokey.jsonl:2' <<< "$out" && grep -q 'no string "text"' <<< "$out" || fail "missing key: $out"
printf '{"text": "ok"}\n{"text": oops}\n' > "$WORK/notjson.jsonl"
set +e; out=$(mpi -np 2 "$MESHTRAIN" prep --from jsonl --tokenizer "$TOK" "$WORK/notjson.jsonl" --out "$WORK/bad" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q 'notjson.jsonl:2' <<< "$out" && grep -q 'not a JSON line' <<< "$out" || fail "bad JSON at np 2: $out"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); j["model"]["type"]="Unigram"; json.dump(j, open(sys.argv[2],"w"))' \
  "$TOK/tokenizer.json" "$WORK/unigram.json"
set +e; out=$("$MESHTRAIN" prep --from jsonl --tokenizer "$WORK/unigram.json" "$WORK/c1.jsonl" --out "$WORK/bad" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "unsupported tokenizer model type 'Unigram'" <<< "$out" && grep -q unigram.json <<< "$out" \
  || fail "unsupported tokenizer: $out"
[ ! -e "$WORK/bad/manifest.json" ] || fail "a failed prep left a manifest"

# 4. the dataset trains
"$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" data.source=hdf5 data.path="$WORK/np1" model.vocab_size=512 \
  data.mode=packed data.eod_token=0 model.n_embd=32 model.seq_len=32 train.batch_size=4 train.micro_batch=4 \
  train.steps=5 train.eval_every=0 train.threads=1 run.tensorboard=false run.dir="$WORK/run" >/dev/null
[ "$(losses "$WORK/run" | wc -l)" -ge 5 ] || fail "no losses"
echo "trained 5 steps on the tokenized dataset"
