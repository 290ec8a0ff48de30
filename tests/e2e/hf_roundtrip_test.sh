#!/usr/bin/env bash
# Hugging Face export and import through the real binary (issue #15):
#  1. a tiny Llama (vocab 100: padded at every tp) trained 3 steps at dp 2 x tp 2 is exported
#     (meshtrain export); re-imported with model.init_from=hf:OUT at dp 2 x tp 2 and written
#     as a checkpoint of 0 steps, then exported again: the safetensors and config.json are
#     byte-identical, so every parameter survived bitwise. The same from a ZeRO-1 run
#     re-imported at dp 2 x tp 1 with ZeRO-1, and re-imported at tp 1 alone.
#  2. a tiny --max-shard-size gives several shards + model.safetensors.index.json.
#  3. Python's `safetensors` (pip installed here; exit 77 = skipped only if PyPI is out of
#     reach) loads our exports: the fixtures imported at tp 2 and exported again have the
#     fixtures' names, shapes and values; the sharded export reads back equal to the single file.
#  4. a run from an imported model resumes from its checkpoint (resume=auto) exactly as the
#     uninterrupted run continues (the import does not overwrite the restored weights).
#  5. export refuses a non-empty --out without --force, and a failed export (a corrupted
#     shard) leaves neither --out nor a temporary directory behind.
source "$(dirname "$0")/lib.sh"

cat > "$WORK/llama.yaml" <<'EOF'
model:
  arch: llama
  n_layer: 2
  n_head: 4
  n_kv_head: 2
  n_embd: 32
  ffn_dim: 48
  vocab_size: 100
  seq_len: 16
train:
  steps: 3
  batch_size: 8
  micro_batch: 2
  eval_every: 0
  eval_batches: 1
  log_every: 1
optim:
  lr: 0.01
  schedule: constant
data:
  source: markov
  markov_vocab: 16
run:
  tensorboard: false
EOF
# the same without a model section: for model.init_from, config.json gives it
sed '/^model:/,/^train:/{/^train:/!d}' "$WORK/llama.yaml" > "$WORK/base.yaml"
train() { "$@" >"$WORK/last.log" 2>&1 || { cat "$WORK/last.log"; fail "train: $*"; }; }
# export_of RUN OUT [args]: exports RUN's newest checkpoint to OUT
export_of() { "$MESHTRAIN" export "$1" --format hf --out "$2" "${@:3}" >/dev/null || fail "export $1"; }
same_export() {  # same_export A B: the two exports are byte-identical
  for f in model.safetensors config.json generation_config.json; do
    cmp -s "$1/$f" "$2/$f" || fail "$f differs between $1 and $2"
  done
}
# import_ckpt RUN HFDIR NP [key=value ...]: model.init_from=hf:HFDIR written as a 0-step checkpoint
import_ckpt() {
  train mpi -np "$3" "$MESHTRAIN" train "$WORK/llama.yaml" run.dir="$1" model.init_from="hf:$2" train.steps=0 \
    checkpoint.every=1 "${@:4}"
  grep -q "weights from hf:$2" "$WORK/last.log" || fail "no import logged for $1"
}

# 1. dp 2 x tp 2 -> HF -> dp 2 x tp 2, tp 1; ZeRO-1 -> dp 2 x tp 1 ZeRO-1
train mpi -np 4 "$MESHTRAIN" train "$WORK/llama.yaml" run.dir="$WORK/a" parallel.tp=2 checkpoint.every=3
export_of "$WORK/a" "$WORK/hf-a"
python3 - "$WORK/hf-a/config.json" <<'PY' || fail "config.json"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["architectures"] == ["LlamaForCausalLM"] and c["model_type"] == "llama", c
assert (c["vocab_size"], c["num_key_value_heads"], c["intermediate_size"], c["tie_word_embeddings"]) == (100, 2, 48, False), c
PY
import_ckpt "$WORK/b" "$WORK/hf-a" 4 parallel.tp=2
export_of "$WORK/b" "$WORK/hf-b"
same_export "$WORK/hf-a" "$WORK/hf-b"
import_ckpt "$WORK/b1" "$WORK/hf-a" 1
export_of "$WORK/b1" "$WORK/hf-b1"
same_export "$WORK/hf-a" "$WORK/hf-b1"
train mpi -np 4 "$MESHTRAIN" train "$WORK/llama.yaml" run.dir="$WORK/z" parallel.tp=2 parallel.zero=1 checkpoint.every=3
export_of "$WORK/z" "$WORK/hf-z"
import_ckpt "$WORK/zb" "$WORK/hf-z" 2 parallel.zero=1
export_of "$WORK/zb" "$WORK/hf-zb"
same_export "$WORK/hf-z" "$WORK/hf-zb"
echo "export -> import -> export bitwise: dp2 x tp2, tp1, ZeRO-1 dp2 x tp1"

# 2. sharded export
export_of "$WORK/a" "$WORK/hf-shards" --max-shard-size 20KB
n=$(ls "$WORK/hf-shards" | grep -c '^model-000..-of-000..\.safetensors$' || true)
[ "$n" -ge 2 ] || fail "expected several shards, got $n: $(ls "$WORK/hf-shards")"
[ -f "$WORK/hf-shards/model.safetensors.index.json" ] || fail "no index"
import_ckpt "$WORK/s" "$WORK/hf-shards" 2 parallel.tp=2
export_of "$WORK/s" "$WORK/hf-s"
same_export "$WORK/hf-a" "$WORK/hf-s"
echo "sharded export ($n shards) re-imports bitwise"

# 3. Python safetensors reads our files
if ! python3 -m pip install --quiet --disable-pip-version-check safetensors numpy >"$WORK/pip.log" 2>&1; then
  python3 -m pip download --quiet --no-deps -d "$WORK/pipcheck" safetensors >/dev/null 2>&1 \
    && { cat "$WORK/pip.log"; fail "pip install safetensors numpy failed"; }
  echo "SKIP: pip cannot reach PyPI to install safetensors"; exit 77
fi
for m in gpt2-tiny llama-tiny; do
  train mpi -np 2 "$MESHTRAIN" train "$WORK/base.yaml" run.dir="$WORK/fx-$m" \
    model.init_from="hf:$MT_SOURCE_DIR/tests/fixtures/hf/$m" parallel.tp=2 train.steps=0 checkpoint.every=1
  export_of "$WORK/fx-$m" "$WORK/hf-fx-$m"
done
python3 - "$MT_SOURCE_DIR/tests/fixtures/hf" "$WORK" <<'PY' || fail "Python safetensors check"
import json, os, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
fx, work = sys.argv[1], sys.argv[2]
for m in ["gpt2-tiny", "llama-tiny"]:
    want = load_file(f"{fx}/{m}/model.safetensors")
    got = load_file(f"{work}/hf-fx-{m}/model.safetensors")
    assert sorted(got) == sorted(want), (m, sorted(set(got) ^ set(want)))
    for k in want:
        assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype, (m, k, got[k].shape, want[k].shape)
        assert np.array_equal(got[k], want[k]), (m, k)
    cfg = json.load(open(f"{work}/hf-fx-{m}/config.json"))
    ref = json.load(open(f"{fx}/{m}/config.json"))
    for k in ["model_type", "vocab_size", "tie_word_embeddings", "bos_token_id", "eos_token_id"]:
        assert cfg.get(k) == ref.get(k), (m, k, cfg.get(k), ref.get(k))
    print(f"{m}: {len(got)} tensors, names, shapes and values equal the fixture's")
single = load_file(f"{work}/hf-a/model.safetensors")
index = json.load(open(f"{work}/hf-shards/model.safetensors.index.json"))
files = sorted(set(index["weight_map"].values()))
sharded = {}
for f in files:
    with safe_open(f"{work}/hf-shards/{f}", framework="numpy") as h:
        for k in h.keys():
            assert index["weight_map"][k] == f, k
            sharded[k] = h.get_tensor(k)
assert sorted(sharded) == sorted(single) and all(np.array_equal(sharded[k], single[k]) for k in single)
total = sum(v.nbytes for v in single.values())
assert index["metadata"]["total_size"] == total, (index["metadata"], total)
print(f"sharded export: {len(files)} files read by Python equal the single file ({total} bytes)")
PY

# 4. resume from a checkpoint of an imported model
FX="hf:$MT_SOURCE_DIR/tests/fixtures/hf/llama-tiny"
train mpi -np 2 "$MESHTRAIN" train "$WORK/base.yaml" run.dir="$WORK/r-full" model.init_from="$FX" train.steps=4
train mpi -np 2 "$MESHTRAIN" train "$WORK/base.yaml" run.dir="$WORK/r-part" model.init_from="$FX" train.steps=2 \
  checkpoint.every=2
train mpi -np 2 "$MESHTRAIN" train "$WORK/base.yaml" run.dir="$WORK/r-part" model.init_from="$FX" train.steps=4 \
  checkpoint.every=2 resume=auto
grep -q "resumed from" "$WORK/last.log" || fail "did not resume"
grep -q "weights from" "$WORK/last.log" && fail "the import overwrote the restored checkpoint"
[ "$(step_losses "$WORK/r-full" 2)" = "$(step_losses "$WORK/r-part" 2)" ] || fail "resumed losses differ: $(step_losses "$WORK/r-full" 2) vs $(step_losses "$WORK/r-part" 2)"
echo "resume from an imported model's checkpoint continues bitwise"

# 5. refusals leave nothing half-written
mkdir -p "$WORK/full" && touch "$WORK/full/keep"
"$MESHTRAIN" export "$WORK/a" --out "$WORK/full" >"$WORK/err.log" 2>&1 && fail "overwrote a non-empty --out"
grep -q "not empty" "$WORK/err.log" || { cat "$WORK/err.log"; fail "no clear error for a non-empty --out"; }
"$MESHTRAIN" export "$WORK/a" --out "$WORK/full" --force >/dev/null || fail "--force"
[ ! -e "$WORK/full/keep" ] && [ -f "$WORK/full/model.safetensors" ] || fail "--force did not replace --out"
ck=$(ls -d "$WORK/a/checkpoints/step_"* | tail -1)
cp -r "$ck" "$WORK/broken"
truncate -s 100 "$WORK/broken/shard_00001.h5"
"$MESHTRAIN" export "$WORK/broken" --out "$WORK/never" >"$WORK/err.log" 2>&1 && fail "exported a corrupted checkpoint"
grep -q "checksum" "$WORK/err.log" || { cat "$WORK/err.log"; fail "no clear error for a corrupted shard"; }
[ ! -e "$WORK/never" ] && [ -z "$(ls -d "$WORK"/never.tmp-* 2>/dev/null)" ] || fail "a failed export left files behind"
echo "PASS hf_roundtrip"
