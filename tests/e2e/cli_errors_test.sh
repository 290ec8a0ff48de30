#!/usr/bin/env bash
# The binary reports bad input clearly, exits non-zero, and does not create a run directory.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
expect_error() {  # expect_error PATTERN ARGS...
  local pat=$1; shift
  set +e; out=$("$MESHTRAIN" "$@" 2>&1); rc=$?; set -e
  [ $rc -ne 0 ] || fail "exit 0 for: $*"
  grep -q -- "$pat" <<< "$out" || fail "no '$pat' in output of '$*': $out"
}
expect_error "did you mean 'train.steps'" train "$CFG" train.step=5 run.dir="$WORK/x"
expect_error "cannot open the config file" train "$WORK/none.yaml"
printf 'model:\n  n_embd: 100\n  n_head: 3\n' > "$WORK/bad.yaml"
expect_error "bad.yaml:2" train "$WORK/bad.yaml" run.dir="$WORK/x"
expect_error "not divisible by train.micro_batch" train "$CFG" train.batch_size=10 train.micro_batch=4 run.dir="$WORK/x"
[ ! -e "$WORK/x" ] || fail "a failed start created the run directory"
# (to a file: grep -q would close the pipe early, and pipefail would see SIGPIPE once the help
# is longer than one stdio buffer)
"$MESHTRAIN" train --help > "$WORK/help.txt"
grep -q "train.steps" "$WORK/help.txt" && grep -q "data.schedule" "$WORK/help.txt" || fail "train --help lacks the config keys"
"$MESHTRAIN" bench step --help >/dev/null
# a checkpoint directory that cannot be written fails before the first step, not at the
# first checkpoint (or preemption) after hours of training; it names the key
touch "$WORK/afile"
tiny=(model.n_embd=32 model.seq_len=16 train.batch_size=8 train.micro_batch=4 train.threads=1 train.steps=3)
expect_error "checkpoint.dir" train "$CFG" "${tiny[@]}" checkpoint.every=2 checkpoint.dir="$WORK/afile/ck" run.dir="$WORK/y"
! grep -q "step .*/3" <<< "$out" || fail "training started before the checkpoint directory error: $out"
expect_error "run.dir" train "$CFG" "${tiny[@]}" run.dir="$WORK/afile/run"
# resume=PATH naming a run directory or its checkpoints/ (not one checkpoint) says which to pass;
# a checkpoint directory without its COMPLETE marker is refused as incomplete
"$MESHTRAIN" train "$CFG" "${tiny[@]}" checkpoint.every=2 run.dir="$WORK/ok" > /dev/null 2>&1
expect_error "resume=$WORK/ok/checkpoints/step_00000003" train "$CFG" "${tiny[@]}" run.dir="$WORK/z" resume="$WORK/ok"
expect_error "resume=$WORK/ok/checkpoints/step_00000003" train "$CFG" "${tiny[@]}" run.dir="$WORK/z" resume="$WORK/ok/checkpoints"
! grep -q "(rank 0) (rank 0)" <<< "$out" || fail "the rank is named twice: $out"
cp -r "$WORK/ok/checkpoints/step_00000002" "$WORK/half"; rm "$WORK/half/COMPLETE"
expect_error "COMPLETE" train "$CFG" "${tiny[@]}" run.dir="$WORK/z" resume="$WORK/half"

# --- hardening (issue #21): inputs that used to exit 0 having trained or written something else
expect_error "is a directory, not a config file" train "$WORK" "${tiny[@]}" run.dir="$WORK/h1"
printf '# only a comment\n\n' > "$WORK/empty.yaml"
expect_error "empty.yaml: the config file is empty" train "$WORK/empty.yaml" "${tiny[@]}" run.dir="$WORK/h1"
printf 'train:\n  steps: 3\nmodel:\n  n_layer: 2\n  n_layer: 3\n' > "$WORK/dup.yaml"
expect_error "dup.yaml:5: 'model.n_layer': duplicate key 'model.n_layer': first on line 4, again on line 5" \
  train "$WORK/dup.yaml" "${tiny[@]}" run.dir="$WORK/h1"
expect_error "data.source is markov" train "$CFG" "${tiny[@]}" data.source=markov data.path="$WORK/ds" run.dir="$WORK/h1"
# data.path alone means the dataset (here: none there), not the Markov language
expect_error "$WORK/nowhere/manifest.json: no dataset manifest" train "$CFG" "${tiny[@]}" data.path="$WORK/nowhere" run.dir="$WORK/h1"
[ ! -e "$WORK/h1" ] || fail "a refused config created the run directory"
expect_error "value 99999999999 out of range" train "$CFG" train.eval_every=99999999999 run.dir="$WORK/h1"
expect_error "unknown subcommand 'trian' of \`meshtrain\`; did you mean 'train'?" trian "$CFG"
expect_error "unknown subcommand 'setp' of \`meshtrain bench\`; did you mean 'step'?" bench setp "$CFG"
expect_error "out of range" bench step "$CFG" --steps 99999999999
expect_error "out of range" prep --docs 99999999999999999999999 --out "$WORK/h2"
# prep: inputs the source does not read, empty files, ids past --vocab, 2-D arrays, --out
echo hello > "$WORK/a.txt"; : > "$WORK/empty.txt"
expect_error "meshtrain prep --from text FILE" prep text "$WORK/a.txt" --out "$WORK/h2"
[ ! -e "$WORK/h2" ] || fail "prep with ignored inputs wrote a dataset"
expect_error "empty.txt: empty input file" prep --from text "$WORK/a.txt" "$WORK/empty.txt" --out "$WORK/h2"
expect_error "empty.txt: empty input file" prep --from tokens "$WORK/empty.txt" --out "$WORK/h2"
printf '\x01\x00\x2c\x01' > "$WORK/ids.bin"  # uint16 ids 1, 300
expect_error "ids.bin: token id 300 >= --vocab 100" prep --from tokens "$WORK/ids.bin" --vocab 100 --out "$WORK/h2"
python3 - "$WORK/two.npy" <<'PY'
import struct, sys
h = "{'descr': '<u2', 'fortran_order': False, 'shape': (2, 3), }"
h += " " * (63 - (10 + len(h)) % 64) + "\n"
open(sys.argv[1], "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + bytes(12))
PY
expect_error "two.npy: the array is 2-D (shape (2, 3))" prep --from tokens "$WORK/two.npy" --out "$WORK/h2"
expect_error "hint: check --out" prep --docs 2 --doc-len 8 --out "$WORK/afile/ds"
# plot: a bad record names the file and line
mkdir -p "$WORK/p"; printf '{"step":0,"loss":2.0,"lr":0.1}\n{"step":1,"loss":"x"}\n{"step":2,"loss":1.0}\n' > "$WORK/p/metrics.jsonl"
expect_error "p/metrics.jsonl:2: bad record" plot "$WORK/p"
printf '{"step":0,"loss":2.0,"lr":0.1}\n{"step":1,"lo\n{"step":2,"loss":1.0}\n' > "$WORK/p/metrics.jsonl"
expect_error "p/metrics.jsonl:2: not a JSON record" plot "$WORK/p"
# ... but a diverged step (a non-finite loss is written as null) is a gap in the curve, not an error
printf '{"step":0,"loss":2.0,"lr":0.1}\n{"step":1,"loss":null,"lr":0.1}\n{"step":2,"loss":1.0,"lr":0.1}\n{"step":2,"eval_loss":null}\n' \
  > "$WORK/p/metrics.jsonl"
"$MESHTRAIN" plot "$WORK/p" > "$WORK/p.log" 2>&1 || { cat "$WORK/p.log"; fail "plot of a run with a null (diverged) loss"; }
grep -q "<polyline" "$WORK/p/loss.svg" || fail "plot of a run with a null loss drew no curve"
# resume=auto: a newer format, or no usable checkpoint, is an error that moves nothing
snapshot() { (cd "$1" && find . | sort); }
cp -r "$WORK/ok" "$WORK/newer"
python3 - "$WORK/newer/checkpoints/step_00000003/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m["format_version"] = 99; json.dump(m, open(sys.argv[1], "w"))
PY
before=$(snapshot "$WORK/newer")
expect_error "step_00000003 has checkpoint format version 99, newer than this build reads" \
  train "$CFG" "${tiny[@]}" train.steps=5 checkpoint.every=2 run.dir="$WORK/newer" resume=auto
[ "$(snapshot "$WORK/newer")" = "$before" ] || fail "a refused resume changed the run directory"
cp -r "$WORK/ok" "$WORK/allbad"
for s in "$WORK"/allbad/checkpoints/step_*; do echo junk >> "$s/shard_00000.h5"; done
before=$(snapshot "$WORK/allbad")
expect_error "none of the checkpoints under $WORK/allbad/checkpoints is usable" \
  train "$CFG" "${tiny[@]}" train.steps=5 checkpoint.every=2 run.dir="$WORK/allbad" resume=auto
grep -q "step_00000002/shard_00000.h5: checksum mismatch" <<< "$out" || fail "the checkpoints are not named: $out"
[ "$(snapshot "$WORK/allbad")" = "$before" ] || fail "a refused resume changed the run directory"
# a manifest step that disagrees with step_<N>: that checkpoint is invalid (resume falls back)
cp -r "$WORK/ok" "$WORK/edited"
sed -i 's/"step": 3/"step": 30/' "$WORK/edited/checkpoints/step_00000003/manifest.json"
out=$("$MESHTRAIN" train "$CFG" "${tiny[@]}" train.steps=5 checkpoint.every=2 run.dir="$WORK/edited" resume=auto 2>&1) ||
  fail "resume past an edited checkpoint: $out"
grep -q "manifest's step (30) is not the directory name's (3)" <<< "$out" || fail "no step mismatch message: $out"
grep -q "resumed from .*step_00000002 (step 2)" <<< "$out" || fail "did not fall back to step 2: $out"
