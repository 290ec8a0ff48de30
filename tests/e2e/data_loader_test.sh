#!/usr/bin/env bash
# The data loader end to end, on an HDF5 dataset of skewed document lengths:
#  - equivalence: 30 steps at dp 1 and at dp 2 under every schedule (documents mode; concat
#    with round_robin and dynamic) give the same per-step losses within 1e-5 relative, also
#    with one rank slowed down 3x (data.debug_slow_rank), which moves work under dynamic,
#    and at dp 2 x tp 2 (tp ranks of a replica must get the same documents);
#  - resume: a run restored from its step-20 checkpoint continues with bitwise-identical
#    losses (documents mode, dp 1 and dp 2), the loader state travelling in the shards;
#  - a replica with no sample in a step (dynamic, one rank 30x slower) still joins every
#    gradient collective (with and without ZeRO-1), and the losses still agree;
#  - metrics carry data_wait_ms, imbalance, tokens and replica_tokens;
#  - bad data configurations stop before the first step with their specific message.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
"$MESHTRAIN" prep --from markov --docs 700 --doc-len 96 --doc-len-dist skewed --doc-len-min 4 --markov-vocab 16 \
  --val-fraction 0.1 --shard-tokens 4000 --out "$WORK/ds" >/dev/null
common=(data.source=hdf5 data.path="$WORK/ds" train.steps=30 train.eval_every=0 train.log_every=10 model.n_embd=32
        model.seq_len=32 train.batch_size=8 train.micro_batch=2 train.threads=1 run.tensorboard=false)
docs=(data.mode=documents data.batch_tokens=200)

# equivalence
"$MESHTRAIN" train "$CFG" "${common[@]}" "${docs[@]}" run.dir="$WORK/d1" >/dev/null
for p in static round_robin balanced dynamic; do
  mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" "${docs[@]}" parallel.dp=2 data.schedule=$p \
    run.dir="$WORK/d2-$p" >/dev/null
  compare_losses "$WORK/d1" "$WORK/d2-$p" 1e-5 || fail "documents: dp 2 $p differs from dp 1"
done
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" "${docs[@]}" parallel.dp=2 data.schedule=dynamic \
  data.debug_slow_rank=1 data.debug_slow_factor=3 run.dir="$WORK/d2-slow" >/dev/null
compare_losses "$WORK/d1" "$WORK/d2-slow" 1e-5 || fail "documents: dynamic with a slow rank differs from dp 1"
# dp 2 x tp 2: the tp ranks of a replica get the same documents (the split is computed from
# the world-wide exchange)
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" "${docs[@]}" parallel.dp=2 parallel.tp=2 data.schedule=dynamic \
  data.debug_slow_rank=0 run.dir="$WORK/d4-tp" >/dev/null
compare_losses "$WORK/d1" "$WORK/d4-tp" 1e-5 || fail "documents: dp 2 x tp 2 dynamic differs from dp 1"
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/c1" >/dev/null
for p in round_robin dynamic; do
  mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 data.schedule=$p run.dir="$WORK/c2-$p" >/dev/null
  compare_losses "$WORK/c1" "$WORK/c2-$p" 1e-5 || fail "concat: dp 2 $p differs from dp 1"
done
# a replica with no sample in a step (dynamic, 2 samples per step, one rank 30x slower) still
# joins every gradient bucket's collective, with and without ZeRO-1
zero=(train.batch_size=2 train.micro_batch=1 train.steps=12 parallel.dp=2 data.schedule=dynamic data.debug_slow_rank=1
      data.debug_slow_factor=30)
"$MESHTRAIN" train "$CFG" "${common[@]}" train.batch_size=2 train.micro_batch=1 train.steps=12 run.dir="$WORK/z1" >/dev/null
for z in 0 1; do
  mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" "${zero[@]}" parallel.zero=$z run.dir="$WORK/z2-$z" >/dev/null
  compare_losses "$WORK/z1" "$WORK/z2-$z" 1e-5 || fail "dynamic with an idle replica (zero=$z) differs from dp 1"
  python3 - "$WORK/z2-$z" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if '"loss"' in l]
idle = sum(1 for r in recs if 0 in r["replica_tokens"])
assert idle > 0, [r["replica_tokens"] for r in recs]
print(f"{idle} of {len(recs)} steps had an idle replica")
PY
done
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
recs = [json.loads(l) for l in open(w + "/d2-slow/metrics.jsonl") if '"loss"' in l]
for r in recs:
    assert r["data_wait_ms"] >= 0 and r["imbalance"] >= 1.0 and 0 < r["tokens"] <= 200, r
    assert sum(r["replica_tokens"]) == r["tokens"] and len(r["replica_tokens"]) == 2, r
one = [json.loads(l) for l in open(w + "/d1/metrics.jsonl") if '"loss"' in l]
assert [r["tokens"] for r in one] == [r["tokens"] for r in recs], "the global batches differ"
assert all(r["imbalance"] == 1.0 for r in one)
print("metrics: data_wait_ms, imbalance and tokens present; the same token counts at dp 1 and dp 2")
PY

# resume: bitwise-identical continuation from the step-20 checkpoint
resume_case() {  # resume_case NAME LAUNCH...
  local name=$1; shift
  "$@" "$MESHTRAIN" train "$CFG" "${common[@]}" "${docs[@]}" "${extra[@]}" checkpoint.every=10 run.dir="$WORK/$name-a" >/dev/null
  mkdir -p "$WORK/$name-b/checkpoints"
  cp -r "$WORK/$name-a/checkpoints/step_00000020" "$WORK/$name-b/checkpoints/"
  "$@" "$MESHTRAIN" train "$CFG" "${common[@]}" "${docs[@]}" "${extra[@]}" checkpoint.every=10 run.dir="$WORK/$name-b" \
    resume=auto >/dev/null
  diff <(step_losses "$WORK/$name-a" 20) <(step_losses "$WORK/$name-b" 20) || fail "$name: resumed losses differ"
  [ "$(step_losses "$WORK/$name-b" 0 | wc -l)" = 10 ] || fail "$name: the resumed run should log steps 20..29 only"
}
extra=(); resume_case r1
extra=(parallel.dp=2 data.schedule=balanced); resume_case r2 mpi -np 2
h5ls "$WORK/r1-a/checkpoints/step_00000020/shard_00000.h5" | grep -q "loader_state" || fail "no loader state in the shard"

# bad data configurations: specific messages, before any step
expect_bad() {  # expect_bad PATTERN OVERRIDES...
  local pat=$1; shift
  set +e; out=$("$MESHTRAIN" train "$CFG" "${common[@]}" "$@" run.dir="$WORK/bad" 2>&1); rc=$?; set -e
  [ $rc -ne 0 ] || fail "expected a failure for: $*"
  grep -q -- "$pat" <<< "$out" || fail "expected '$pat' for $*, got: $out"
  ! grep -q "step .*/30" <<< "$out" || fail "training started before the error: $out"
}
expect_bad "model.seq_len = 200 is longer than every document" "${docs[@]}" model.seq_len=200 data.batch_tokens=400
expect_bad "fewer than one global batch of data.batch_tokens = 90000000" data.mode=documents data.batch_tokens=90000000
expect_bad "fewer than one global batch of train.batch_size = 4000" train.batch_size=4000 train.micro_batch=4000
expect_bad "data.mode documents needs a dataset" data.source=markov data.mode=documents
expect_bad "no dataset manifest" data.path="$WORK/nowhere"
cp -r "$WORK/ds" "$WORK/ds-cut"
truncate -s 3000 "$WORK/ds-cut/train_00001.h5"
expect_bad "train_00001.h5" data.path="$WORK/ds-cut"
# a bit flip in the tokens of shard 1 under np 2 (the ranks share the token pass): the job stops
cp -r "$WORK/ds" "$WORK/ds-flip"
python3 - "$WORK/ds-flip/train_00001.h5" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) - 100] ^= 0x01; open(p, "wb").write(b)
PY
set +e; out=$(mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 data.path="$WORK/ds-flip" run.dir="$WORK/bad" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "train_00001.h5: shard checksum mismatch" <<< "$out" || fail "np 2: corrupt shard 1 not caught: $out"
cp -r "$WORK/ds" "$WORK/ds-miss"
rm "$WORK/ds-miss/train_00002.h5"
expect_bad "missing shard" data.path="$WORK/ds-miss"
# a dataset without a val split: eval falls back to the train split, and says so
"$MESHTRAIN" prep --from markov --docs 20 --doc-len 96 --markov-vocab 16 --val-fraction 0 --out "$WORK/noval" >/dev/null
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" data.path="$WORK/noval" train.steps=1 run.dir="$WORK/noval-run" 2>&1)
grep -q "warn: .*no val split.*train split" <<< "$out" || fail "no warning that eval uses the train split: $out"
echo "data loader e2e: equivalence, resume and bad inputs passed"
