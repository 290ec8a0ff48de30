// What: sharded token datasets in HDF5 (docs/dataset-format.md): a directory of shard files,
// each with a 1-D chunked `tokens` dataset (uint16 or uint32) and `doc_offsets` (uint64
// document starts, plus the end), and manifest.json (format version, dtype, vocab size,
// tokenizer, per split the shards with token and document counts and checksums).
// Writer: streams documents into shards of a given size, train/val assignment per document
// by a deterministic hash. Reader: validates the manifest and shards up front (missing or
// truncated shard, checksum, format version, the tokens' stored type, document offsets,
// empty split, token ids >= the vocabulary), keeps a document index per split (8 bytes a
// document) and reads token ranges across shard boundaries with 64-bit offsets (each shard
// through a ShardReader: mapped raw chunks, or H5Dread).
// Why: users bring corpora of many gigabytes split across files, readable by h5ls/h5dump/h5py.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/hash.h"
#include "io/data_source.h"
#include "io/schedule.h"

namespace mt::io {

constexpr int kDatasetFormatVersion = 1;

struct DatasetWriterOptions {
  std::string dir;
  std::string dtype = "uint16";       // uint16 | uint32
  int vocab_size = 0;
  std::string tokenizer = "none";
  int64_t shard_tokens = 1 << 24;     // tokens per shard file
  double val_fraction = 0.05;         // share of documents in the val split
  bool compress = false;              // deflate (measured: random reads ~4x slower)
  int64_t chunk_tokens = 1 << 16;
  nlohmann::json generator;           // written to the manifest as "generator" (e.g. markov parameters)
};

class DatasetWriter {
 public:
  explicit DatasetWriter(DatasetWriterOptions opt);
  ~DatasetWriter();
  void add_document(const int32_t* tokens, int64_t n);  // assigned to train or val
  void finish();                                        // closes shards, writes the manifest
  int64_t tokens_written() const { return total_tokens_; }

 private:
  struct Split;
  void flush_shard(Split& s);
  DatasetWriterOptions opt_;
  std::map<std::string, std::unique_ptr<Split>> splits_;
  int64_t doc_counter_ = 0, total_tokens_ = 0;
  bool finished_ = false;
};

struct ShardInfo {
  std::string file;
  int64_t tokens = 0, docs = 0;
  uint64_t checksum = 0;
  int64_t first_token = 0;  // global offset of its first token in the split
};

// Index of the shard holding global token `offset` of a split (shards in stream order, each
// with first_token set); pure 64-bit arithmetic, unit-tested past 2^32.
size_t locate_shard(const std::vector<ShardInfo>& shards, int64_t offset);

class ShardReader;

class Dataset {
 public:
  // Validates manifest and shards (sizes, stored type, document offsets; with `verify` also
  // checksums and every token id < vocab_size, reading each shard once). Throws Error naming
  // the file (and offset). `mapped` = false reads through H5Dread only (tests). Ranks share
  // the token pass: only the shards with index = verify_first mod verify_stride (in manifest
  // order, train then val) are read (a bad shard fails the rank that reads it, which ends
  // the job).
  static Dataset open(const std::string& dir, bool verify = true, bool mapped = true, int verify_first = 0,
                      int verify_stride = 1);
  int64_t num_tokens(const std::string& split) const;
  int64_t num_documents(const std::string& split) const;
  int vocab_size() const { return vocab_; }
  const std::string& dtype() const { return dtype_; }
  const std::vector<ShardInfo>& shards(const std::string& split) const;
  // Document d of the split is tokens [starts[d], starts[d + 1]) (documents + 1 entries).
  const std::vector<int64_t>& doc_starts(const std::string& split) const;
  const nlohmann::json& generator() const { return generator_; }
  // Shards read through a mapping of their raw chunks (the rest go through H5Dread).
  int mapped_shards() const;
  int num_shards() const;
  // out[0..count) = tokens [offset, offset + count) of the split, across shard boundaries.
  void read_tokens(const std::string& split, int64_t offset, int64_t count, int32_t* out) const;
  // One split without string lookups, for the loader's hot path (valid while the Dataset
  // lives and is not moved).
  struct SplitView {
    const std::vector<ShardInfo>* shards = nullptr;
    const std::vector<std::shared_ptr<const ShardReader>>* readers = nullptr;
    const std::vector<int64_t>* doc_starts = nullptr;
    int64_t tokens = 0;
  };
  SplitView view(const std::string& split) const;
  static void read_tokens(const SplitView& v, int64_t offset, int64_t count, int32_t* out);
  // Throws if any token id >= vocab (checks the manifest's vocab_size against the model's).
  void check_vocab(int model_vocab) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, dtype_;
  int vocab_ = 0;
  nlohmann::json generator_;
  std::map<std::string, std::vector<ShardInfo>> splits_;
  std::map<std::string, std::vector<int64_t>> doc_starts_;
  std::map<std::string, std::vector<std::shared_ptr<const ShardReader>>> readers_;
};

// FNV-1a 64 of a shard's token values as little-endian bytes of its dtype.
uint64_t token_checksum(const void* data, size_t bytes, uint64_t h = core::kFnv1aOffset);

// Samples of a dataset (data.source: hdf5), addressed by id in [0, epoch_samples(split)):
// concat: window w = tokens [w T, w T + T + 1) of the split's stream; documents and packed:
// document d, with `eod_token` appended when it is >= 0 and the document does not already end
// with it, truncated to its first T + 1 tokens. The loader permutes ids per epoch
// (schedule.h). The eval split is `val`, or `train` if the dataset has no val split.
class Hdf5Source final : public DataSource {
 public:
  Hdf5Source(const std::string& dir, int model_vocab, int seq_len, SampleMode mode = SampleMode::Concat,
             bool verify = true, int verify_first = 0, int verify_stride = 1, int eod_token = -1);
  int vocab_size() const override { return ds_.vocab_size(); }
  void sample(Split split, uint64_t index, int seq_len, int32_t* out) const override;
  uint64_t epoch_samples(Split split) const override;
  void prefetch(Split split, uint64_t index) const override;
  const std::vector<int32_t>* sample_tokens(Split split) const override;
  std::optional<double> entropy_floor(int seq_len) const override;
  std::string describe() const override;
  const Dataset& dataset() const { return ds_; }
  const std::string& split_name(Split split) const;

 private:
  Dataset ds_;
  Dataset::SplitView views_[2];
  int T_;
  SampleMode mode_;
  int eod_;  // appended to documents not ending with it (-1 = none)
  std::string names_[2];
  std::vector<int32_t> doc_tokens_[2];  // documents, packed: min(length (+ 1 for an appended eod), T + 1)
  std::unique_ptr<DataSource> markov_;  // the generator, when prep made it (entropy floor)
};

}  // namespace mt::io
