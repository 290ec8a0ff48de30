#!/usr/bin/env bash
# `meshtrain generate`: a tiny GPT-2 and a tiny Llama (2 kv heads) train 20 steps on the
# repository's own text (byte tokens, `prep --from text`); then, from the run directory:
#  - greedy output (--temperature 0) is the same twice, and the same under mpirun -np 2
#    (tp 2) as alone; stdout holds the generated text alone (logs go to stderr);
#  - sampling with a seed repeats itself (also at tp 2: every rank draws from the same
#    gathered logits), another seed gives other text;
#  - --max-new-tokens N prints N bytes (one byte per token) plus a newline; a long prompt
#    stops at model.seq_len, which the summary line names;
#  - with a BPE tokenizer.json kept beside the dataset (prep --tokenizer), generate uses it
#    without --tokenizer (tp 1 and 2 agree);
#  - a model whose vocabulary the byte tokenizer does not fit is a clear error;
# and `bench generate` runs and its cached and recomputed greedy tokens agree.
source "$(dirname "$0")/lib.sh"
cat "$MT_SOURCE_DIR/README.md" "$MT_SOURCE_DIR"/docs/*.md > "$WORK/corpus.txt"
"$MESHTRAIN" prep --from text "$WORK/corpus.txt" --out "$WORK/data" > "$WORK/prep.log" 2>&1 ||
  { cat "$WORK/prep.log"; fail "prep"; }
gen() { "$MESHTRAIN" generate "$@" 2> "$WORK/gen.err" || { cat "$WORK/gen.err"; fail "generate $*"; }; }
for arch in gpt2 llama; do
  extra=()
  [ "$arch" = llama ] && extra=(model.arch=llama model.n_kv_head=2 model.ffn_dim=96)
  "$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" "${extra[@]}" model.vocab_size=256 data.source=hdf5 \
    data.path="$WORK/data" train.steps=20 train.eval_every=0 model.n_embd=64 checkpoint.every=20 \
    run.dir="$WORK/$arch" > "$WORK/$arch.log" 2>&1 || { cat "$WORK/$arch.log"; fail "train $arch"; }
  run="$WORK/$arch"
  gen "$run" --prompt "The model " --max-new-tokens 24 --temperature 0 > "$WORK/g1.txt"
  gen "$run" --prompt "The model " --max-new-tokens 24 --temperature 0 > "$WORK/g2.txt"
  cmp "$WORK/g1.txt" "$WORK/g2.txt" || fail "$arch: greedy output differs between two runs"
  [ "$(wc -c < "$WORK/g1.txt")" -eq 25 ] || { od -c "$WORK/g1.txt"; fail "$arch: not 24 bytes + newline"; }
  grep -q "stop: max-new-tokens" "$WORK/gen.err" || { cat "$WORK/gen.err"; fail "$arch: no summary line"; }
  mpi -np 2 "$MESHTRAIN" generate "$run" --prompt "The model " --max-new-tokens 24 --temperature 0 \
    > "$WORK/g3.txt" 2> "$WORK/g3.err" || { cat "$WORK/g3.err"; fail "$arch: generate at tp 2"; }
  grep -q "tp 2" "$WORK/g3.err" || { cat "$WORK/g3.err"; fail "$arch: -np 2 did not run at tp 2"; }
  cmp "$WORK/g1.txt" "$WORK/g3.txt" || { od -c "$WORK/g1.txt" "$WORK/g3.txt"; fail "$arch: tp 2 differs from tp 1"; }
  echo "$arch greedy: [$(cat "$WORK/g1.txt")]"

  gen "$run" --prompt "The model " --max-new-tokens 40 --temperature 1 --top-k 40 --top-p 0.95 --seed 7 > "$WORK/s1.txt"
  gen "$run" --prompt "The model " --max-new-tokens 40 --temperature 1 --top-k 40 --top-p 0.95 --seed 7 > "$WORK/s2.txt"
  gen "$run" --prompt "The model " --max-new-tokens 40 --temperature 1 --top-k 40 --top-p 0.95 --seed 8 > "$WORK/s3.txt"
  cmp "$WORK/s1.txt" "$WORK/s2.txt" || fail "$arch: the same seed gave different samples"
  mpi -np 2 "$MESHTRAIN" generate "$run" --prompt "The model " --max-new-tokens 40 --temperature 1 --top-k 40 \
    --top-p 0.95 --seed 7 > "$WORK/s4.txt" 2> "$WORK/s4.err" || { cat "$WORK/s4.err"; fail "$arch: sampling at tp 2"; }
  cmp "$WORK/s1.txt" "$WORK/s4.txt" || fail "$arch: sampled text at tp 2 differs from tp 1"
  if cmp -s "$WORK/s1.txt" "$WORK/s3.txt"; then fail "$arch: seeds 7 and 8 gave the same 40 sampled tokens"; fi
  echo "$arch sampled: [$(cat "$WORK/s1.txt")]"

  # model.seq_len 64: a prompt of 60 bytes leaves 4 tokens
  prompt=$(printf 'x%.0s' $(seq 60))
  gen "$run" --prompt "$prompt" --max-new-tokens 100 --temperature 0 > "$WORK/l.txt"
  [ "$(wc -c < "$WORK/l.txt")" -eq 5 ] || { od -c "$WORK/l.txt"; fail "$arch: not stopped at model.seq_len"; }
  grep -q "stop: model.seq_len" "$WORK/gen.err" || { cat "$WORK/gen.err"; fail "$arch: stop reason"; }
done

# a byte-level BPE tokenizer (the fixture's tokenizer.json, 512 ids): prep keeps it beside the
# dataset, generate finds it there without --tokenizer; greedy text repeats, also at tp 2
"$MESHTRAIN" prep --from text "$WORK/corpus.txt" --tokenizer "$MT_SOURCE_DIR/tests/fixtures/hf/bpe-gpt2style/tokenizer.json" \
  --out "$WORK/bpe" > "$WORK/prep.log" 2>&1 || { cat "$WORK/prep.log"; fail "prep --tokenizer"; }
"$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" model.vocab_size=512 data.source=hdf5 data.path="$WORK/bpe" \
  train.steps=10 train.eval_every=0 model.n_embd=64 checkpoint.every=10 run.dir="$WORK/bperun" > "$WORK/bpe.log" 2>&1 ||
  { cat "$WORK/bpe.log"; fail "train bpe"; }
gen "$WORK/bperun" --prompt "The model " --max-new-tokens 20 --temperature 0 > "$WORK/b1.txt"
grep -q "bpe (tokenizer.json: $WORK/bpe/tokenizer.json)" "$WORK/gen.err" || { cat "$WORK/gen.err"; fail "bpe hint unused"; }
mpi -np 2 "$MESHTRAIN" generate "$WORK/bperun" --prompt "The model " --max-new-tokens 20 --temperature 0 \
  > "$WORK/b2.txt" 2> "$WORK/b2.err" || { cat "$WORK/b2.err"; fail "bpe generate at tp 2"; }
cmp "$WORK/b1.txt" "$WORK/b2.txt" || fail "bpe: tp 2 differs from tp 1"
echo "bpe greedy: [$(cat "$WORK/b1.txt")]"

# a vocabulary of 16 (the Markov language): the byte tokenizer does not fit it
"$MESHTRAIN" train "$MT_SOURCE_DIR/examples/tiny.yaml" train.steps=2 train.eval_every=0 checkpoint.every=2 \
  run.dir="$WORK/v16" > "$WORK/v16.log" 2>&1 || { cat "$WORK/v16.log"; fail "train v16"; }
if "$MESHTRAIN" generate "$WORK/v16" --prompt "hi" > /dev/null 2> "$WORK/err.txt"; then fail "vocab 16 accepted bytes"; fi
grep -q "has 256 tokens, the model 16" "$WORK/err.txt" || { cat "$WORK/err.txt"; fail "no clear tokenizer error"; }
if "$MESHTRAIN" generate "$WORK/gpt2" --prompt "hi" --top-p 0 > /dev/null 2> "$WORK/err.txt"; then fail "top-p 0"; fi
grep -q -- "--top-p 0 must be in (0, 1]" "$WORK/err.txt" || { cat "$WORK/err.txt"; fail "no clear --top-p error"; }

"$MESHTRAIN" bench generate "$MT_SOURCE_DIR/examples/llama-tiny.yaml" --prompt-len 8 --new-tokens 24 \
  > "$WORK/bench.txt" 2>&1 || { cat "$WORK/bench.txt"; fail "bench generate"; }
cat "$WORK/bench.txt"
grep -q "greedy tokens agree: 24 of 24" "$WORK/bench.txt" || fail "bench generate: cached and recomputed disagree"
echo "generate_test: ok"
