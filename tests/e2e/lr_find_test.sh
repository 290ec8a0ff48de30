#!/usr/bin/env bash
# meshtrain lr-find: the range test on examples/tiny.yaml suggests an lr (the rule printed
# beside it) and writes lr_find.csv / .json / .svg (log-lr axis at decades); training tiny at
# the suggested lr ends within 10% of the entropy floor. lr-find runs under mpirun (dp 2:
# the same losses, so the same suggestion). A config without steps to spare is refused with
# an error naming train.steps and the file.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
out=$("$MESHTRAIN" lr-find "$CFG" run.dir="$WORK/lrf" 2>&1) || fail "lr-find: $out"
grep -q "rule: the lr of the lowest smoothed loss" <<< "$out" || fail "no rule in the output: $out"
lr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["suggested_lr"])' "$WORK/lrf/lr_find.json")
grep -q "suggested optim.lr = " <<< "$out" || fail "no suggestion printed: $out"
python3 - "$WORK/lrf" <<'PY'
import csv, json, re, sys
d = sys.argv[1]
rows = list(csv.DictReader(open(f"{d}/lr_find.csv")))
j = json.load(open(f"{d}/lr_find.json"))
assert 10 <= len(rows) <= 100 and float(rows[0]["lr"]) == 1e-6, rows[:2]
lrs = [float(r["lr"]) for r in rows]
assert all(b > a for a, b in zip(lrs, lrs[1:])), "lr does not grow"
low = min(range(len(rows)), key=lambda i: float(rows[i]["smoothed_loss"]))
assert abs(j["suggested_lr"] - lrs[low] / 3) <= 1e-6 * j["suggested_lr"], (j, lrs[low])
svg = open(f"{d}/lr_find.svg").read()
ticks = re.findall(r"class='xtick'[^>]*>([^<]*)<", svg)
assert "1e-06" in ticks and "0.001" in ticks, ticks  # decades on the log lr axis
assert "suggested lr" in svg
print(f"lr-find: {len(rows)} steps, suggested lr {j['suggested_lr']:.4g} (lowest smoothed at {lrs[low]:.4g})")
PY
mpi -np 2 "$MESHTRAIN" lr-find "$CFG" parallel.dp=2 --steps 20 --out "$WORK/lrf2" >/dev/null 2>&1 || fail "lr-find at dp 2"
"$MESHTRAIN" lr-find "$CFG" --steps 20 --out "$WORK/lrf1" >/dev/null 2>&1
python3 - "$WORK" <<'PY'
import csv, sys
a, b = (list(csv.DictReader(open(f"{sys.argv[1]}/{r}/lr_find.csv"))) for r in ("lrf1", "lrf2"))
assert len(a) == len(b) == 20, (len(a), len(b))
worst = max(abs(float(x["loss"]) - float(y["loss"])) / float(x["loss"]) for x, y in zip(a, b))
assert worst < 1e-5, worst
print(f"dp 2 = dp 1 over 20 steps (max relative difference {worst:.1e})")
PY
"$MESHTRAIN" train "$CFG" optim.lr="$lr" run.dir="$WORK/tiny" >/dev/null 2>&1 || fail "training at lr $lr"
python3 - "$WORK/tiny/summary.json" "$lr" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
gap = s["final_eval_loss"] / s["data_entropy"] - 1
print(f"tiny at lr {float(sys.argv[2]):.4g}: eval loss {s['final_eval_loss']:.4f}, entropy floor {s['data_entropy']:.4f}, "
      f"gap {100 * gap:+.1f}%, eval_acc {s['final_eval_acc']:.4f}")
assert gap < 0.10, gap
PY
# bad input: too few steps to spare
set +e; bad=$("$MESHTRAIN" lr-find "$CFG" train.steps=5 run.dir="$WORK/bad" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] || fail "lr-find with train.steps=5 was accepted"
grep -q "train.steps" <<< "$bad" && grep -q "tiny.yaml" <<< "$bad" && grep -q "lr-find needs train.steps >= 10" <<< "$bad" \
  || fail "the error names neither the key nor the file: $bad"
set +e; bad=$("$MESHTRAIN" lr-find "$CFG" --steps 700 run.dir="$WORK/bad" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "outside \[10, train.steps = 600\]" <<< "$bad" || fail "--steps past train.steps: $bad"
[ ! -e "$WORK/bad" ] || fail "a refused lr-find created its directory"
echo PASS
