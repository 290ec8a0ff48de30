#!/usr/bin/env bash
# TensorBoard event files parse back (TFRecord framing with masked CRC-32C, Event protobuf)
# with an independent reader written here, and hold the values metrics.jsonl logged.
source "$(dirname "$0")/lib.sh"
"$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" train.steps=12 train.eval_every=6 model.n_embd=32 \
  model.seq_len=16 run.dir="$WORK/r" >/dev/null
python3 - "$WORK/r" <<'PY'
import glob, json, math, struct, sys
d = sys.argv[1]
def crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF
def masked(b):
    c = crc32c(b)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
def varint(b, i):
    v = s = 0
    while True:
        x = b[i]; i += 1; v |= (x & 0x7F) << s; s += 7
        if x < 0x80: return v, i
def fields(b):
    i, out = 0, []
    while i < len(b):
        key, i = varint(b, i); f, w = key >> 3, key & 7
        if w == 0: v, i = varint(b, i)
        elif w == 1: v = b[i:i+8]; i += 8
        elif w == 5: v = b[i:i+4]; i += 4
        elif w == 2: n, i = varint(b, i); v = b[i:i+n]; i += n
        else: raise ValueError(w)
        out.append((f, v))
    return out
files = glob.glob(d + "/tb/events.out.tfevents.*")
assert len(files) == 1, files
data = open(files[0], "rb").read()
i, events = 0, []
while i < len(data):
    hdr = data[i:i+8]; (n,) = struct.unpack("<Q", hdr)
    assert struct.unpack("<I", data[i+8:i+12])[0] == masked(hdr), "length CRC"
    payload = data[i+12:i+12+n]
    assert struct.unpack("<I", data[i+12+n:i+16+n])[0] == masked(payload), "payload CRC"
    events.append(fields(payload)); i += 16 + n
assert dict(events[0]).get(3) == b"brain.Event:2"
got = {}
for ev in events[1:]:
    e = dict(ev)
    for f, v in fields(e[5]):
        val = dict(fields(v))
        got[(val[1].decode(), e[2])] = struct.unpack("<f", val[2])[0]
recs = [json.loads(l) for l in open(d + "/metrics.jsonl")]
n = 0
for r in recs:
    if "loss" in r:
        for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm"),
                         ("perf/tokens_per_s", "tokens_per_s"), ("perf/mfu", "mfu")):
            assert math.isclose(got[(tag, r["step"])], r[key], rel_tol=1e-6, abs_tol=1e-30), (tag, r)
            n += 1
    if "eval_loss" in r:
        for tag, key in (("eval/loss", "eval_loss"), ("eval/acc", "eval_acc"), ("eval/acc_top5", "eval_acc_top5")):
            assert math.isclose(got[(tag, r["step"])], r[key], rel_tol=1e-6), (tag, r)
            n += 1
assert n == 12 * 5 + 2 * 3, n
assert all(0 < r["mfu"] < 100 for r in recs if "loss" in r), "MFU missing or not positive"  # its peak is measured: noisy under load
print(f"tensorboard: {len(events)} events, {n} scalars match metrics.jsonl")
PY
# meshtrain plot: loss and lr curves as SVG, one point per step
"$MESHTRAIN" plot "$WORK/r" --out "$WORK/plots"
python3 - "$WORK/plots" <<'PY'
import sys, xml.dom.minidom
doc = xml.dom.minidom.parse(sys.argv[1] + "/loss.svg")
lines = doc.getElementsByTagName("polyline")
assert len(lines) == 3, "train, eval and entropy-floor curves expected"
assert len(lines[0].getAttribute("points").split()) == 12, "one point per step"
xml.dom.minidom.parse(sys.argv[1] + "/lr.svg")
PY
set +e; out=$("$MESHTRAIN" plot "$WORK/nothing" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "nothing/metrics.jsonl" <<< "$out" || fail "plot of a missing run: $out"
