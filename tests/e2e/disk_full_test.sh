#!/usr/bin/env bash
# A full disk (a 2 MiB tmpfs as run.dir): a checkpoint that does not fit fails naming ENOSPC
# and leaves no partial step_N.tmp (the next try would find the disk still full); a write of
# config.yaml on a full disk leaves no config.yaml.tmp; metrics.jsonl that fills the disk
# mid-run keeps whole records only (the failed record is cut back). Needs mount (root):
# skipped (77) with the reason otherwise.
source "$(dirname "$0")/lib.sh"
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
MNT="${WORK:?lib.sh sets it}/mnt"  # (never an empty WORK: the trap below kills by it)
mkdir -p "$MNT"
if ! mount -t tmpfs -o size=2m tmpfs "$MNT" 2> "$WORK/mount.err"; then
  echo "SKIP: cannot mount a 2 MiB tmpfs for the full-disk cases (needs root): $(cat "$WORK/mount.err")"
  exit 77
fi
trap 'pkill -f -- "$WORK" 2>/dev/null || true; sleep 0.2; umount "$MNT" 2>/dev/null || umount -l "$MNT"; rm -rf "$WORK"' EXIT
# n_embd 128, 2 layers: ~0.4 M parameters, a ~5 MB checkpoint (weights and AdamW's m and v)
common=(model.n_embd=128 model.seq_len=16 train.batch_size=4 train.micro_batch=4 train.threads=1
        run.tensorboard=false train.log_every=1000 train.eval_every=0 train.eval_batches=1 run.peak_gflops=1)
leftovers() { find "$MNT" -name '*.tmp' | sed "s|$MNT/||" | tr '\n' ' '; }

# 1. the checkpoint does not fit
set +e; out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=4 checkpoint.every=2 run.dir="$MNT/r" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] || fail "a checkpoint larger than the disk did not fail: $out"
grep -q "ENOSPC" <<< "$out" || fail "the error does not name ENOSPC: $out"
[ -z "$(leftovers)" ] || fail "partial temporaries left on the full disk: $(leftovers)"
# the next try (resume=auto) finds room to fail the same way, not a disk full of the last try
set +e; out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=4 checkpoint.every=2 run.dir="$MNT/r" resume=auto 2>&1); rc=$?; set -e
[ $rc -ne 0 ] && grep -q "checkpoint not written.*ENOSPC" <<< "$out" || fail "second try: $out"
[ -z "$(leftovers)" ] || fail "partial temporaries after the second try: $(leftovers)"

# 2. config.yaml on a disk with no space at all
dd if=/dev/zero of="$MNT/fill" bs=64k 2> /dev/null || true
set +e; out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=4 run.dir="$MNT/r" resume=auto 2>&1); rc=$?; set -e
[ $rc -ne 0 ] || fail "a run on a full disk did not fail: $out"
grep -q "ENOSPC" <<< "$out" || fail "the error does not name ENOSPC: $out"
[ -z "$(leftovers)" ] || fail "temporaries left on the full disk: $(leftovers)"
rm -f "$MNT/fill"

# 3. metrics.jsonl fills the disk mid-run: whole records only
rm -rf "$MNT/r"
free_kb=$(df -k --output=avail "$MNT" | tail -1)
dd if=/dev/zero of="$MNT/fill" bs=1k count=$(( free_kb - 24 )) 2> /dev/null
set +e; out=$("$MESHTRAIN" train "$CFG" "${common[@]}" train.steps=100000 model.n_embd=32 run.dir="$MNT/r" 2>&1); rc=$?; set -e
[ $rc -ne 0 ] || fail "the run did not stop on a full disk"
grep -q "cannot append to the metrics file.*ENOSPC" <<< "$out" || fail "not the metrics write that failed: $out"
python3 -c 'import json,sys
d=open(sys.argv[1]).read(); assert d.endswith("\n"), "a partial last record: %r" % d[-80:]
n=len([json.loads(l) for l in d.splitlines()]); assert n >= 10, n
print(f"metrics.jsonl: {n} whole records on the full disk")' "$MNT/r/metrics.jsonl" || fail "metrics.jsonl is not whole records"
