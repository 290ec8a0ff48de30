#!/usr/bin/env bash
# Checkpoint and resume across simulated hosts: dp 2 x tp 2 trains 10 steps on 2 hosts x 2 slots
# (checkpoints every 5, written by world rank 0 and each rank's shard into the shared run
# directory); its step-5 checkpoint then resumes (a) across the 2 hosts launched with
# `--map-by node` (another launcher order: the world is reordered host by host, so every world
# rank reads the shard it wrote) and (b) on one host. Both end bit-identical to the
# uninterrupted multi-host run; the reordered run's own step-10 checkpoint is complete and
# verifies (`meshtrain inspect`).
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/simhosts.sh"
mh_require
MH_SLOTS=2 mh_up 2 > /dev/null
H1=$(mh_host 1) H2=$(mh_host 2)
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=10 train.eval_every=0 train.log_every=1 model.n_embd=32 model.seq_len=16
        train.batch_size=8 train.threads=1 checkpoint.every=5 parallel.dp=2 parallel.tp=2)

run() {  # run NAME LAUNCH... -- OVERRIDES...
  local name=$1; shift
  local launch=(); while [ "$1" != -- ]; do launch+=("$1"); shift; done; shift
  "${launch[@]}" "$MESHTRAIN" train "$CFG" "${common[@]}" "$@" run.dir="$WORK/$name" > "$WORK/$name.log" 2>&1 ||
    { tail -20 "$WORK/$name.log"; fail "$name: training failed"; }
}

run full mh_mpirun -np 4 --
[ -f "$WORK/full/checkpoints/step_00000005/COMPLETE" ] || fail "no step-5 checkpoint from the multi-host run"
[ "$(step_losses "$WORK/full" | wc -l)" = 10 ] || fail "full: expected 10 steps"

for case in hosts-node one-host; do
  mkdir -p "$WORK/$case/checkpoints"
  cp -r "$WORK/full/checkpoints/step_00000005" "$WORK/$case/checkpoints/"
done
run hosts-node mh_mpirun --map-by node -np 4 -- resume=auto
run one-host mpi -np 4 -- resume=auto
for case in hosts-node one-host; do
  grep -q "resumed from .*step_00000005" "$WORK/$case.log" || fail "$case: did not resume from step 5"
  [ "$(step_losses "$WORK/$case" | wc -l)" = 5 ] || fail "$case: should log steps 5..9 only"
  diff <(step_losses "$WORK/full" 5) <(step_losses "$WORK/$case") > /dev/null || {
    paste <(step_losses "$WORK/full" 5) <(step_losses "$WORK/$case"); fail "$case: resumed losses differ"; }
  echo "$case: steps 5..9 bit-identical to the uninterrupted 2-host run"
done
# the reordered run wrote its own checkpoint (world rank 0's manifest, every rank's shard): complete, checksums good
[ -f "$WORK/hosts-node/checkpoints/step_00000010/COMPLETE" ] || fail "hosts-node: no step-10 checkpoint"
"$MESHTRAIN" inspect "$WORK/hosts-node/checkpoints/step_00000010" > "$WORK/inspect.log" 2>&1 ||
  { cat "$WORK/inspect.log"; fail "hosts-node: the checkpoint written across hosts (--map-by node) does not verify"; }
python3 - "$WORK/hosts-node/launch.jsonl" "$H1" "$H2" <<'PY' || fail "launch.jsonl of the resumed run"
import json, sys
j = json.loads(open(sys.argv[1]).readlines()[-1]); p = j["placement"]
assert p["reordered"] and [r["host"] for r in p["ranks"]] == [sys.argv[2]] * 2 + [sys.argv[3]] * 2, p
assert [r["launcher_rank"] for r in p["ranks"]] == [0, 2, 1, 3], p
PY
echo "PASS"
