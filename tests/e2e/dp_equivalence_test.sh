#!/usr/bin/env bash
# Data parallelism computes what one process computes: 50 steps with the same global batch at
# np 1 (dp 1), np 2 (dp 2) and np 4 (dp 4), with and without ZeRO-1, give the same per-step
# losses within 1e-5 relative, and after the run the parameters agree across ranks bit for bit.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=50 train.eval_every=0 train.log_every=10 model.n_embd=64 model.seq_len=32
        train.batch_size=16 train.micro_batch=4 train.threads=1 parallel.bucket_mb=0.05)
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/np1"
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 run.dir="$WORK/np2"
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=4 run.dir="$WORK/np4"
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 parallel.zero=1 run.dir="$WORK/np2z"
mpi -np 4 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=4 parallel.zero=1 run.dir="$WORK/np4z"
for r in np2 np4 np2z np4z; do
  compare_losses "$WORK/np1" "$WORK/$r" 1e-5 || fail "$r differs from np1"
done
python3 - "$WORK" <<'PY'
import json, sys
for r in ("np2", "np4", "np2z", "np4z"):
    s = json.load(open(f"{sys.argv[1]}/{r}/summary.json"))
    sums = s["param_checksums"]
    assert len(sums) == s["world"] and len(set(sums)) == 1, f"{r}: parameters differ across ranks: {sums}"
    print(f"{r}: {len(sums)} ranks hold identical parameters ({sums[0]})")
PY
