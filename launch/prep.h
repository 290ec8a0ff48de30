// What: `meshtrain prep`: builds an HDF5 token dataset (io/dataset.h) from
//   markov  - the built-in synthetic Markov language: --docs documents of --doc-len tokens, or
//             of lengths drawn (deterministically from --seed) by --doc-len-dist: uniform in
//             [--doc-len-min, --doc-len], or skewed (min + (max - min) u^3: many short
//             documents, a few long ones, for load-balancing experiments),
//   tokens  - existing token arrays: NumPy .npy ('<u2', '<u4', '<i4', 1-D) or raw
//             little-endian uint16/uint32 files; each file is one document,
//   text    - text files through the built-in byte-level tokenizer (vocab 256, token = byte);
//             each file is one document.
// Progress (tokens, MB/s) is printed every few seconds for long conversions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mt::launch {

struct PrepArgs {
  std::string from = "markov";       // markov | tokens | text
  std::vector<std::string> inputs;
  std::string out;
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
};

int run_prep(const PrepArgs& a);

}  // namespace mt::launch
