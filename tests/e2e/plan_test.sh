#!/usr/bin/env bash
# `meshtrain plan` against measured memory: for each layout below, a real CPU training run
# (2 steps) reports its peak device bytes per rank (summary.json "mem", the highest rank) and
# per step (metrics.jsonl "mem", categories summing to the peak); the planner's prediction for
# that exact layout (--json "configured") must be within 10% of the measured peak, and its
# params / grads / optimizer / comm figures match the measured categories within 2%.
# Data-driven: one line per layout (config, ranks, overrides); add ZeRO-2/3 lines once built.
# Also: the table marks a recommended layout, an undersized --gpu-mem says the configured
# layout does not fit, and a --gpu-mem nothing fits in exits non-zero naming keys to change.
source "$(dirname "$0")/lib.sh"
cd "$MT_SOURCE_DIR"
base=(model.n_layer=4 model.n_embd=128 model.seq_len=128 train.steps=2 train.batch_size=8 train.micro_batch=4
      train.eval_every=0 train.log_every=1 train.threads=1 parallel.bucket_mb=0.25)
# name | config | ranks | overrides
layouts="
np1-none          examples/tiny.yaml        1
np1-full          examples/tiny.yaml        1 train.recompute=full
np1-mb2           examples/tiny.yaml        1 train.micro_batch=2
dp2-zero0         examples/tiny.yaml        2
dp2-zero1         examples/tiny.yaml        2 parallel.zero=1
tp2               examples/tiny.yaml        2 parallel.tp=2
tp2-full          examples/tiny.yaml        2 parallel.tp=2 train.recompute=full
llama-dp2-zero1   examples/llama-tiny.yaml  2 parallel.zero=1
np1-selective     examples/tiny.yaml        1 train.recompute=selective
tp2-sp            examples/tiny.yaml        2 parallel.tp=2 parallel.sp=true
dp2-zero2         examples/tiny.yaml        2 parallel.zero=2
dp2-zero3         examples/tiny.yaml        2 parallel.zero=3
dp2tp2-zero3      examples/tiny.yaml        4 parallel.tp=2 parallel.zero=3 train.recompute=full
dp2tp2-z3-sp-sel  examples/tiny.yaml        4 parallel.tp=2 parallel.zero=3 parallel.sp=true train.recompute=selective
"
results="$WORK/results.txt"
: > "$results"
while read -r name cfg np rest; do
  [ -n "$name" ] || continue
  read -r -a extra <<< "$rest"
  run="$WORK/$name"
  if [ "$np" -eq 1 ]; then
    "$MESHTRAIN" train "$cfg" "${base[@]}" "${extra[@]}" run.dir="$run" < /dev/null > "$run.log" 2>&1 || { cat "$run.log"; fail "$name: train"; }
  else
    mpi -np "$np" "$MESHTRAIN" train "$cfg" "${base[@]}" "${extra[@]}" run.dir="$run" < /dev/null > "$run.log" 2>&1 ||
      { cat "$run.log"; fail "$name: train"; }
  fi
  "$MESHTRAIN" plan "$cfg" --gpus "$np" --gpu-mem 1000GB --json "${base[@]}" "${extra[@]}" > "$run.plan.json" 2> "$run.plan.err" ||
    { cat "$run.plan.err"; fail "$name: plan"; }
  python3 - "$name" "$run" >> "$results" <<'PY' || fail "$name: prediction vs measurement"
import json, sys
name, run = sys.argv[1], sys.argv[2]
summ = json.load(open(run + "/summary.json"))
mem = summ["mem"]
cats = ["params", "grads", "optimizer", "activations", "comm", "other"]
assert sum(mem[c] for c in cats) == mem["peak"], mem
assert max(mem["peak_per_rank"]) == mem["peak"], mem
steps = [json.loads(l) for l in open(run + "/metrics.jsonl") if '"loss"' in l]
assert len(steps) == 2, len(steps)
for s in steps:
    m = s["mem"]
    assert sum(m[c] for c in cats) == m["peak"] and m["peak"] > 0, m
    assert m["peak"] <= mem["peak"], (m, mem)
pred = json.load(open(run + ".plan.json"))["configured"]
assert pred["invalid"] == "", pred
pm = pred["mem"]
ratio = pm["total"] / mem["peak"]
line = f"{name:16s} measured peak {mem['peak']/2**20:8.3f} MiB  predicted {pm['total']/2**20:8.3f} MiB  ratio {ratio:.4f}"
for c in ["params", "grads", "optimizer", "comm"]:
    tol = 0.02 * max(pm[c], mem[c]) + 4096
    assert abs(pm[c] - mem[c]) <= tol, f"{name}: {c} predicted {pm[c]} measured {mem[c]}"
assert abs(ratio - 1) <= 0.10, line
print(line)
PY
done <<< "$layouts"
cat "$results"
[ "$(wc -l < "$results")" -ge 6 ] || fail "fewer than 6 layouts compared"
# the start-up memory line states the categories and the expected peak
grep -q "memory per rank: params .* grads .* optimizer state .* comm .* activations .* expected peak" "$WORK/dp2-zero1.log" ||
  fail "start-up memory line"

# the table: a recommendation; too small a GPU for the configured layout is said explicitly
out=$("$MESHTRAIN" plan examples/tiny.yaml --gpus 2 --gpu-mem 16MiB "${base[@]}")
echo "$out"
grep -q "<- recommended" <<< "$out" || fail "no recommended layout"
grep -q "configured layout .* does NOT fit" <<< "$out" || fail "configured layout not said not to fit"
set +e
bad=$("$MESHTRAIN" plan examples/tiny.yaml --gpus 2 --gpu-mem 1MiB "${base[@]}" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "nothing fits, yet exit 0"
echo "$bad" | grep -q "no layout of 2 GPU(s) fits --gpu-mem" || fail "no clear none-fits message: $bad"
echo "$bad" | grep -q "model.seq_len" || fail "none-fits message does not name keys"
set +e
bad=$("$MESHTRAIN" plan examples/tiny.yaml --gpus 4 --gpu-mem 80GiB --nodes 3 2>&1); rc=$?
set -e
[ $rc -ne 0 ] && echo "$bad" | grep -q -- "--nodes" || fail "bad --nodes accepted: $bad"
# an out-of-memory during a run (MT_CPU_MEMORY_LIMIT caps the CPU device like a GPU's memory):
# the job ends naming the measured and predicted memory and the plan command, which runs
set +e
out=$(MT_CPU_MEMORY_LIMIT=20 "$MESHTRAIN" train examples/tiny.yaml "${base[@]}" run.dir="$WORK/oom" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "a run past MT_CPU_MEMORY_LIMIT succeeded"
grep -q "out of memory: .*measured peak .* MiB; the memory model predicts a peak of .* MiB" <<< "$out" ||
  fail "no measured/predicted memory in the out-of-memory error: $out"
cmd=$(echo "$out" | grep -o "meshtrain plan .*" | head -1)
[ -n "$cmd" ] || fail "no plan command in the out-of-memory error: $out"
set +e; "$MESHTRAIN" ${cmd#meshtrain } > "$WORK/oom-plan.txt" 2>&1; prc=$?; set -e
[ $prc -eq 0 ] || [ $prc -eq 2 ] || { cat "$WORK/oom-plan.txt"; fail "the suggested plan command failed ($prc): $cmd"; }
grep -q "configured layout" "$WORK/oom-plan.txt" || fail "the suggested plan command printed no plan"
echo "out of memory: the error names measured and predicted memory; its plan command runs (exit $prc)"
echo PASS
