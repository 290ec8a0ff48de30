#!/usr/bin/env bash
# One run per run.dir: while a run trains, a second `train` on its run.dir (alone or under
# mpirun) is refused with a message naming the holder's host and PID, and changes nothing
# (no checkpoint moved aside, metrics.jsonl whole); once the holder dies (even by SIGKILL) the
# kernel releases the lock and resume=auto takes the run over. `prep --out` over an existing
# dataset is refused unless --overwrite, which removes the old dataset's files (no orphan
# shards beside the new manifest).
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(model.n_embd=32 model.seq_len=16 train.batch_size=8 train.micro_batch=4 train.threads=1
        run.tensorboard=false train.log_every=1000 train.eval_every=0 train.eval_batches=1 run.peak_gflops=1
        checkpoint.every=5)
valid_jsonl() { python3 -c 'import json,sys
d=open(sys.argv[1]).read(); assert d.endswith("\n"), "a partial last record"
[json.loads(l) for l in d.splitlines()]' "$1"; }

"$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=1000000 run.dir="$WORK/r" > "$WORK/a.log" 2>&1 & apid=$!
wait_steps "$WORK/r" 12  # (checkpoints of steps 5 and 10 written)
set +e; out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=3 run.dir="$WORK/r" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] || fail "a second run on a live run.dir was not refused: $out"
grep -q "run.dir $WORK/r is in use by another meshtrain run (host $(hostname) pid $apid)" <<< "$out" \
  || fail "the refusal does not name the holder (pid $apid): $out"
set +e; out=$(mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=3 run.dir="$WORK/r" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] || fail "a second run under mpirun was not refused: $out"
[ "$(grep -c "is in use by another meshtrain run" <<< "$out")" = 1 ] || fail "not refused once (rank 0): $out"
! grep -q "MPI_ABORT\|SIGTERM received" <<< "$out" || fail "the refusal did not end the job cleanly: $out"
kill -0 $apid 2>/dev/null || fail "the first run died: $(cat "$WORK/a.log")"
! ls "$WORK/r/checkpoints" | grep -q superseded || fail "the first run's checkpoints were moved aside"
valid_jsonl "$WORK/r/metrics.jsonl" || fail "metrics.jsonl is not whole records"
kill -9 $apid; wait $apid 2>/dev/null || true
steps=$(( $(wc -l < "$WORK/r/metrics.jsonl") + 2 ))
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=$steps run.dir="$WORK/r" resume=auto 2>&1) \
  || fail "the lock outlived its SIGKILLed holder: $out"
grep -q "resumed from .*checkpoints/step_" <<< "$out" || fail "did not resume the killed run: $out"
valid_jsonl "$WORK/r/metrics.jsonl" || fail "metrics.jsonl after the resume"

# prep --out over an existing dataset
prep=(prep --from markov --doc-len 64 --shard-tokens 300 --markov-vocab 16)
"$MESHTRAIN" "${prep[@]}" --docs 40 --out "$WORK/ds" > /dev/null
set +e; out=$("$MESHTRAIN" "${prep[@]}" --docs 8 --out "$WORK/ds" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] || fail "prep over an existing dataset was not refused: $out"
grep -q "already holds a dataset" <<< "$out" && grep -q -- "--overwrite" <<< "$out" || fail "refusal message: $out"
"$MESHTRAIN" inspect "$WORK/ds" > /dev/null || fail "the refused prep changed the dataset"
echo keep > "$WORK/ds/notes.txt"
"$MESHTRAIN" "${prep[@]}" --docs 8 --overwrite --out "$WORK/ds" > /dev/null || fail "prep --overwrite"
python3 - "$WORK/ds" <<'PY' || fail "orphan shards after prep --overwrite: $(ls "$WORK/ds")"
import json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
named = {s["file"] for split in m["splits"].values() for s in split}
on_disk = {f for f in os.listdir(d) if f.endswith(".h5")}
assert named == on_disk, (sorted(named), sorted(on_disk))
PY
[ -e "$WORK/ds/notes.txt" ] || fail "prep --overwrite removed a file that is not the dataset's"
"$MESHTRAIN" inspect "$WORK/ds" > /dev/null || fail "the overwritten dataset does not verify"
echo "run.dir lock and prep --out: refused, holder named, lock released on SIGKILL, no orphans"
