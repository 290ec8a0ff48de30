#!/usr/bin/env bash
# meshtrain prep writes datasets the HDF5 command-line tools read back (h5dump values equal
# the input tokens, h5ls lists tokens and doc_offsets with their types and sizes, doc_offsets
# hold the document boundaries), from a .npy, raw uint32 tokens, text and the Markov language
# (fixed and skewed document lengths); training from HDF5 at dp 1 and dp 2 gives the same
# per-step losses.
source "$(dirname "$0")/lib.sh"
command -v h5dump >/dev/null || fail "h5dump missing (scripts/deps.sh installs hdf5-tools)"
python3 - "$WORK" <<'PY'
import struct, sys
w = sys.argv[1]
toks = [(i * 7919) % 1000 for i in range(3000)]
hdr = "{'descr': '<u2', 'fortran_order': False, 'shape': (%d,), }" % len(toks)
hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
open(w + "/a.npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + struct.pack("<%dH" % len(toks), *toks))
open(w + "/b.bin", "wb").write(struct.pack("<%dI" % 500, *[70000 + i for i in range(500)]))
open(w + "/c.txt", "w").write("hello meshtrain\n")
PY
"$MESHTRAIN" prep --from tokens "$WORK/a.npy" --val-fraction 0 --shard-tokens 1000 --out "$WORK/npy"
python3 - "$WORK/npy" <<'PY'
import json, subprocess, sys
d = sys.argv[1]
m = json.load(open(d + "/manifest.json"))
assert m["dtype"] == "uint16" and m["vocab_size"] == 1000 and m["splits"]["train"][0]["tokens"] == 3000, m
out = subprocess.run(["h5dump", "-d", "tokens", "-y", "-w", "0", d + "/" + m["splits"]["train"][0]["file"]],
                     capture_output=True, text=True, check=True).stdout
start = out.index("DATA {") + 6
body = out[start: out.index("}", start)]
vals = [int(x) for x in body.replace(",", " ").split()]
assert vals == [(i * 7919) % 1000 for i in range(3000)], vals[:10]
attrs = subprocess.run(["h5dump", "-A", d + "/" + m["splits"]["train"][0]["file"]], capture_output=True, text=True).stdout
assert '"uint16"' in attrs and "vocab_size" in attrs and "format_version" in attrs
print("h5dump reads back the 3000 tokens and the attributes")
PY
# h5ls: both datasets with their sizes and types; h5dump: the one document's boundaries
ls_out=$(h5ls -v "$WORK/npy/train_00000.h5")
echo "$ls_out" | grep -q "tokens .*Dataset {3000/3000}" || fail "h5ls tokens: $ls_out"
echo "$ls_out" | grep -q "doc_offsets .*Dataset {2/2}" || fail "h5ls doc_offsets: $ls_out"
echo "$ls_out" | grep -q "native unsigned short" || fail "h5ls: tokens are not uint16: $ls_out"
h5dump -d doc_offsets -y -w 0 "$WORK/npy/train_00000.h5" | grep -q "0, 3000" || fail "doc_offsets of one 3000-token document"
"$MESHTRAIN" prep --from tokens --raw-dtype uint32 "$WORK/b.bin" --val-fraction 0 --out "$WORK/raw"
grep -q '"dtype": "uint32"' "$WORK/raw/manifest.json" || fail "large ids need uint32"
h5dump -d tokens -y -w 0 "$WORK/raw/train_00000.h5" | grep -q "70499" || fail "raw uint32 tokens not read back"
"$MESHTRAIN" prep --from text "$WORK/c.txt" --val-fraction 0 --out "$WORK/txt"
h5dump -d tokens -y -w 0 "$WORK/txt/train_00000.h5" | grep -q "104, 101, 108, 108, 111, 32, 109" || fail "byte tokenizer: 'hello m' = 104 101 108 108 111 32 109"
# skewed Markov documents: the lengths h5dump reads from doc_offsets match the manifest's
# document count, lie in [--doc-len-min, --doc-len], and are mostly short
"$MESHTRAIN" prep --from markov --docs 300 --doc-len 200 --doc-len-dist skewed --doc-len-min 5 --markov-vocab 16 \
  --val-fraction 0 --shard-tokens 100000000 --out "$WORK/skew" >/dev/null
python3 - "$WORK/skew" <<'PY'
import json, subprocess, sys
d = sys.argv[1]
m = json.load(open(d + "/manifest.json"))
sh = m["splits"]["train"][0]
out = subprocess.run(["h5dump", "-d", "doc_offsets", "-y", "-w", "0", d + "/" + sh["file"]],
                     capture_output=True, text=True, check=True).stdout
start = out.index("DATA {") + 6
off = [int(x) for x in out[start: out.index("}", start)].replace(",", " ").split()]
lens = [b - a for a, b in zip(off, off[1:])]
assert len(lens) == sh["documents"] == 300 and off[-1] == sh["tokens"], (len(lens), sh)
assert min(lens) >= 5 and max(lens) <= 200, (min(lens), max(lens))
lens.sort()
assert lens[len(lens) // 2] < 60 and lens[-1] > 150, lens  # median short, a long tail
assert m["generator"]["doc_len"]["dist"] == "skewed"
print(f"skewed documents: median {lens[len(lens)//2]}, longest {lens[-1]} tokens")
PY
# train from HDF5: dp 1 vs dp 2
"$MESHTRAIN" prep --from markov --docs 200 --doc-len 256 --markov-vocab 16 --shard-tokens 8192 --out "$WORK/mk" >/dev/null
common=(data.source=hdf5 data.path="$WORK/mk" train.steps=30 train.eval_every=0 model.n_embd=32 model.seq_len=16
        train.batch_size=8 train.micro_batch=2 train.threads=1)
"$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" "${common[@]}" run.dir="$WORK/h1" >/dev/null
mpi -np 2 "$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" "${common[@]}" parallel.dp=2 run.dir="$WORK/h2" >/dev/null
compare_losses "$WORK/h1" "$WORK/h2" 1e-5 || fail "hdf5 dp1 vs dp2"
# a dataset whose vocabulary exceeds the model's is refused before training
set +e; out=$("$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" data.source=hdf5 data.path="$WORK/npy" \
  model.vocab_size=500 run.dir="$WORK/bad" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "vocab_size 1000 exceeds model.vocab_size 500" <<< "$out" || fail "vocab check: $out"
# a truncated .npy (data or header cut short) is an error naming the file, not a shorter document
head -c 3000 "$WORK/a.npy" > "$WORK/cut.npy"; head -c 40 "$WORK/a.npy" > "$WORK/cuthdr.npy"
for f in cut cuthdr; do
  set +e; out=$("$MESHTRAIN" prep --from tokens "$WORK/$f.npy" --out "$WORK/$f-ds" 2>&1); rc=$?; set -e
  [ $rc -ne 0 ] && grep -q "$f.npy: .*truncated" <<< "$out" || fail "truncated $f.npy accepted: $out"
done
# options that can only produce an unusable dataset are refused before converting anything
for bad in "--val-fraction 1" "--val-fraction -0.1" "--docs 0" "--shard-tokens 0"; do
  set +e; out=$("$MESHTRAIN" prep --from markov --docs 10 --doc-len 50 $bad --out "$WORK/badprep" 2>&1); rc=$?; set -e
  [ $rc -ne 0 ] && grep -q -- "${bad%% *}" <<< "$out" || fail "prep accepted $bad: $out"
  [ ! -e "$WORK/badprep/manifest.json" ] || fail "prep $bad wrote a dataset"
done
