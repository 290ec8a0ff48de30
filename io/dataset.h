// What: sharded token datasets in HDF5 (docs/dataset-format.md): a directory of shard files,
// each with a 1-D chunked `tokens` dataset (uint16 or uint32) and `doc_offsets` (uint64
// document starts, plus the end), and manifest.json (format version, dtype, vocab size,
// tokenizer, per split the shards with token and document counts and checksums).
// Writer: streams documents into shards of a given size, train/val assignment per document
// by a deterministic hash. Reader: validates the manifest and shards up front (missing or
// truncated shard, checksum, format version, dtype, empty split, token ids >= the model's
// vocabulary) and reads token ranges across shard boundaries with 64-bit offsets.
// Why: users bring corpora of many gigabytes split across files, readable by h5ls/h5dump/h5py.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/data_source.h"

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

class Dataset {
 public:
  // Validates manifest and shards (sizes; checksums too if verify). Throws Error naming the file.
  static Dataset open(const std::string& dir, bool verify = true);
  int64_t num_tokens(const std::string& split) const;
  int64_t num_documents(const std::string& split) const;
  int vocab_size() const { return vocab_; }
  const std::string& dtype() const { return dtype_; }
  const std::vector<ShardInfo>& shards(const std::string& split) const;
  // out[0..count) = tokens [offset, offset + count) of the split, across shard boundaries.
  void read_tokens(const std::string& split, int64_t offset, int64_t count, int32_t* out) const;
  // Throws if any token id >= vocab (checks the manifest's vocab_size against the model's).
  void check_vocab(int model_vocab) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, dtype_;
  int vocab_ = 0;
  std::map<std::string, std::vector<ShardInfo>> splits_;
};

// FNV-1a 64 of a shard's token values as little-endian bytes of its dtype.
uint64_t token_checksum(const void* data, size_t bytes, uint64_t h = 1469598103934665603ull);

// Concat-mode samples over a dataset split: window i = tokens [i*T, i*T + T + 1); windows are
// visited in a seeded permutation per epoch, a pure function of (seed, epoch).
class Hdf5Source final : public DataSource {
 public:
  Hdf5Source(const std::string& dir, int model_vocab, int seq_len, uint64_t seed);
  int vocab_size() const override { return ds_.vocab_size(); }
  void sample(Split split, uint64_t index, int seq_len, int32_t* out) const override;
  std::string describe() const override;

 private:
  Dataset ds_;
  int T_;
  uint64_t seed_;
};

}  // namespace mt::io
