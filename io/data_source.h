// What: the interface the loader (loader.h) reads samples through. A sample is up to
// seq_len + 1 tokens (inputs are all but the last, targets all but the first) identified by
// (split, index). Synthetic sources (the Markov language, markov_source.h) are unbounded
// streams: any index is a fresh sample. Dataset sources (HDF5 shards, dataset.h) have
// epoch_samples(split) distinct samples, which the loader visits in a seeded permutation per
// epoch; in documents mode their samples have different lengths (sample_tokens).
// Why: which samples form a step and which rank reads them is the loader's business
// (schedule.h); a source only knows how to produce sample `index`.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"

namespace mt::io {

enum class Split { Train = 0, Eval = 1 };

class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual int vocab_size() const = 0;
  // Writes the tokens of sample `index` of `split` to out: seq_len + 1 tokens, or
  // (*sample_tokens(split))[index] when sample_tokens is not null.
  virtual void sample(Split split, uint64_t index, int seq_len, int32_t* out) const = 0;
  // A hint that sample `index` will be read soon (a dataset starts fetching its memory).
  virtual void prefetch(Split, uint64_t /*index*/) const {}
  // Distinct samples in one epoch of `split`; 0 = an unbounded synthetic stream.
  virtual uint64_t epoch_samples(Split) const { return 0; }
  // Tokens of each sample (<= seq_len + 1) when they differ (documents mode), else null.
  virtual const std::vector<int32_t>* sample_tokens(Split) const { return nullptr; }
  // The loss floor (nats per token) for sequences of seq_len, if the source knows it.
  virtual std::optional<double> entropy_floor(int seq_len) const { return std::nullopt; }
  virtual std::string describe() const = 0;
};

// verify_first / verify_stride: this process's share of a dataset's verification (rank, world).
std::unique_ptr<DataSource> make_data_source(const core::Config& cfg, int verify_first = 0, int verify_stride = 1);

}  // namespace mt::io
