#!/usr/bin/env bash
# End to end, one process: 30 steps of a tiny GPT; the loss decreases; two runs with the same
# seed give bitwise-identical loss sequences; 1 and 2 threads give bitwise-identical losses;
# the run directory holds the resolved config, metrics.jsonl and summary.json.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=30 train.eval_every=10 train.log_every=10 model.n_embd=64 model.seq_len=32)
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/a" train.threads=2
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/b" train.threads=2
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/c" train.threads=1

for f in config.yaml metrics.jsonl summary.json; do [ -s "$WORK/a/$f" ] || fail "missing $f"; done
grep -q "^  steps: 30$" "$WORK/a/config.yaml" || fail "resolved config lacks the override"
[ "$(losses "$WORK/a" | wc -l)" = 30 ] || fail "expected 30 step records"
diff <(losses "$WORK/a") <(losses "$WORK/b") || fail "same seed, different losses"
diff <(losses "$WORK/a") <(losses "$WORK/c") || fail "1 vs 2 threads, different losses"
python3 - "$WORK/a" <<'PY'
import json, sys
d = sys.argv[1]
recs = [json.loads(l) for l in open(d + "/metrics.jsonl")]
steps = [r for r in recs if "loss" in r]
for k in ("step", "loss", "lr", "grad_norm", "ms", "tokens_per_s"):
    assert all(k in r for r in steps), f"metrics lack {k}"
assert any("eval_loss" in r for r in recs), "no eval records"
first = sum(r["loss"] for r in steps[:5]) / 5
last = sum(r["loss"] for r in steps[-5:]) / 5
print(f"loss first5 {first:.4f} last5 {last:.4f}")
assert last < first - 0.05, "loss did not decrease"
s = json.load(open(d + "/summary.json"))
for k in ("final_loss", "final_eval_loss", "data_entropy", "tokens_per_s", "wall_s"):
    assert k in s and s[k] is not None, f"summary lacks {k}"
assert s["final_eval_loss"] > s["data_entropy"] * 0.95, "eval loss below the entropy floor?"
PY
# a different seed gives a different run
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/d" train.seed=7 train.steps=3
[ "$(losses "$WORK/d" | head -1)" != "$(losses "$WORK/a" | head -1)" ] || fail "seed has no effect"
# early stopping: with an impossible min_delta, the second eval (step 10) stops the run
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/e" train.eval_every=5 train.early_stop_patience=1 \
  train.early_stop_min_delta=100
python3 - "$WORK/e" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
assert s["early_stopped"] is True and s["steps"] == 10, s
PY
# SGD with momentum trains too
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/s" optim.name=sgd optim.lr=0.05 train.steps=30
python3 - "$WORK/s" <<'PY'
import json, sys
l = [json.loads(x)["loss"] for x in open(sys.argv[1] + "/metrics.jsonl") if '"loss"' in x]
assert sum(l[-3:]) / 3 < sum(l[:3]) / 3 - 0.02, l
PY
