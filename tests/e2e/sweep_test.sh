#!/usr/bin/env bash
# meshtrain sweep: 4 trials of the tiny config (a 2 x 2 grid) with successive halving at steps
# 10 and 20 of 1000. The sweep is killed twice while its last trial trains past the rungs (a
# SIGTERM to its process group, then a SIGKILL of the sweep alone) and resumed each time by
# the same command: the trials already done are not run again (their records and launch
# counts are unchanged), the interrupted one resumes from its checkpoint (no step recorded
# twice, every step there once). sweep.csv, report.md and the plots agree with the runs' own
# records, and the halving kept the better half at each rung. Bad sweep files are clear errors.
# (data.debug_slow_factor makes the steps 3x slower, so that the kills land mid-trial.)
source "$(dirname "$0")/lib.sh"
cat > "$WORK/sweep.yaml" <<YAML
base: $MT_SOURCE_DIR/examples/tiny.yaml
dir: $WORK/sw
overrides: [train.steps=1000, model.n_embd=32, model.seq_len=16, train.batch_size=8, train.micro_batch=8,
            train.eval_every=0, train.eval_batches=1, train.log_every=100, train.threads=1, run.peak_gflops=1,
            run.tensorboard=false, data.debug_slow_rank=0, data.debug_slow_factor=3]
params:
  optim.lr: [3e-4, 3e-3]
  optim.warmup_steps: [0, 5]
halving: {rungs: [10, 20], eta: 2}
launch: {np: 1}
YAML
# trials_with STATUS: the trial directories of that status in sweep.json
trials_with() { python3 -c 'import json,sys
print(" ".join(t["dir"] for t in json.load(open(sys.argv[1]+"/sweep.json"))["trials"] if t["status"] == sys.argv[2]))' "$WORK/sw" "$1"; }
# the sweep in its own process group (job control on: a background job leads its own group);
# wait_final_trial R N: until the trial training past the rungs has resumed R times (the
# records of this start follow its checkpoint) and has N records; $FINAL is its name
start_sweep() { set -m; "$MESHTRAIN" sweep "$WORK/sweep.yaml" >> "$WORK/sweep.log" 2>&1 & SWEEP=$!; set +m; }
wait_final_trial() {
  for _ in $(seq 1 1500); do
    FINAL=$(python3 - "$WORK/sw" "$1" "$2" <<'PY' 2>/dev/null || true
import json, os, sys
d, r, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for t in json.load(open(d + "/sweep.json"))["trials"]:
    m, log = f"{d}/{t['dir']}/metrics.jsonl", f"{d}/logs/{t['dir']}.log"
    if t["status"] == "running" and len(t.get("rung_loss", {})) == 2 and os.path.exists(m) \
            and open(log).read().count("resumed from") >= r and sum(1 for _ in open(m)) >= n:
        print(t["dir"])
PY
)
    [ -n "$FINAL" ] && return 0; kill -0 $SWEEP 2>/dev/null || fail "the sweep ended early: $(tail -5 "$WORK/sweep.log")"
    sleep 0.02
  done; fail "the last trial made no progress: $(tail -5 "$WORK/sweep.log")"
}
start_sweep
wait_final_trial 2 60   # (resumed at rung 10 and at rung 20)
# the trials done so far: their records must not change from here on
done_trials=$(trials_with stopped)
[ "$(wc -w <<< "$done_trials")" = 3 ] || fail "expected 3 stopped trials before the kill, got '$done_trials'"
md5() { for t in $done_trials; do md5sum "$WORK/sw/$t/metrics.jsonl" "$WORK/sw/logs/$t.log"; done; }
before=$(md5)
kill -TERM -- -$SWEEP
set +e; wait $SWEEP; rc=$?; set -e
[ $rc -eq 143 ] || fail "interrupted sweep exited $rc, not 143: $(tail -5 "$WORK/sweep.log")"
grep -q "interrupted; state saved" "$WORK/sweep.log" || fail "no interruption message"
[ ! -e "$WORK/sw/$FINAL/summary.json" ] || fail "the trial finished before the kill: the test proves nothing"
[ "$(trials_with pending)" = "$FINAL" ] || fail "the interrupted trial $FINAL is not the one pending: $(trials_with pending)"
ls "$WORK/sw/$FINAL/checkpoints" | grep -q '^step_' || fail "no checkpoint of the interrupted trial"
# second start, killed outright (SIGKILL to the sweep alone): the kernel tells the trial's launcher
at=$(ls "$WORK/sw/$FINAL/checkpoints" | sed -n 's/^step_0*//p' | sort -n | tail -1)
[ "$at" -gt 20 ] || fail "the interrupted trial checkpointed at step $at, not past the rung"
start_sweep
wait_final_trial 3 $((at + 100))
kill -KILL $SWEEP; wait $SWEEP 2>/dev/null || true
# third start: to the end (it first waits for the killed sweep's trial to checkpoint and exit)
"$MESHTRAIN" sweep "$WORK/sweep.yaml" >> "$WORK/sweep.log" 2>&1 || fail "resumed sweep failed: $(tail -20 "$WORK/sweep.log")"
[ "$before" = "$(md5)" ] || fail "trials done before the kill were run again"
[ "$(grep -c 'resumed from' "$WORK/sw/logs/$FINAL.log")" -ge 3 ] \
  || fail "the interrupted trial did not resume from its checkpoints: $(grep -i resum "$WORK/sw/logs/$FINAL.log")"
for f in sweep.csv report.md sweep.json eval_loss_vs_optim.lr.svg eval_loss_vs_optim.warmup_steps.svg; do
  [ -s "$WORK/sw/$f" ] || fail "missing $f"
done
python3 - "$WORK/sw" "$FINAL" <<'PY'
import csv, json, sys, xml.dom.minidom
d, final = sys.argv[1], sys.argv[2]
rows = {r["trial"]: r for r in csv.DictReader(open(d + "/sweep.csv"))}
st = json.load(open(d + "/sweep.json"))
assert len(rows) == 4, rows
assert [(t["optim.lr"], t["optim.warmup_steps"]) for t in rows.values()] == [("3e-4", "0"), ("3e-4", "5"), ("3e-3", "0"), ("3e-3", "5")]
status = sorted((r["status"], r["steps"]) for r in rows.values())
assert status == [("finished", "1000"), ("stopped", "10"), ("stopped", "10"), ("stopped", "20")], status
starts = {t["dir"]: t["starts"] for t in st["trials"]}
for name, r in rows.items():
    recs = [json.loads(l) for l in open(f"{d}/{name}/metrics.jsonl")]
    steps = [x["step"] for x in recs if "loss" in x]
    assert steps == list(range(int(r["steps"]))), (name, steps[:5], len(steps))   # every step once
    evals = {x["step"]: x["eval_loss"] for x in recs if "eval_loss" in x}
    for rung in (10, 20):
        if rung <= int(r["steps"]) and rung < 1000:
            assert abs(float(r[f"eval_loss_at_{rung}"]) - evals[rung]) <= 1e-6, (name, rung, r, evals)
    assert abs(float(r["best_eval_loss"]) - min(evals.values())) <= 1e-6, (name, r, evals)
    if r["status"] == "finished":
        assert name == final, (name, final)
        s = json.load(open(f"{d}/{name}/summary.json"))
        assert abs(float(r["final_eval_loss"]) - s["final_eval_loss"]) <= 1e-6, (r, s)
        assert abs(float(r["tokens_per_s"]) - s["tokens_per_s"]) <= 0.1, (r, s)
        assert s["steps"] == 1000 and s["starts"] >= 5, s           # 2 rungs, the final level, 2 resumes
        assert starts[name] == s["starts"], (starts, s)
    else:
        assert not __import__("os").path.exists(f"{d}/{name}/summary.json"), name   # paused, never finished
        assert starts[name] == (1 if r["steps"] == "10" else 2), (name, starts)   # not run again
        assert float(r["final_eval_loss"]) == float(r[f"eval_loss_at_{r['steps']}"]), r
# halving kept the better half at each rung
for dec in st["decisions"]:
    loss = lambda i: float(rows[f"trial_{i:03d}"][f"eval_loss_at_{dec['step']}"])
    assert len(dec["kept"]) == max(1, (len(dec["kept"]) + len(dec["stopped"])) // 2), dec
    assert max(map(loss, dec["kept"])) <= min(map(loss, dec["stopped"])), dec
assert [x["step"] for x in st["decisions"]] == [10, 20], st["decisions"]
report = open(d + "/report.md").read()
assert f"**Best trial: {final}**" in report, report
cmd = next(t["command"] for t in st["trials"] if t["dir"] == final)
assert cmd in report and "train.stop_at_step=0" in cmd and f"run.dir={d}/{final}" in cmd, cmd
for key in ("optim.lr", "optim.warmup_steps"):
    svg = xml.dom.minidom.parse(f"{d}/eval_loss_vs_{key}.svg")
    assert len(svg.getElementsByTagName("circle")) >= 4, key     # a point per trial (+ the legend)
assert "(log scale)" in open(f"{d}/eval_loss_vs_optim.lr.svg").read()
print("sweep:", {n: (r["status"], r["steps"], r["final_eval_loss"]) for n, r in rows.items()})
PY
# pausing at the rungs and the two interruptions changed nothing: the same losses as one plain run
params=$(python3 -c 'import json,sys
print(" ".join(f"{k}={v}" for t in json.load(open(sys.argv[1]+"/sweep.json"))["trials"] if t["dir"] == sys.argv[2] for k, v in t["params"]))' "$WORK/sw" "$FINAL")
ref=(train.steps=1000 model.n_embd=32 model.seq_len=16 train.batch_size=8 train.micro_batch=8 train.eval_every=0
     train.eval_batches=1 train.log_every=500 train.threads=1 run.peak_gflops=1 run.tensorboard=false $params)
mpi -np 1 "$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" "${ref[@]}" run.dir="$WORK/ref" > /dev/null
diff <(step_losses "$WORK/ref") <(step_losses "$WORK/sw/$FINAL") > /dev/null \
  || fail "the trial's losses differ from an uninterrupted run's ($params)"
# train.stop_at_step alone: the run pauses there (an eval, a checkpoint, no summary.json); a
# start at the same stop does nothing; resume=auto without it ends as the plain run does
short=(train.steps=40 model.n_embd=32 model.seq_len=16 train.batch_size=8 train.micro_batch=8 train.eval_every=0
       train.eval_batches=1 train.threads=1 run.peak_gflops=1 run.tensorboard=false)
T="$MT_SOURCE_DIR/examples/tiny.yaml"
"$MESHTRAIN" train "$T" "${short[@]}" run.dir="$WORK/plain" > /dev/null
"$MESHTRAIN" train "$T" "${short[@]}" run.dir="$WORK/p" train.stop_at_step=15 > "$WORK/p.log" 2>&1
grep -q "paused at step 15 (train.stop_at_step = 15, train.steps = 40)" "$WORK/p.log" || fail "no pause: $(cat "$WORK/p.log")"
[ ! -e "$WORK/p/summary.json" ] && [ -d "$WORK/p/checkpoints/step_00000015" ] || fail "paused run: $(ls "$WORK/p" "$WORK/p/checkpoints")"
grep -q '"eval_loss":[^}]*"step":15}' "$WORK/p/metrics.jsonl" || fail "no eval at the stop step: $(tail -2 "$WORK/p/metrics.jsonl")"
m=$(md5sum < "$WORK/p/metrics.jsonl")
out=$("$MESHTRAIN" train "$T" "${short[@]}" run.dir="$WORK/p" train.stop_at_step=15 resume=auto 2>&1)
grep -q "already paused at step 15" <<< "$out" && [ "$m" = "$(md5sum < "$WORK/p/metrics.jsonl")" ] || fail "second start: $out"
"$MESHTRAIN" train "$T" "${short[@]}" run.dir="$WORK/p" resume=auto > /dev/null
diff <(step_losses "$WORK/plain") <(step_losses "$WORK/p") > /dev/null || fail "paused and resumed run differs"
[ -s "$WORK/p/summary.json" ] || fail "no summary after the resumed run"

# a rerun of a complete sweep runs nothing
logs=$(cat "$WORK"/sw/logs/*.log | md5sum)
"$MESHTRAIN" sweep "$WORK/sweep.yaml" > "$WORK/again.log" 2>&1 || fail "rerun of a complete sweep failed"
[ "$logs" = "$(cat "$WORK"/sw/logs/*.log | md5sum)" ] || fail "a complete sweep ran trials again"
grep -q "4 already done" "$WORK/again.log" || fail "rerun: $(cat "$WORK/again.log")"

# two trials at once (launch.parallel_trials), and a trial that fails (a non-finite gradient
# norm stops it) is recorded as failed while the sweep goes on
cat > "$WORK/par.yaml" <<YAML
base: $MT_SOURCE_DIR/examples/tiny.yaml
dir: $WORK/par
overrides: [train.steps=20, model.n_embd=32, model.seq_len=16, train.batch_size=8, train.eval_batches=1,
            train.threads=1, run.peak_gflops=1, run.tensorboard=false]
params:
  train.debug_nan_step: [-1, 5]
  optim.lr: [1e-3, 2e-3]
launch: {np: 1, parallel_trials: 2}
YAML
"$MESHTRAIN" sweep "$WORK/par.yaml" > "$WORK/par.log" 2>&1 || fail "sweep with a failing trial: $(cat "$WORK/par.log")"
python3 - "$WORK/par" "$WORK/par.log" <<'PY'
import csv, sys
d, log = sys.argv[1], open(sys.argv[2]).read().splitlines()
rows = list(csv.DictReader(open(d + "/sweep.csv")))
assert [r["status"] for r in rows] == ["finished", "finished", "failed", "failed"], rows
report = open(d + "/report.md").read()
assert "failed: exit 1 before step 20: non-finite gradient norm at step 5" in report, report
best = min(rows[:2], key=lambda r: float(r["final_eval_loss"]))["trial"]
assert f"**Best trial: {best}**" in report, report
# both of the first two trials were launched before either finished
at = lambda s: next(i for i, l in enumerate(log) if s in l)
assert at("trial_001 (train.debug_nan_step=-1 optim.lr=2e-3): to step 20") < at("finished at step 20"), log
PY

# bad input: clear errors naming the key and the file
bad() {  # bad NAME PATTERN...: the sweep file $WORK/NAME.yaml fails with each PATTERN in its message
  local name=$1; shift
  set +e; out=$("$MESHTRAIN" sweep "$WORK/$name.yaml" 2>&1); rc=$?; set -e
  [ $rc -ne 0 ] && grep -qF "$WORK/$name.yaml" <<< "$out" || fail "$name: rc $rc: $out"
  for p in "$@"; do grep -qF -- "$p" <<< "$out" || fail "$name: no '$p' in: $out"; done
}
printf 'base: %s\ndir: %s\nparams:\n  optim.lrr: [1e-3]\n' "$MT_SOURCE_DIR/examples/tiny.yaml" "$WORK/b1" > "$WORK/unknown.yaml"
bad unknown "unknown swept key 'optim.lrr'" "did you mean 'optim.lr'?" "'params.optim.lrr'"
printf 'base: %s\ndir: %s\nparams:\n  optim.lr: []\n' "$MT_SOURCE_DIR/examples/tiny.yaml" "$WORK/b2" > "$WORK/empty.yaml"
bad empty "empty list of values for 'optim.lr'" "'params.optim.lr'"
sed 's/3e-4, 3e-3/1e-4, 3e-3/' "$WORK/sweep.yaml" > "$WORK/other.yaml"   # the same dir, other trials
bad other "holds another sweep's trials (made from $WORK/sweep.yaml"
mkdir -p "$WORK/notasweep/trial_000"
printf 'base: %s\ndir: %s\nparams:\n  optim.lr: [1e-3]\n' "$MT_SOURCE_DIR/examples/tiny.yaml" "$WORK/notasweep" > "$WORK/foreign.yaml"
bad foreign "is not empty and has no sweep.json"
pgrep -f -- "$WORK/sw" >/dev/null && fail "processes left behind" || true
