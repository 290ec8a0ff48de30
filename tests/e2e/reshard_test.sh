#!/usr/bin/env bash
# Resharding on load: a checkpoint written under dp 2 x tp 2 (with ZeRO-1) resumes under
# 1 x 1, dp 1 x tp 2, dp 4 x tp 1 (ZeRO-1) and dp 2 x tp 1, and one written by a single
# process resumes under dp 2 x tp 2; every continuation matches the uninterrupted run within
# 1e-5 relative. No offline conversion step.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=30 train.eval_every=0 train.log_every=10 model.n_embd=32 model.seq_len=16
        model.vocab_size=50 data.markov_vocab=16 train.batch_size=8 train.micro_batch=2
        train.threads=1 checkpoint.every=10 checkpoint.keep=5 parallel.bucket_mb=0.01)
compare_from() { python3 - "$1" "$2" "$3" <<'PY'
import json, sys
def load(d): return {r["step"]: r["loss"] for r in map(json.loads, open(d + "/metrics.jsonl")) if "loss" in r}
a, b, first = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
steps = [s for s in sorted(a) if s >= first]
assert steps and all(s in b for s in steps), f"missing steps in {sys.argv[2]}"
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)
print(f"{sys.argv[2]}: steps {steps[0]}..{steps[-1]} max relative difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
}
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 parallel.tp=2 parallel.zero=1 run.dir="$WORK/src"
resume_as() {  # resume_as NAME NP OVERRIDES...
  local name=$1 np=$2; shift 2
  mkdir -p "$WORK/$name/checkpoints"
  cp -r "$WORK/src/checkpoints/step_00000020" "$WORK/$name/checkpoints/"
  mpi -np "$np" "$MESHTRAIN" train "$CFG" "${common[@]}" "$@" run.dir="$WORK/$name" resume=auto > "$WORK/$name.log" 2>&1 \
    || { cat "$WORK/$name.log"; fail "$name: resume failed"; }
  grep -q "resharded from world 4 dp 2 tp 2 zero 1" "$WORK/$name.log" || fail "$name: no resharding reported"
  compare_from "$WORK/src" "$WORK/$name" 20 || fail "$name: continuation differs"
}
resume_as to1x1 1 parallel.dp=1 parallel.tp=1
resume_as to1x2 2 parallel.dp=1 parallel.tp=2
resume_as to4x1 4 parallel.dp=4 parallel.tp=1 parallel.zero=1
resume_as to2x1 2 parallel.dp=2 parallel.tp=1
# and the other way: one process -> dp 2 x tp 2
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/one"
mkdir -p "$WORK/up/checkpoints"; cp -r "$WORK/one/checkpoints/step_00000010" "$WORK/up/checkpoints/"
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 parallel.tp=2 run.dir="$WORK/up" resume=auto
compare_from "$WORK/one" "$WORK/up" 10 || fail "1x1 -> 2x2 continuation differs"
# the same layout with another parallel.bucket_mb: ZeRO-1 shards the optimizer state by
# bucket, so the shards' ranges differ; the state is resharded, not refused
mkdir -p "$WORK/bucket/checkpoints"; cp -r "$WORK/src/checkpoints/step_00000020" "$WORK/bucket/checkpoints/"
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 parallel.tp=2 parallel.zero=1 parallel.bucket_mb=0.004 \
  run.dir="$WORK/bucket" resume=auto > "$WORK/bucket.log" 2>&1 || { cat "$WORK/bucket.log"; fail "bucket_mb change: resume failed"; }
compare_from "$WORK/src" "$WORK/bucket" 20 || fail "bucket_mb change: continuation differs"
# without ZeRO-1 every dp replica holds the whole optimizer state of its tp slice: the
# resharded load reads one replica's shards (dp 2 x tp 2 -> dp 1 x tp 2 and 1 x 1)
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 parallel.tp=2 run.dir="$WORK/src0"
for to in "1 parallel.dp=1 parallel.tp=1" "2 parallel.dp=1 parallel.tp=2"; do
  set -- $to; np=$1; shift
  d="$WORK/from0-$np"; mkdir -p "$d/checkpoints"; cp -r "$WORK/src0/checkpoints/step_00000020" "$d/checkpoints/"
  mpi -np "$np" "$MESHTRAIN" train "$CFG" "${common[@]}" "$@" run.dir="$d" resume=auto > "$d.log" 2>&1 \
    || { cat "$d.log"; fail "zero-0 checkpoint -> np $np: resume failed"; }
  grep -q "resharded from world 4 dp 2 tp 2 zero 0" "$d.log" || fail "np $np: no resharding reported"
  compare_from "$WORK/src0" "$d" 20 || fail "zero-0 checkpoint -> np $np: continuation differs"
done
