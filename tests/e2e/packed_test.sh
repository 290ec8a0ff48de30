#!/usr/bin/env bash
# data.mode packed end to end (the real binary, HDF5 datasets from `meshtrain prep`):
#  - eval at init (train.steps=0, same seed) of packed mode equals documents mode within 1e-5
#    on the same val documents: every document has 63 positions (63 stored tokens + the eod
#    token), so a packed row of 64 holds one document and one position of padding, and both
#    modes' eval batches are the same documents in the same order (train.batch_size of them;
#    documents mode refuses a seq_len longer than every document, so rows of several
#    documents cannot be compared this way: see below);
#  - pad_fraction in metrics.jsonl (packed: exactly 1/64; documents: 0) and "pad" on the log
#    line; bench data prints the padding of each mode;
#  - packed at dp 2 (balanced, dynamic) gives the losses of dp 1 within 1e-5 (rows, not
#    documents, are split), and a run resumed from its step-10 checkpoint continues bitwise;
#  - data.mode packed without data.eod_token, or an eod_token >= model.vocab_size, stops
#    before anything is written, naming data.eod_token.
# Rows with several documents need the model to restart positions at each document (being
# done on the model side): tests/e2e/packed_multidoc_eval_test.sh checks that case.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
"$MESHTRAIN" prep --from markov --docs 400 --doc-len 63 --markov-vocab 16 --val-fraction 0.3 --shard-tokens 4000 \
  --out "$WORK/ds" >/dev/null
common=(data.source=hdf5 data.path="$WORK/ds" model.vocab_size=32 data.eod_token=16 model.n_embd=32 model.seq_len=64
        train.batch_size=8 train.micro_batch=4 train.threads=1 run.tensorboard=false train.eval_every=0
        train.eval_batches=3)
eval_loss() { python3 -c 'import json,sys; print(repr(json.load(open(sys.argv[1]+"/summary.json"))["final_eval_loss"]))' "$1"; }

# eval at init: the same documents, the same loss
"$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=0 data.mode=documents data.batch_tokens=504 \
  run.dir="$WORK/e-doc" >/dev/null
"$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=0 data.mode=packed run.dir="$WORK/e-pk" >/dev/null
python3 - "$(eval_loss "$WORK/e-doc")" "$(eval_loss "$WORK/e-pk")" <<'PY' || fail "packed eval differs from documents eval"
import sys
a, b = float(sys.argv[1]), float(sys.argv[2])
print(f"eval at init: documents {a!r}, packed {b!r}, relative difference {abs(a - b) / a:.2e}")
sys.exit(0 if abs(a - b) <= 1e-5 * abs(a) else 1)
PY

# training: pad_fraction in the metrics and on the log line
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=20 train.log_every=10 data.mode=packed run.dir="$WORK/p1")
grep -q "step .*20/20 .*| pad 1.6%" <<< "$out" || fail "no pad figure on the log line: $out"
grep -q "rows of 64 positions packed with whole documents" <<< "$out" || fail "the batch description: $out"
"$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=20 data.mode=documents data.batch_tokens=504 \
  run.dir="$WORK/d1" >/dev/null
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
def recs(d): return [json.loads(l) for l in open(f"{w}/{d}/metrics.jsonl") if '"loss"' in l]
pk, doc = recs("p1"), recs("d1")
assert all(r["pad_fraction"] == 1 / 64 and r["tokens"] == 8 * 63 for r in pk), [r["pad_fraction"] for r in pk]
assert all(r["pad_fraction"] == 0 for r in doc), [r["pad_fraction"] for r in doc]
print("pad_fraction: packed 1/64, documents 0")
PY

# dp 2: the same losses; resume: bitwise
for p in balanced dynamic; do
  mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=20 data.mode=packed parallel.dp=2 \
    train.micro_batch=2 data.schedule=$p run.dir="$WORK/p2-$p" >/dev/null
  compare_losses "$WORK/p1" "$WORK/p2-$p" 1e-5 || fail "packed: dp 2 $p differs from dp 1"
done
"$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=20 data.mode=packed checkpoint.every=10 run.dir="$WORK/r-a" >/dev/null
mkdir -p "$WORK/r-b/checkpoints"
cp -r "$WORK/r-a/checkpoints/step_00000010" "$WORK/r-b/checkpoints/"
"$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=20 data.mode=packed checkpoint.every=10 run.dir="$WORK/r-b" \
  resume=auto >/dev/null
diff <(step_losses "$WORK/r-a" 10) <(step_losses "$WORK/r-b" 10) || fail "packed: resumed losses differ"

# bench data names the padding of each mode
for m in documents packed; do
  "$MESHTRAIN" bench data "$WORK/ds" --mode $m --seq-len 64 --batch 8 --eod-token 16 --passes 1 \
    | grep -q "padding (mode $m): .*% of positions have no target" || fail "bench data: no padding line for $m"
done

# config errors, before anything is written
expect_bad() {  # expect_bad PATTERN OVERRIDES...
  local pat=$1; shift
  set +e; out=$("$MESHTRAIN" train "$CFG" "${common[@]}" "$@" run.dir="$WORK/bad" 2>&1); rc=$?; set -e
  [ $rc -ne 0 ] || fail "expected a failure for: $*"
  grep -q -- "$pat" <<< "$out" || fail "expected '$pat' for $*, got: $out"
  [ ! -e "$WORK/bad" ] || fail "run.dir written before the error: $*"
}
expect_bad "'data.eod_token': data.mode packed needs data.eod_token" data.mode=packed data.eod_token=-1
expect_bad "'data.eod_token': eod_token = 32 is not below model.vocab_size = 32" data.mode=packed data.eod_token=32
expect_bad "'data.eod_token': eod_token = 40 is not below" data.mode=documents data.eod_token=40
echo "packed e2e: eval equivalence, pad fraction, dp 2, resume and config errors passed"
