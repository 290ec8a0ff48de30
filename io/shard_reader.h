// What: reads token ranges of one dataset shard as int32. When the shard's `tokens` are stored
// raw (uncompressed chunks, or a contiguous layout) in little-endian order, the file is mapped
// read-only and ranges are copied straight out of the chunks, whose file addresses HDF5
// reports once at open (H5Dget_chunk_info_by_coord / H5Dget_offset). Otherwise (deflate,
// big-endian, anything unusual) every read goes through H5Dread with a hyperslab.
// Why: a concat sample is a few hundred to a few thousand tokens at a random offset; through
// H5Dread each costs a hyperslab selection, a chunk lookup and a copy (~10 us), which caps a
// loader far below the sequential read rate. A mapped read is a bounds check and a copy, and
// the page cache does the caching. Reads are const and thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace mt::io {

class ShardReader {
 public:
  // `dtype`: "uint16" | "uint32" (as in the manifest); `tokens`: the tokens dataset length.
  // `allow_map` = false forces the H5Dread path (tests compare both).
  ShardReader(const std::string& path, const std::string& dtype, int64_t tokens, bool allow_map = true);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  // out[0..count) = tokens [offset, offset + count) of this shard.
  void read(int64_t offset, int64_t count, int32_t* out) const;
  // Hints the CPU to fetch the cache lines of a range that will be read soon (mapped shards).
  void prefetch(int64_t offset, int64_t count) const;
  bool mapped() const { return base_ != nullptr; }
  const std::string& path() const { return path_; }

 private:
  void map_raw_chunks();
  void read_hdf5(int64_t offset, int64_t count, int32_t* out) const;

  std::string path_;
  size_t width_;
  int64_t tokens_;
  const unsigned char* base_ = nullptr;  // the mapped file
  size_t map_bytes_ = 0;
  int64_t chunk_ = 0;                    // tokens per chunk (the whole dataset if contiguous)
  std::vector<uint64_t> chunk_addr_;     // file address of each chunk's raw bytes
  mutable std::once_flag h5_once_;
  mutable int64_t file_ = -1, dset_ = -1;  // hid_t of the H5Dread path, opened on first use
};

}  // namespace mt::io
