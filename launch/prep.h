// What: `meshtrain prep`: builds an HDF5 token dataset (io/dataset.h) from
//   markov  - the built-in synthetic Markov language: --docs documents of --doc-len tokens, or
//             of lengths drawn (deterministically from --seed) by --doc-len-dist: uniform in
//             [--doc-len-min, --doc-len], or skewed (min + (max - min) u^3: many short
//             documents, a few long ones, for load-balancing experiments),
//   tokens  - existing token arrays: NumPy .npy ('<u2', '<u4', '<i4', 1-D) or raw
//             little-endian uint16/uint32 files; each file is one document,
//   text    - text files, each file one document,
//   jsonl   - JSON lines, each non-blank line one document: the string under --text-key,
//             through --tokenizer: `byte` (default: the built-in byte-level tokenizer, vocab
//             256, token = byte, nothing appended) or a Hugging Face tokenizer.json
//             (io/text/tokenizer.h): its ids as Tokenizer.encode(text).ids gives them, then
//             its end-of-text token (eos_id) after every document; the tokenizer.json is
//             copied into the dataset (<out>/tokenizer.json, manifest "tokenizer":
//             "tokenizer.json") for generate and eval, and the dataset's vocab_size is the
//             tokenizer's.
// Progress (tokens, MB/s) is printed every few seconds for long conversions.
//
// Parallel text / jsonl (`mpirun -np N meshtrain prep ...`): the inputs, concatenated in
// order, are cut into N equal byte ranges; a document (a line, or a text file) belongs to the
// rank whose range holds its first byte, so ranks tokenize disjoint contiguous runs of
// documents (no rank reads all of the input, and a rank skips a line that began before its
// range). Rank 0 writes its own documents, then receives every other rank's (lengths, then
// tokens, in messages of at most 2^28 ids) in rank order and writes them: the documents reach
// the one DatasetWriter in input order, so the shards, the train/val split (a hash of the
// document's index) and the checksums are the same whatever N. Why gather on rank 0 rather
// than have each rank write shards: a shard holds whole documents up to --shard-tokens, so
// shard boundaries depend on every earlier document; one writer keeps the format and the
// split exactly those of a serial prep, and tokenizing (not writing) is the slow part. Each
// rank keeps its slice's tokens in memory (4 bytes a token) until rank 0 takes them; needs
// only the inputs to be readable on every node. Other --from kinds run on rank 0 alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mt::launch {

struct PrepArgs {
  std::string from = "markov";       // markov | tokens | text | jsonl
  std::vector<std::string> inputs;
  std::string out;
  bool overwrite = false;            // replace a dataset already in `out` (else refused)
  std::string dtype = "";            // "" = uint16 if the vocabulary fits, else uint32
  std::string raw_dtype = "uint16";  // for raw token files
  int vocab = 0;                     // tokens: vocabulary size (0 = max id + 1)
  int64_t shard_tokens = 1 << 24;
  double val_fraction = 0.05;
  bool compress = false;
  // markov
  int64_t docs = 1000;
  int doc_len = 1024;
  std::string doc_len_dist = "fixed";  // fixed | uniform | skewed
  int doc_len_min = 16;
  int markov_vocab = 64, markov_order = 2;
  double markov_sharpness = 2.0;
  uint64_t seed = 1234;
  // text, jsonl
  std::string tokenizer;             // "" or "byte": bytes; else a tokenizer.json (or its directory)
  std::string text_key = "text";     // jsonl: the key of each line's text
};

// `rank` of `size` ranks of MPI_COMM_WORLD (size 1: a single process, no MPI calls).
int run_prep(const PrepArgs& a, int rank = 0, int size = 1);

// Whether an MPI launcher (mpirun, srun with PMIx/PMI) started this process: then prep
// initialises MPI and runs collectively; without one it stays a plain single process.
bool started_by_mpi_launcher();

}  // namespace mt::launch
