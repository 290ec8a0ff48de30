#!/usr/bin/env bash
# Checkpoints: a run resumed from a checkpoint continues with bitwise-identical losses (1 rank,
# and 2 ranks with and without ZeRO-1); a corrupted newest checkpoint is detected, named and
# skipped for the previous one; a run killed with SIGKILL resumes with resume=auto and ends
# exactly like the uninterrupted run; bad resumes are clear errors that overwrite nothing.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=30 train.eval_every=0 train.log_every=10 model.n_embd=32 model.seq_len=16
        train.batch_size=8 train.micro_batch=4 train.threads=1 checkpoint.every=10 checkpoint.keep=5)

run_case() {  # run_case NAME LAUNCH...
  local name=$1; shift
  "$@" "$MESHTRAIN" train "$CFG" "${common[@]}" "${extra[@]}" run.dir="$WORK/$name-a"
  [ -f "$WORK/$name-a/checkpoints/step_00000020/COMPLETE" ] || fail "$name: no step-20 checkpoint"
  mkdir -p "$WORK/$name-b/checkpoints"
  cp -r "$WORK/$name-a/checkpoints/step_00000020" "$WORK/$name-b/checkpoints/"
  "$@" "$MESHTRAIN" train "$CFG" "${common[@]}" "${extra[@]}" run.dir="$WORK/$name-b" resume=auto
  diff <(step_losses "$WORK/$name-a" 20) <(step_losses "$WORK/$name-b" 20) || fail "$name: resumed losses differ"
  [ "$(step_losses "$WORK/$name-b" 0 | wc -l)" = 10 ] || fail "$name: resumed run should log steps 20..29 only"
}
extra=(); run_case one
extra=(parallel.dp=2); run_case dp2 mpi -np 2
extra=(parallel.dp=2 parallel.zero=1); run_case zero mpi -np 2

# corrupted newest checkpoint: detected, named, the older one used
mkdir -p "$WORK/c/checkpoints"
cp -r "$WORK/one-a/checkpoints/step_00000010" "$WORK/one-a/checkpoints/step_00000020" "$WORK/c/checkpoints/"
shard="$WORK/c/checkpoints/step_00000020/shard_00000.h5"
python3 - "$shard" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x40; open(p, "wb").write(b)
PY
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/c" resume=auto 2>&1)
grep -q "skipping checkpoint .*step_00000020.*checksum mismatch" <<< "$out" || fail "corruption not reported: $out"
grep -q "resumed from .*step_00000010" <<< "$out" || fail "did not fall back to step 10"
diff <(step_losses "$WORK/one-a" 10) <(step_losses "$WORK/c" 10) || fail "fallback resume differs"
# truncated shard: same (with none usable, resume=auto is an error: cli_errors_test)
mkdir -p "$WORK/t/checkpoints"
cp -r "$WORK/one-a/checkpoints/step_00000020" "$WORK/one-a/checkpoints/step_00000030" "$WORK/t/checkpoints/"
truncate -s 100 "$WORK/t/checkpoints/step_00000030/shard_00000.h5"
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/t" resume=auto 2>&1)
grep -q "skipping checkpoint .*step_00000030" <<< "$out" || fail "truncation not reported"
grep -q "resumed from .*step_00000020" <<< "$out" || fail "no fallback to step 20: $out"

# a bit-flipped shard of rank 1 of 2 (the ranks share the verification): named, skipped
mkdir -p "$WORK/c2/checkpoints"
cp -r "$WORK/dp2-a/checkpoints/step_00000010" "$WORK/dp2-a/checkpoints/step_00000020" "$WORK/c2/checkpoints/"
python3 - "$WORK/c2/checkpoints/step_00000020/shard_00001.h5" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x40; open(p, "wb").write(b)
PY
out=$(mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 run.dir="$WORK/c2" resume=auto 2>&1)
grep -q "rank 0/2.*skipping checkpoint .*step_00000020.*shard_00001.h5: checksum mismatch" <<< "$out" || fail "rank 1's corrupt shard not reported: $out"
grep -q "resumed from .*step_00000010" <<< "$out" || fail "np 2: did not fall back to step 10"
diff <(step_losses "$WORK/dp2-a" 10) <(step_losses "$WORK/c2" 10) || fail "np 2 fallback resume differs"

# SIGKILL mid-run, then resume=auto: the loss stream ends exactly like the uninterrupted run
long=(train.steps=120 checkpoint.every=5)
"$MESHTRAIN" train "$CFG" "${common[@]}" "${long[@]}" run.dir="$WORK/full" >/dev/null
"$MESHTRAIN" train "$CFG" "${common[@]}" "${long[@]}" run.dir="$WORK/killed" >/dev/null & pid=$!
for _ in $(seq 1 400); do [ -e "$WORK/killed/checkpoints/step_00000015/COMPLETE" ] && break; sleep 0.02; done
kill -9 $pid; wait $pid 2>/dev/null || true
[ ! -e "$WORK/killed/summary.json" ] || fail "the run finished before it was killed; the test proves nothing"
"$MESHTRAIN" train "$CFG" "${common[@]}" "${long[@]}" run.dir="$WORK/killed" resume=auto >/dev/null
diff <(step_losses "$WORK/full" 0) <(step_losses "$WORK/killed" 0) || fail "killed+resumed run differs"
# summary.json covers the whole run: every step's tokens once (the killed process's work after
# its checkpoint is lost, not counted), two processes, this process's own figures apart
python3 - "$WORK/killed" "$WORK/full" <<'PY' || fail "the resumed run's summary does not cover the whole run"
import json, sys
k, f = (json.load(open(d + "/summary.json")) for d in sys.argv[1:])
resumed = 120 - k["this_process"]["steps"]  # the checkpoint it resumed from
ms = sum(json.loads(l)["ms"] for l in open(sys.argv[1] + "/metrics.jsonl") if '"loss"' in l)
assert k["tokens"] == f["tokens"] == 120 * 8 * 16, (k, f)
assert k["starts"] == 2 and f["starts"] == 1, (k, f)
assert resumed % 5 == 0 and 15 <= resumed < 120, (k, resumed)
assert f["this_process"]["steps"] == 120 and f["tokens_per_s"] == f["this_process"]["tokens_per_s"], f
assert f["wall_s"] == f["this_process"]["wall_s"], f  # one start: the run is this process
# metrics.jsonl was cut back to the checkpoint: its step times are the whole run's
assert abs(k["tokens"] / (ms / 1000) - k["tokens_per_s"]) <= 1e-4 * k["tokens_per_s"], (k, ms)
assert k["wall_s"] > k["this_process"]["wall_s"], k
PY

# bad resumes: different model size, missing directory, newer format; nothing overwritten
before=$(ls "$WORK/one-a/checkpoints")
set +e
o1=$("$MESHTRAIN" train "$CFG" "${common[@]}" model.n_embd=64 run.dir="$WORK/one-a" resume=auto 2>&1); r1=$?
o2=$("$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/x" resume="$WORK/nowhere" 2>&1); r2=$?
cp -r "$WORK/one-a/checkpoints/step_00000030" "$WORK/newer"
sed -i 's/"format_version": 1/"format_version": 99/' "$WORK/newer/manifest.json"
o3=$("$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/y" resume="$WORK/newer" 2>&1); r3=$?
set -e
[ $r1 -ne 0 ] && echo "$o1" | grep -q "model.n_embd = 32, this run has 64" || fail "size mismatch: $o1"
[ $r2 -ne 0 ] && echo "$o2" | grep -q "nowhere" || fail "missing dir: $o2"
[ $r3 -ne 0 ] && echo "$o3" | grep -q "format version 99" || fail "newer format: $o3"
[ "$(ls "$WORK/one-a/checkpoints")" = "$before" ] || fail "a failed resume changed the checkpoints"

# extending a run (train.steps 30 -> 40) is allowed, but its learning-rate schedule changes: said
mkdir -p "$WORK/ext/checkpoints"; cp -r "$WORK/one-a/checkpoints/step_00000030" "$WORK/ext/checkpoints/"
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=40 run.dir="$WORK/ext" resume=auto 2>&1)
grep -q "different learning-rate schedule.*train.steps 30 -> 40" <<< "$out" || fail "no schedule warning: $out"
[ "$(step_losses "$WORK/ext" 30 | wc -l)" = 10 ] || fail "the extended run should train steps 30..39"

# numerical faults: skip drops the update and counts it; stop exits non-zero keeping the last
# good checkpoint
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/skip" train.nonfinite=skip train.debug_nan_step=12
python3 - "$WORK/skip" "$WORK/one-a" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
assert s["skipped_steps"] == 1, s
recs = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if '"loss"' in l]
ref = [json.loads(l) for l in open(sys.argv[2] + "/metrics.jsonl") if '"loss"' in l]
assert [r["skipped"] for r in recs].count(True) == 1 and recs[12]["skipped"]
assert recs[12]["loss"] == ref[12]["loss"] and recs[13]["loss"] != ref[13]["loss"]
PY
# ... and the count survives a resume (the skip at step 12 is in the step-20 checkpoint)
mkdir -p "$WORK/skip-b/checkpoints"; cp -r "$WORK/skip/checkpoints/step_00000020" "$WORK/skip-b/checkpoints/"
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/skip-b" train.nonfinite=skip train.debug_nan_step=12 resume=auto >/dev/null
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["skipped_steps"] == 1, s' "$WORK/skip-b/summary.json" \
  || fail "the resumed run's summary lost the skipped step"
set +e
out=$("$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/stop" train.debug_nan_step=12 2>&1); rc=$?
set -e
[ $rc -ne 0 ] && grep -q "non-finite gradient norm at step 12" <<< "$out" || fail "stop policy: $out"
[ -f "$WORK/stop/checkpoints/step_00000010/COMPLETE" ] || fail "stop policy lost the last good checkpoint"

# meshtrain inspect: lists, verifies, and names the corrupt shard (exit 1)
"$MESHTRAIN" inspect "$WORK/one-a" | grep -q "all shards verify" || fail "inspect of a good run"
cp -r "$WORK/one-a/checkpoints/step_00000030" "$WORK/bad30"
truncate -s 1000 "$WORK/bad30/shard_00000.h5"
set +e; out=$("$MESHTRAIN" inspect "$WORK/bad30" 2>&1); rc=$?; set -e
[ $rc -eq 1 ] && grep -q "FAILED: .*shard_00000.h5: checksum mismatch" <<< "$out" || fail "inspect of a corrupt shard: $out"
