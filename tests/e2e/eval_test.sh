#!/usr/bin/env bash
# `meshtrain eval` computes the number `train` reports: a tiny GPT and a tiny Llama train 20
# steps with a checkpoint at the end; eval of the run directory (its newest checkpoint) prints
# the final eval loss of summary.json (same eval set, same parameters), and so does eval at
# tp 2 under mpirun (within fp32 reassociation); perplexity is exp(loss); bad sources are
# clear errors.
source "$(dirname "$0")/lib.sh"
for arch in gpt2 llama; do
  CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
  extra=()
  [ "$arch" = llama ] && extra=(model.arch=llama model.n_kv_head=2 model.ffn_dim=96)
  "$MESHTRAIN" train "$CFG" "${extra[@]}" train.steps=20 train.eval_every=0 model.n_embd=64 model.seq_len=32 \
    checkpoint.every=20 run.dir="$WORK/$arch" > "$WORK/$arch.log" 2>&1 || { cat "$WORK/$arch.log"; fail "train $arch"; }
  "$MESHTRAIN" eval "$WORK/$arch" --json "$WORK/$arch-e1.json" | tee "$WORK/$arch-e1.txt"
  mpi -np 2 "$MESHTRAIN" eval "$WORK/$arch/checkpoints" --json "$WORK/$arch-e2.json" > "$WORK/$arch-e2.txt"
  cat "$WORK/$arch-e2.txt"
  python3 - "$WORK/$arch" "$WORK/$arch-e1.json" "$WORK/$arch-e2.json" <<'PY'
import json, math, sys
run, e1, e2 = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
ref = json.load(open(run + "/summary.json"))["final_eval_loss"]
print(f"train's final eval loss {ref!r}, eval tp1 {e1['loss']!r}, tp2 {e2['loss']!r}")
assert abs(e1["loss"] - ref) <= 1e-6 * abs(ref), "eval at tp 1 differs from train's eval"
assert abs(e2["loss"] - ref) <= 1e-5 * abs(ref), "eval at tp 2 differs from train's eval"
assert e2["tp"] == 2 and e1["tp"] == 1
assert abs(e1["perplexity"] - math.exp(e1["loss"])) <= 1e-9 * e1["perplexity"]
assert e1["tokens"] == 4 * 16 * 32, e1["tokens"]  # eval_batches x batch_size x seq_len
PY
done
# more batches: a different (larger) eval set, a different number
"$MESHTRAIN" eval "$WORK/gpt2" --batches 8 --json "$WORK/b8.json" > /dev/null
python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert a["tokens"]==8*16*32, a' "$WORK/b8.json"
# bad sources: named, with a hint
if "$MESHTRAIN" eval "$WORK/nope" > "$WORK/err.txt" 2>&1; then fail "eval of a missing path succeeded"; fi
grep -q "does not exist" "$WORK/err.txt" || { cat "$WORK/err.txt"; fail "no clear error for a missing path"; }
mkdir -p "$WORK/empty"
if "$MESHTRAIN" eval "$WORK/empty" > "$WORK/err.txt" 2>&1; then fail "eval of an empty directory succeeded"; fi
grep -q "neither a checkpoint" "$WORK/err.txt" || { cat "$WORK/err.txt"; fail "no clear error for an empty dir"; }
if "$MESHTRAIN" eval "$WORK/gpt2" parallel.tp=2 > "$WORK/err.txt" 2>&1; then fail "tp 2 on one rank succeeded"; fi
grep -q "parallel.tp = 2 but the job has 1 ranks" "$WORK/err.txt" || { cat "$WORK/err.txt"; fail "tp/rank mismatch"; }
echo "eval_test: ok"
