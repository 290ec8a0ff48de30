// What: the interface the trainer reads samples through. A sample is seq_len + 1 tokens
// (inputs are the first seq_len, targets the last seq_len) identified by (split, index).
// Why: the global batch of step s is the fixed set of sample indices
// [s * batch_size, (s + 1) * batch_size), whatever dp is; each rank reads only its share.
// Sources: the built-in synthetic Markov language (markov_source.h) now, HDF5 shards later.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/config.h"

namespace mt::io {

enum class Split { Train = 0, Eval = 1 };

class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual int vocab_size() const = 0;
  // Writes seq_len + 1 tokens of sample `index` of `split` to out.
  virtual void sample(Split split, uint64_t index, int seq_len, int32_t* out) const = 0;
  // The loss floor (nats per token) for sequences of seq_len, if the source knows it.
  virtual std::optional<double> entropy_floor(int seq_len) const { return std::nullopt; }
  virtual std::string describe() const = 0;
};

std::unique_ptr<DataSource> make_data_source(const core::Config& cfg);

}  // namespace mt::io
