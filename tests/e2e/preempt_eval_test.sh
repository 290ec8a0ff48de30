#!/usr/bin/env bash
# A preemption signal during a (long) periodic eval: the eval is abandoned, the job writes its
# checkpoint and exits 0 at once instead of after the eval (which can outlast Slurm's grace
# period); resume=auto redoes that eval first, so the run has every eval record exactly once
# and its losses are bit-identical to an uninterrupted run's.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(model.n_embd=32 model.seq_len=16 train.batch_size=8 train.micro_batch=4 train.threads=1
        run.tensorboard=false train.log_every=100 run.peak_gflops=1 train.steps=8 checkpoint.every=0)
"$MESHTRAIN" train "$CFG" "${common[@]}" train.eval_every=0 run.dir="$WORK/ref" > /dev/null 2>&1

# the eval after step 4 reads 8000 batches (seconds); the signal comes as it starts
"$MESHTRAIN" train "$CFG" "${common[@]}" train.eval_every=4 train.eval_batches=8000 run.dir="$WORK/pre" \
  > "$WORK/pre.log" 2>&1 & pid=$!
for _ in $(seq 1 500); do grep -q '"step":3,' "$WORK/pre/metrics.jsonl" 2>/dev/null && break; sleep 0.02; done
sleep 0.3
kill -USR1 $pid; t0=$(date +%s.%N)
wait $pid || { cat "$WORK/pre.log"; fail "the preempted run failed"; }
took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)")
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 4 else 1)" "$took" || fail "exited ${took} s after the signal: it finished the eval first"
! grep -q '"eval_loss"' "$WORK/pre/metrics.jsonl" || fail "an eval record from the abandoned eval"
[ -e "$WORK/pre/checkpoints/step_00000004/COMPLETE" ] || fail "no checkpoint at step 4: $(cat "$WORK/pre.log")"

# resume: the eval at step 4 is redone (a small eval set now: only its record is checked)
"$MESHTRAIN" train "$CFG" "${common[@]}" train.eval_every=4 train.eval_batches=2 run.dir="$WORK/pre" resume=auto \
  > "$WORK/res.log" 2>&1 || { cat "$WORK/res.log"; fail "resume failed"; }
python3 - "$WORK/pre" <<'PY'
import json, sys
evals = [json.loads(l)["step"] for l in open(sys.argv[1] + "/metrics.jsonl") if "eval_loss" in l]
assert evals == [4, 8], f"eval records at steps {evals}, expected [4, 8]"
PY
diff <(step_losses "$WORK/ref") <(step_losses "$WORK/pre") || fail "the resumed run's losses differ"
echo "preemption during eval: exited in ${took} s, eval redone on resume"
