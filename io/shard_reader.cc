// What: ShardReader (see shard_reader.h).
#include "io/shard_reader.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "io/h5_util.h"

namespace mt::io {

ShardReader::ShardReader(const std::string& path, const std::string& dtype, int64_t tokens, bool allow_map)
    : path_(path), width_(dtype == "uint32" ? 4 : 2), tokens_(tokens) {
  if (allow_map && tokens_ > 0) map_raw_chunks();
}

ShardReader::~ShardReader() {
  if (base_) munmap(const_cast<unsigned char*>(base_), map_bytes_);
  if (dset_ >= 0) H5Dclose(static_cast<hid_t>(dset_));
  if (file_ >= 0) H5Fclose(static_cast<hid_t>(file_));
}

// Finds where the raw token bytes live in the file; leaves base_ null (H5Dread path) if the
// layout is anything but raw little-endian chunks or a contiguous block.
void ShardReader::map_raw_chunks() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Handle f{H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (f.id < 0) return;
  H5Handle ds{H5Dopen2(f.id, "tokens", H5P_DEFAULT), H5Dclose};
  if (ds.id < 0) return;
  H5Handle type{H5Dget_type(ds.id), H5Tclose};
  if (H5Tget_order(type.id) != H5T_ORDER_LE || H5Tget_size(type.id) != width_) return;
  H5Handle dcpl{H5Dget_create_plist(ds.id), H5Pclose};
  const H5D_layout_t layout = H5Pget_layout(dcpl.id);
  std::vector<uint64_t> addr;
  int64_t chunk = 0;
  if (layout == H5D_CONTIGUOUS) {
    const haddr_t a = H5Dget_offset(ds.id);
    if (a == HADDR_UNDEF) return;
    addr.push_back(a);
    chunk = tokens_;
  } else if (layout == H5D_CHUNKED) {
    if (H5Pget_nfilters(dcpl.id) != 0) return;  // compressed: HDF5 must decode
    hsize_t dims[1] = {0};
    if (H5Pget_chunk(dcpl.id, 1, dims) != 1 || dims[0] == 0) return;
    chunk = static_cast<int64_t>(dims[0]);
    for (int64_t start = 0; start < tokens_; start += chunk) {
      hsize_t off[1] = {static_cast<hsize_t>(start)};
      unsigned mask = 0;
      haddr_t a = HADDR_UNDEF;
      hsize_t size = 0;
      if (H5Dget_chunk_info_by_coord(ds.id, off, &mask, &a, &size) < 0 || a == HADDR_UNDEF || mask != 0 ||
          size != static_cast<hsize_t>(chunk) * width_) {
        return;
      }
      addr.push_back(a);
    }
  } else {
    return;
  }
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    return;
  }
  const size_t bytes = static_cast<size_t>(st.st_size);
  for (size_t k = 0; k < addr.size(); ++k) {  // every chunk inside the file
    const int64_t n = std::min<int64_t>(chunk, tokens_ - static_cast<int64_t>(k) * chunk);
    if (addr[k] + static_cast<uint64_t>(n) * width_ > bytes) {
      ::close(fd);
      return;
    }
  }
  void* p = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return;
  base_ = static_cast<const unsigned char*>(p);
  map_bytes_ = bytes;
  chunk_ = chunk;
  chunk_addr_ = std::move(addr);
}

void ShardReader::read(int64_t offset, int64_t count, int32_t* out) const {
  MT_CHECK(offset >= 0 && count >= 0 && offset + count <= tokens_, "token range [{}, {}) outside shard {} of {} tokens",
           offset, offset + count, path_, tokens_);
  if (!base_) return read_hdf5(offset, count, out);
  while (count > 0) {
    const int64_t k = offset / chunk_, in = offset - k * chunk_;
    const int64_t n = std::min(count, chunk_ - in);
    const unsigned char* p = base_ + chunk_addr_[static_cast<size_t>(k)] + static_cast<size_t>(in) * width_;
    if (width_ == 2) {
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        out[i] = v;
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        uint32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        out[i] = static_cast<int32_t>(v);
      }
    }
    out += n, offset += n, count -= n;
  }
}

void ShardReader::prefetch(int64_t offset, int64_t count) const {
  if (!base_ || offset < 0 || count <= 0 || offset + count > tokens_) return;
  const int64_t k = offset / chunk_, in = offset - k * chunk_;
  const unsigned char* p = base_ + chunk_addr_[static_cast<size_t>(k)] + static_cast<size_t>(in) * width_;
  const size_t bytes = static_cast<size_t>(std::min(count, chunk_ - in)) * width_;
  for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 0, 0);
}

void ShardReader::read_hdf5(int64_t offset, int64_t count, int32_t* out) const {
  std::call_once(h5_once_, [this] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    file_ = H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file_ >= 0) dset_ = H5Dopen2(static_cast<hid_t>(file_), "tokens", H5P_DEFAULT);
  });
  if (dset_ < 0) throw core::Error("cannot open the shard's 'tokens' for reading").with_file(path_);
  if (count == 0) return;
  const hid_t ds = static_cast<hid_t>(dset_);
  H5Handle fspace{H5Dget_space(ds), H5Sclose};
  hsize_t start[1] = {static_cast<hsize_t>(offset)}, cnt[1] = {static_cast<hsize_t>(count)};
  H5Handle mspace{H5Screate_simple(1, cnt, nullptr), H5Sclose};
  // HDF5 converts the file's integers to native int32 (values < 2^31: vocabularies are smaller)
  if (H5Sselect_hyperslab(fspace.id, H5S_SELECT_SET, start, nullptr, cnt, nullptr) < 0 ||
      H5Dread(ds, H5T_NATIVE_INT32, mspace.id, fspace.id, H5P_DEFAULT, out) < 0) {
    throw core::Error(fmt::format("HDF5 read of tokens [{}, {}) failed", offset, offset + count)).with_file(path_);
  }
}

}  // namespace mt::io
