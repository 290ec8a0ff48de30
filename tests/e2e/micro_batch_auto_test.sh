#!/usr/bin/env bash
# train.micro_batch: auto (examples/tiny.yaml) end to end: README's data-parallel line as
# written (`mpirun -np 2 ... tiny.yaml parallel.dp=2`, which failed while tiny.yaml said
# micro_batch: 16) trains with micro-batches of 8 and the same losses as one process (the
# global batch does not depend on dp); the banner and the run's config.yaml show the resolved
# number; a pipeline keeps >= pp micro-batches; a batch dp does not divide is an error naming
# train.batch_size before anything is written.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
small=(train.steps=4 train.eval_every=0 train.eval_batches=1 model.n_embd=64 model.seq_len=32 run.tensorboard=false)

"$MESHTRAIN" train "$CFG" "${small[@]}" run.dir="$WORK/one" > "$WORK/one.log" 2>&1 || { cat "$WORK/one.log"; fail "dp 1"; }
grep -q "train.micro_batch: auto = 16 " "$WORK/one.log" || fail "dp 1: no 'auto = 16' in the banner"
mpi -np 2 "$MESHTRAIN" train "$CFG" parallel.dp=2 "${small[@]}" run.dir="$WORK/dp2" > "$WORK/dp2.log" 2>&1 ||
  { cat "$WORK/dp2.log"; fail "README's dp 2 line failed"; }
grep -q "train.micro_batch: auto = 8 (train.batch_size 16 / dp 2 = 8 per replica, 1 micro-batch(es) per step)" \
  "$WORK/dp2.log" || { cat "$WORK/dp2.log"; fail "dp 2: the banner does not show auto = 8"; }
grep -q "^  micro_batch: 8  # auto$" "$WORK/dp2/config.yaml" || fail "dp 2: config.yaml lacks 'micro_batch: 8  # auto'"
grep -q "^  micro_batch: 16  # auto$" "$WORK/one/config.yaml" || fail "dp 1: config.yaml lacks 'micro_batch: 16  # auto'"
compare_losses "$WORK/one" "$WORK/dp2" 1e-5 || fail "dp 2 with auto does not train what one process trains"

# pp 2 (1f1b): 16 per replica -> micro-batches of 8, two of them (>= pp)
mpi -np 2 "$MESHTRAIN" train "$CFG" parallel.pp=2 "${small[@]}" run.dir="$WORK/pp2" > "$WORK/pp2.log" 2>&1 ||
  { cat "$WORK/pp2.log"; fail "pp 2 with auto failed"; }
grep -q "train.micro_batch: auto = 8 (.* 2 micro-batch(es) per step, at least pp = 2)" "$WORK/pp2.log" ||
  { cat "$WORK/pp2.log"; fail "pp 2: the banner does not show auto = 8 with 2 micro-batches"; }
grep -q "^  micro_batch: 8  # auto$" "$WORK/pp2/config.yaml" || fail "pp 2: config.yaml lacks 'micro_batch: 8  # auto'"

# dp 2 does not divide batch 15: an error naming the key, nothing written
if mpi -np 2 "$MESHTRAIN" train "$CFG" train.batch_size=15 "${small[@]}" run.dir="$WORK/bad" > "$WORK/bad.log" 2>&1; then
  fail "batch 15 over dp 2 was accepted"
fi
grep -q "train.batch_size" "$WORK/bad.log" && grep -q "does not divide" "$WORK/bad.log" ||
  { cat "$WORK/bad.log"; fail "the error does not name train.batch_size"; }
[ ! -e "$WORK/bad/metrics.jsonl" ] || fail "a failed start wrote metrics"
echo "PASS"
