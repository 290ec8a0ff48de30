#!/usr/bin/env bash
# Eval accuracy (eval_acc, eval_acc_top5) is counted on vocabulary-sliced logits without
# gathering them: the hit counts at tp 2 (with and without sequence parallelism), dp 2 and
# pp 2 (and Llama at tp 2) equal np 1's exactly, at every eval. With padded documents
# (data.mode=documents) the masked positions are left out exactly as the loss leaves them
# out (`meshtrain eval` counts as many targets as the loss); summary.json, TensorBoard and
# `meshtrain eval` report the same figures. `meshtrain plot` overlays runs with accuracy
# charts and round ticks.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=20 train.eval_every=10 train.log_every=10 model.n_embd=32 model.seq_len=32
        model.vocab_size=50 data.markov_vocab=16 train.batch_size=8 train.micro_batch=4 train.threads=1)
"$MESHTRAIN" train "$CFG" "${common[@]}" run.dir="$WORK/np1" > "$WORK/np1.log" 2>&1
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 run.dir="$WORK/tp2" >/dev/null 2>&1
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.dp=2 run.dir="$WORK/dp2" >/dev/null 2>&1
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.pp=2 run.dir="$WORK/pp2" >/dev/null 2>&1
mpi -np 2 "$MESHTRAIN" train "$CFG" "${common[@]}" parallel.tp=2 parallel.sp=true run.dir="$WORK/sp2" >/dev/null 2>&1
LCFG="$MT_SOURCE_DIR/examples/llama-tiny.yaml"
"$MESHTRAIN" train "$LCFG" "${common[@]}" run.dir="$WORK/l1" >/dev/null 2>&1
mpi -np 2 "$MESHTRAIN" train "$LCFG" "${common[@]}" parallel.tp=2 run.dir="$WORK/ltp2" >/dev/null 2>&1
grep -q "eval_acc 0\.[0-9]* | eval_acc_top5 0\." "$WORK/np1.log" || fail "no accuracy on the console eval line"
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
def evals(r):
    return [(j["step"], j["eval_targets"], j["eval_top1_hits"], j["eval_top5_hits"], j["eval_acc"], j["eval_acc_top5"])
            for j in map(json.loads, open(f"{w}/{r}/metrics.jsonl")) if "eval_loss" in j]
for ref, runs in (("np1", ("tp2", "dp2", "pp2", "sp2")), ("l1", ("ltp2",))):
    a = evals(ref)
    assert len(a) == 2 and all(e[1] == 8 * 32 * 4 for e in a), a  # 4 eval batches of 8 x 32 targets
    assert all(0 < e[2] <= e[3] < e[1] and e[4] == e[2] / e[1] for e in a), a
    for r in runs:
        assert evals(r) == a, f"{r}: {evals(r)} != {ref}: {a}"
    s = json.load(open(f"{w}/{ref}/summary.json"))
    assert s["final_eval_acc"] == a[-1][4] and s["final_eval_acc_top5"] == a[-1][5], s
    assert s["best_eval_acc"] == max(e[4] for e in a), s
    print(f"{ref} = {', '.join(runs)}: (step, targets, top1, top5) {[e[:4] for e in a]}")
PY
ls "$WORK"/np1/tb/events.* >/dev/null || fail "no TensorBoard events"
grep -aq "eval/acc_top5" "$WORK"/np1/tb/events.* || fail "no eval/acc_top5 TensorBoard tag"

# plot: several runs overlay (a legend of their directory names), accuracy beside loss and lr,
# round tick values
"$MESHTRAIN" plot "$WORK/np1" "$WORK/tp2" "$WORK/l1" --out "$WORK/plots" > "$WORK/plot.txt"
grep -q "accuracy.svg (3 runs)" "$WORK/plot.txt" || fail "plot: $(cat "$WORK/plot.txt")"
python3 - "$WORK/plots" <<'PY'
import re, sys
for name in ("loss", "lr", "accuracy"):
    svg = open(f"{sys.argv[1]}/{name}.svg").read()
    legend = re.findall(r"class='legend'[^>]*>([^<]*)<", svg)
    lines = re.findall(r"<polyline class='series' data-name='([^']*)'[^>]*points='([^']*)'", svg)
    for axis in ("xtick", "ytick"):
        ticks = [float(t) for t in re.findall(rf"class='{axis}'[^>]*>([^<]*)<", svg)]
        steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
        assert len(ticks) >= 3 and len(steps) == 1, (name, axis, ticks)
        m = f"{steps.pop():e}".split("e")[0]
        assert float(m) in (1.0, 2.0, 5.0), (name, axis, ticks)  # 1, 2 or 5 x 10^k
    if name == "accuracy":
        assert legend == [f"{r} eval acc (top-{k})" for r in ("np1", "tp2", "l1") for k in (1, 5)], legend
        assert all(len(p.split()) == 2 for _, p in lines), lines  # the two evals of each run
    print(f"{name}.svg: {len(lines)} curves, legend {legend[:3]}...")
PY
set +e; out=$("$MESHTRAIN" plot "$WORK/np1" --out "$WORK/png" --png 2>&1); rc=$?; set -e
if command -v rsvg-convert >/dev/null; then
  [ $rc -eq 0 ] && [ -s "$WORK/png/accuracy.png" ] || fail "plot --png: $out"
else
  [ $rc -ne 0 ] && grep -q "needs rsvg-convert" <<< "$out" && [ -s "$WORK/png/accuracy.svg" ] || fail "plot --png without rsvg-convert: $out"
fi

# documents mode: rows padded past each document's end carry no target
mkdir -p "$WORK/docs"
python3 - "$WORK/docs" <<'PY'
import random, struct, sys
rng = random.Random(3)
for i in range(300):
    n = rng.randrange(8, 60) if i % 10 else 70  # some longer than seq_len 32
    open(f"{sys.argv[1]}/d{i:05d}.bin", "wb").write(struct.pack(f"<{n}H", *[rng.randrange(16) for _ in range(n)]))
PY
"$MESHTRAIN" prep --from tokens --raw-dtype uint16 --vocab 16 "$WORK"/docs/d*.bin --val-fraction 0.2 --out "$WORK/ds" >/dev/null
docs=(data.source=hdf5 data.path="$WORK/ds" data.mode=documents model.vocab_size=50 model.n_embd=32 model.seq_len=32
      train.batch_size=8 train.micro_batch=4 train.threads=1 train.steps=10 train.eval_every=0 checkpoint.every=10)
"$MESHTRAIN" train "$CFG" "${docs[@]}" run.dir="$WORK/d1" >/dev/null 2>&1
mpi -np 2 "$MESHTRAIN" train "$CFG" "${docs[@]}" parallel.tp=2 run.dir="$WORK/dtp2" >/dev/null 2>&1
"$MESHTRAIN" eval "$WORK/d1" --json "$WORK/d1.json" > "$WORK/eval.txt"
grep -q " acc 0\.[0-9]*  acc_top5 0\." "$WORK/eval.txt" || fail "meshtrain eval prints no accuracy: $(cat "$WORK/eval.txt")"
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
last = lambda r: [j for j in map(json.loads, open(f"{w}/{r}/metrics.jsonl")) if "eval_loss" in j][-1]
a, b, e = last("d1"), last("dtp2"), json.load(open(f"{w}/d1.json"))
keys = ("eval_targets", "eval_top1_hits", "eval_top5_hits")
assert [a[k] for k in keys] == [b[k] for k in keys], (a, b)
assert 0 < a["eval_targets"] < 8 * 32 * 4, a  # padding left out
# meshtrain eval: the same batches; as many targets as the loss counted
assert e["tokens"] == a["eval_targets"] and e["top1_hits"] == a["eval_top1_hits"], (e, a)
assert e["eval_acc"] == a["eval_acc"] and e["eval_acc_top5"] == a["eval_acc_top5"], (e, a)
print(f"documents mode: {[a[k] for k in keys]} at np 1 and tp 2; meshtrain eval agrees")
PY
echo "PASS"
