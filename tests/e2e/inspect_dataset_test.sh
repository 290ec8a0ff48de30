#!/usr/bin/env bash
# meshtrain inspect on a dataset directory: prints the manifest (dtype, vocabulary, splits) and
# verifies every shard's checksum; a bit-flipped shard is named and the exit code is 1.
source "$(dirname "$0")/lib.sh"
"$MESHTRAIN" prep --from markov --docs 40 --doc-len 128 --markov-vocab 16 --shard-tokens 2048 \
  --val-fraction 0.2 --out "$WORK/ds" >/dev/null
out=$("$MESHTRAIN" inspect "$WORK/ds")
echo "$out"
grep -q "dataset format v1 | dtype uint16 | vocab 16" <<< "$out" || fail "manifest summary: $out"
echo "$out" | grep -Eq "train +[0-9]+ shard\(s\), [0-9]+ tokens, [0-9]+ documents" || fail "train split line"
grep -q "all shards verify" <<< "$out" || fail "a good dataset must verify"
# flip a byte in the middle of the tokens of the first train shard (a value inside the data)
shard="$WORK/ds/$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['splits']['train'][0]['file'])" "$WORK/ds/manifest.json")"
h5dump -d tokens -b LE -o "$WORK/tokens.bin" "$shard" >/dev/null
python3 - "$shard" "$WORK/tokens.bin" <<'PY'
import sys
p, raw = sys.argv[1], open(sys.argv[2], "rb").read()
b = bytearray(open(p, "rb").read())
at = b.find(raw[:256])  # the tokens' chunk, found by its content (h5dump read the values out)
assert at >= 0, "token bytes not found in the shard"
b[at + 100] ^= 0x01     # one token value changes; the HDF5 structure stays intact
open(p, "wb").write(b)
print(f"flipped a token byte at file offset {at + 100}")
PY
set +e; out=$("$MESHTRAIN" inspect "$WORK/ds" 2>&1); rc=$?; set -e
[ $rc -eq 1 ] || fail "corrupt dataset: exit $rc: $out"
grep -q "FAILED: .*checksum mismatch.*$(basename "$shard")\|FAILED: .*$(basename "$shard").*checksum mismatch" <<< "$out" || fail "the corrupt shard is not named: $out"
echo "corrupt shard detected and named"
