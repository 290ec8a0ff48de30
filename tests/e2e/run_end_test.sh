#!/usr/bin/env bash
# The end of a run: an early stop evaluates once (one eval record per step in metrics.jsonl);
# resuming a run that already ended (its checkpoint is at train.steps, or it early-stopped)
# trains nothing more and leaves metrics.jsonl and summary.json as they were; if the job died
# between its last checkpoint and summary.json, resume=auto finishes it: one final eval and a
# summary with the run's final loss. A preemption signal in the last step checkpoints and
# leaves the final eval to resume=auto.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(model.n_embd=32 model.seq_len=16 train.batch_size=8 train.micro_batch=4 train.threads=1
        run.tensorboard=false train.log_every=100 train.eval_batches=1 run.peak_gflops=1)
# check_evals RUN_DIR: no step has two eval records
check_evals() { python3 - "$1" <<'PY'
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1] + "/metrics.jsonl") if "eval_loss" in l]
assert len(steps) == len(set(steps)), f"duplicate eval records: {steps}"
PY
}
summary() { python3 -c 'import json,sys; s=json.load(open(sys.argv[1]+"/summary.json")); print(s["steps"], repr(s["final_loss"]), repr(s["final_eval_loss"]), s["early_stopped"])' "$1"; }

# early stop: no gain of 100 nats is ever reached, so the second eval stops the run
es=(train.steps=12 train.eval_every=2 train.early_stop_patience=1 train.early_stop_min_delta=100 checkpoint.every=5)
"$MESHTRAIN" train "$CFG" "${common[@]}" "${es[@]}" run.dir="$WORK/es" > "$WORK/es.log" 2>&1 || { cat "$WORK/es.log"; fail "early-stop run failed"; }
check_evals "$WORK/es" || fail "early stop evaluated the same step twice"
[ "$(summary "$WORK/es" | cut -d' ' -f1,4)" = "4 True" ] || fail "early stop: $(summary "$WORK/es")"
cp "$WORK/es/metrics.jsonl" "$WORK/es.metrics"; summary "$WORK/es" > "$WORK/es.summary"
"$MESHTRAIN" train "$CFG" "${common[@]}" "${es[@]}" run.dir="$WORK/es" resume=auto > "$WORK/es2.log" 2>&1 || { cat "$WORK/es2.log"; fail "resume of an early-stopped run failed"; }
cmp -s "$WORK/es.metrics" "$WORK/es/metrics.jsonl" || fail "resuming an early-stopped run changed metrics.jsonl"
diff "$WORK/es.summary" <(summary "$WORK/es") || fail "resuming an early-stopped run changed summary.json"

# a finished run (checkpoint at the last step), resumed: nothing changes
fin=(train.steps=4 train.eval_every=2 checkpoint.every=2)
"$MESHTRAIN" train "$CFG" "${common[@]}" "${fin[@]}" run.dir="$WORK/fin" > /dev/null 2>&1
cp "$WORK/fin/metrics.jsonl" "$WORK/fin.metrics"; summary "$WORK/fin" > "$WORK/fin.summary"
"$MESHTRAIN" train "$CFG" "${common[@]}" "${fin[@]}" run.dir="$WORK/fin" resume=auto > "$WORK/fin2.log" 2>&1 || { cat "$WORK/fin2.log"; fail "resume of a finished run failed"; }
grep -q "already complete" "$WORK/fin2.log" || fail "no 'already complete' message: $(cat "$WORK/fin2.log")"
cmp -s "$WORK/fin.metrics" "$WORK/fin/metrics.jsonl" || fail "resuming a finished run changed metrics.jsonl"
diff "$WORK/fin.summary" <(summary "$WORK/fin") || fail "resuming a finished run changed summary.json"
# ... killed after its last checkpoint, before summary.json: resume=auto finishes it
rm "$WORK/fin/summary.json"
"$MESHTRAIN" train "$CFG" "${common[@]}" "${fin[@]}" run.dir="$WORK/fin" resume=auto > "$WORK/fin3.log" 2>&1 || { cat "$WORK/fin3.log"; fail "finishing a run failed"; }
check_evals "$WORK/fin" || fail "the finishing eval duplicated the step-4 eval record"
diff "$WORK/fin.summary" <(summary "$WORK/fin") || fail "the finished summary differs from the uninterrupted run's"

# a preemption signal during the last step (checkpoint.every = 0): the final eval can outlast
# the grace period, so the job checkpoints and exits 0 without it; resume=auto finishes the run
# (the final eval and summary.json). (The only step is made slow: debug_slow_factor.)
last=(train.steps=1 train.eval_every=0 data.debug_slow_rank=0 data.debug_slow_factor=400)
"$MESHTRAIN" train "$CFG" "${common[@]}" "${last[@]}" run.dir="$WORK/last" > "$WORK/last.log" 2>&1 & pid=$!
for _ in $(seq 1 300); do grep -q "memory per rank" "$WORK/last.log" && break; sleep 0.02; done
kill -USR1 $pid; wait $pid || { cat "$WORK/last.log"; fail "a run signalled in its last step failed"; }
grep -q "SIGUSR1 received (preemption)" "$WORK/last.log" || fail "the signal came too late; the test proves nothing"
[ -e "$WORK/last/checkpoints/step_00000001/COMPLETE" ] || fail "no checkpoint after a signal in the last step: $(cat "$WORK/last.log")"
[ ! -e "$WORK/last/summary.json" ] || fail "the final eval ran despite the signal"
"$MESHTRAIN" train "$CFG" "${common[@]}" "${last[@]}" data.debug_slow_rank=-1 run.dir="$WORK/last" resume=auto > "$WORK/last2.log" 2>&1 \
  || { cat "$WORK/last2.log"; fail "finishing the signalled run failed"; }
[ -e "$WORK/last/summary.json" ] && check_evals "$WORK/last" || fail "resume=auto did not finish the signalled run"
echo "run end: early stop, resume of ended runs, a signal in the last step passed"
