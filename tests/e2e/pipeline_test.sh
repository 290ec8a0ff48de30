#!/usr/bin/env bash
# Pipeline parallelism end to end (parallel.pp, pp_schedule, pp_virtual, pp_layers):
#  1. 50 steps with gradient accumulation: per-step losses within 1e-5 of one process for pp 2
#     and pp 4 with gpipe, 1f1b and interleaved; dp 2 x pp 2; pp 2 x tp 2; Llama (tied and
#     untied head) at pp 2; and the 8-rank dp 2 x pp 2 x tp 2 with ZeRO-1 and recompute full;
#  2. the per-stage figures in metrics.jsonl: 1f1b holds at most pp - stage micro-batches in
#     flight (GPipe: all of them), with the activations to match;
#  3. SIGTERM at pp 2 -> checkpoint -> resume=auto: bitwise equal to the uninterrupted run;
#  4. resharding: a pp 2 checkpoint continues at pp 1, a pp 1 checkpoint at pp 4 (other
#     stage boundaries), continuations within 1e-5 relative;
#  5. a dead (SIGKILL) or stuck (SIGSTOP) middle stage of pp 4 ends every rank, naming it;
#  6. bad input: clear errors naming the keys, before anything is written.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=50 train.eval_every=0 train.log_every=10 model.n_layer=8 model.n_embd=32 model.seq_len=16
        model.vocab_size=50 data.markov_vocab=16 train.batch_size=8 train.micro_batch=1 train.threads=1 run.tensorboard=false)
abs_close() {  # abs_close A B: per-step losses within 1e-5 (absolute), same step count
  python3 - "$1" "$2" <<'PY'
import json, sys
def load(d): return [json.loads(l)["loss"] for l in open(d + "/metrics.jsonl") if '"loss"' in l]
a, b = load(sys.argv[1]), load(sys.argv[2])
assert len(a) == len(b) == 50, (len(a), len(b))
worst = max(abs(x - y) for x, y in zip(a, b))
print(f"{sys.argv[2].rsplit('/', 1)[-1]}: 50 steps, max |loss - np1| = {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
}
run() {  # run NAME NP OVERRIDES...
  local name=$1 np=$2; shift 2
  mpi -np "$np" "$MESHTRAIN" train "$CFG" "${common[@]}" "$@" run.dir="$WORK/$name" > "$WORK/$name.log" 2>&1 \
    || { tail -20 "$WORK/$name.log"; fail "$name failed"; }
}
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/np1" > /dev/null
"$MESHTRAIN" train "$CFG" "${common[@]}" model.arch=llama model.n_kv_head=2 run.dir="$WORK/llama1" > /dev/null
"$MESHTRAIN" train "$CFG" "${common[@]}" model.arch=llama model.n_kv_head=2 model.tie_embeddings=true \
  run.dir="$WORK/llamat1" > /dev/null
for s in gpipe 1f1b; do
  run pp2$s 2 parallel.pp=2 parallel.pp_schedule=$s
  run pp4$s 4 parallel.pp=4 parallel.pp_schedule=$s
done
run pp2int 2 parallel.pp=2 parallel.pp_schedule=interleaved parallel.pp_virtual=2
run pp4int 4 parallel.pp=4 parallel.pp_schedule=interleaved parallel.pp_virtual=2
run dp2pp2 4 parallel.pp=2 parallel.dp=2
run pp2tp2 4 parallel.pp=2 parallel.tp=2
run llpp2 2 parallel.pp=2 model.arch=llama model.n_kv_head=2
run lltpp2 2 parallel.pp=2 model.arch=llama model.n_kv_head=2 model.tie_embeddings=true parallel.pp_layers=[3,5]
run all8 8 parallel.pp=2 parallel.tp=2 parallel.dp=2 parallel.zero=1 train.recompute=full
for r in pp2gpipe pp4gpipe pp21f1b pp41f1b pp2int pp4int dp2pp2 pp2tp2 all8; do
  abs_close "$WORK/np1" "$WORK/$r" || fail "$r differs from np 1"
done
abs_close "$WORK/llama1" "$WORK/llpp2" || fail "llama pp 2 differs from np 1"
abs_close "$WORK/llamat1" "$WORK/lltpp2" || fail "llama (tied head) pp 2 differs from np 1"

# 2. activation slots: 1f1b keeps pp - stage micro-batches in flight, gpipe all 8
python3 - "$WORK" <<'PY' || fail "activation slots"
import json, sys
def last(run): return [json.loads(l) for l in open(f"{sys.argv[1]}/{run}/metrics.jsonl") if '"pp"' in l][-1]["pp"]
for run, want in (("pp41f1b", [4, 3, 2, 1]), ("pp4gpipe", [8, 8, 8, 8]), ("pp21f1b", [2, 1])):
    got = [s["slots"] for s in last(run)]
    acts = [round(s["act_mib"], 3) for s in last(run)]
    print(f"{run}: micro-batches in flight per stage {got}, activations (MiB) {acts}")
    assert got == want, (run, got, want)
PY

# 3. SIGTERM at pp 2, resume: bitwise
pre=(train.steps=300 train.eval_every=0 train.log_every=50 model.n_layer=4 model.n_embd=64 model.seq_len=64
     train.batch_size=16 train.micro_batch=4 train.threads=1 parallel.pp=2 run.tensorboard=false)
mpi -np 2 "$MESHTRAIN" train "$CFG" "${pre[@]}" run.dir="$WORK/full" > /dev/null
"$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np 2 "$MESHTRAIN" train "$CFG" "${pre[@]}" \
  run.dir="$WORK/pre" > "$WORK/pre.log" 2>&1 & mpid=$!
wait_steps "$WORK/pre" 20
pkill -TERM -P $mpid -f meshtrain
set +e; wait $mpid; rc=$?; set -e
[ $rc -eq 0 ] || { cat "$WORK/pre.log"; fail "preempted pp 2 job exited $rc"; }
grep -q "preempted after step" "$WORK/pre.log" || fail "no preemption (the run ended first?)"
mpi -np 2 "$MESHTRAIN" train "$CFG" "${pre[@]}" run.dir="$WORK/pre" resume=auto > /dev/null
diff <(step_losses "$WORK/full") <(step_losses "$WORK/pre") > /dev/null || fail "pp 2 resume differs from the uninterrupted run"
echo "pp 2: preempted at step $(grep -o 'preempted after step [0-9]*' "$WORK/pre.log" | grep -o '[0-9]*$'), resumed: bitwise equal"

# 4. resharding across pipeline sizes
rs=(train.steps=30 train.eval_every=0 train.log_every=10 model.n_layer=8 model.n_embd=32 model.seq_len=16
    model.vocab_size=50 data.markov_vocab=16 train.batch_size=8 train.micro_batch=2 train.threads=1
    checkpoint.every=10 checkpoint.keep=5 run.tensorboard=false)
from_to() {  # from_to SRC STEP NAME NP OVERRIDES...: resume SRC's step_STEP as NAME, compare with SRC
  local src=$1 step=$2 name=$3 np=$4; shift 4
  mkdir -p "$WORK/$name/checkpoints"; cp -r "$WORK/$src/checkpoints/step_000000$step" "$WORK/$name/checkpoints/"
  mpi -np "$np" "$MESHTRAIN" train "$CFG" "${rs[@]}" "$@" run.dir="$WORK/$name" resume=auto > "$WORK/$name.log" 2>&1 \
    || { tail "$WORK/$name.log"; fail "$name: resume failed"; }
  grep -q "resharded from" "$WORK/$name.log" || fail "$name: no resharding reported"
  python3 - "$WORK/$src" "$WORK/$name" "$step" <<'PY' || fail "$name: continuation differs"
import json, sys
def load(d): return {r["step"]: r["loss"] for r in map(json.loads, open(d + "/metrics.jsonl")) if "loss" in r}
a, b, first = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
steps = [s for s in sorted(a) if s > first]
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)
print(f"{sys.argv[2].rsplit('/', 1)[-1]}: steps {steps[0]}..{steps[-1]} max relative difference {worst:.2e}")
sys.exit(0 if steps and worst <= 1e-5 else 1)
PY
}
mpi -np 2 "$MESHTRAIN" train "$CFG" "${rs[@]}" parallel.pp=2 run.dir="$WORK/src2" > /dev/null
"$MESHTRAIN" train "$CFG" "${rs[@]}" run.dir="$WORK/src1" > /dev/null
from_to src2 10 to1 1
from_to src1 10 to4 4 parallel.pp=4 parallel.pp_layers=[1,3,3,1]
# export of a pp 2 checkpoint (each stage's shard; the tied embedding from the first stage)
# gives the pp 1 run's tensors
for r in src1 src2; do
  "$MESHTRAIN" export "$WORK/$r/checkpoints/step_00000010" --format hf --out "$WORK/hf_$r" > /dev/null
done
python3 - "$WORK" <<'PY' || fail "export of the pp 2 checkpoint differs from the pp 1 run's"
import sys
try:
    from safetensors.numpy import load_file
except ImportError:
    print("export: safetensors not installed, skipped"); sys.exit(0)
a, b = load_file(f"{sys.argv[1]}/hf_src2/model.safetensors"), load_file(f"{sys.argv[1]}/hf_src1/model.safetensors")
assert a.keys() == b.keys()
worst = max(float(abs(a[k] - b[k]).max()) for k in a)
print(f"export: {len(a)} tensors of the pp 2 checkpoint vs the pp 1 run's, max |difference| {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY

# 5. a middle stage dies (SIGKILL) or hangs (SIGSTOP) at pp 4: every rank ends, naming it
long=(train.steps=100000 train.eval_every=0 train.log_every=100 model.n_layer=4 model.n_embd=64 model.seq_len=64
      train.batch_size=16 train.micro_batch=4 train.threads=1 parallel.pp=4 parallel.timeout_s=4 run.tensorboard=false)
for sig in KILL STOP; do
  "$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none -np 4 "$MESHTRAIN" train "$CFG" "${long[@]}" \
    run.dir="$WORK/$sig" > "$WORK/$sig.log" 2>&1 & mpid=$!
  wait_steps "$WORK/$sig" 3
  victim=$(rank_pids "$WORK/$sig" | sed -n 2p)  # (the ranks start in order: stage 1)
  kill -$sig "$victim"
  gone_within 30 "$WORK/$sig" $mpid
  wait $mpid 2>/dev/null && fail "job with a $sig'ed stage exited 0" || true
done
grep -Eq "rank [0-9]+ .*(exited on signal 9|Killed)" "$WORK/KILL.log" || { tail -20 "$WORK/KILL.log"; fail "no message names the killed rank"; }
# (a neighbour waiting in the schedule names the stuck stage; ranks caught between steps, in a
# world collective, time out there, as without a pipeline)
pat="(send to|recv from) rank [0-9]+ .* on communicator 'pp' .* timed out after [0-9]+ s|timed out after [0-9]+ s waiting in [a-z_]+ #[0-9]+"
grep -Eq "$pat" "$WORK/STOP.log" || { tail -20 "$WORK/STOP.log"; fail "no timeout message"; }
echo "pp 4: a killed and a stopped middle stage ended every rank: $(grep -Eo "$pat" "$WORK/STOP.log" | head -1)"

# 6. bad input: the error names the key, and nothing is written
bad() {  # bad NP PATTERN OVERRIDES...
  local np=$1 pat=$2; shift 2
  set +e; out=$(mpi -np "$np" "$MESHTRAIN" train "$CFG" "${common[@]}" "$@" run.dir="$WORK/bad" 2>&1); set -e
  grep -q -- "$pat" <<< "$out" || { echo "$out" | tail -5; fail "no error naming $pat for $*"; }
  [ ! -e "$WORK/bad/metrics.jsonl" ] || fail "bad input $* wrote a run"
}
bad 3 "parallel.pp" parallel.pp=2
bad 2 "model.n_layer" parallel.pp=2 model.n_layer=1
bad 2 "parallel.pp_layers" parallel.pp=2 parallel.pp_layers=[3,3]
bad 4 "parallel.pp_virtual" parallel.pp=2 parallel.pp_schedule=interleaved parallel.pp_virtual=3
bad 4 "train.batch_size" parallel.pp=4 parallel.pp_schedule=1f1b train.batch_size=2
echo "bad input: every error names its key, nothing written"
