// What: DatasetWriter, Dataset and Hdf5Source (see dataset.h). HDF5 C API, every call checked.
#include "io/dataset.h"

#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/rng.h"
#include "io/metrics.h"

namespace mt::io {

namespace fs = std::filesystem;

namespace {

struct H5 {  // closes an HDF5 handle at scope exit
  hid_t id;
  herr_t (*close)(hid_t);
  ~H5() {
    if (id >= 0) close(id);
  }
};
void h5check(herr_t rc, const char* call, const std::string& file) {
  if (rc < 0) throw core::Error(fmt::format("HDF5 call {} failed", call)).with_file(file);
}
hid_t file_type(const std::string& dtype) { return dtype == "uint32" ? H5T_STD_U32LE : H5T_STD_U16LE; }
hid_t mem_type(const std::string& dtype) { return dtype == "uint32" ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT16; }
size_t dtype_bytes(const std::string& dtype) { return dtype == "uint32" ? 4 : 2; }

void write_attr_string(hid_t obj, const char* name, const std::string& value, const std::string& file) {
  H5 type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, value.size() + 1);
  H5 space{H5Screate(H5S_SCALAR), H5Sclose};
  H5 a{H5Acreate2(obj, name, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  h5check(a.id, "H5Acreate2", file);
  h5check(H5Awrite(a.id, type.id, value.c_str()), "H5Awrite", file);
}
void write_attr_int(hid_t obj, const char* name, int64_t value, const std::string& file) {
  H5 space{H5Screate(H5S_SCALAR), H5Sclose};
  H5 a{H5Acreate2(obj, name, H5T_STD_I64LE, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  h5check(a.id, "H5Acreate2", file);
  h5check(H5Awrite(a.id, H5T_NATIVE_INT64, &value), "H5Awrite", file);
}

}  // namespace

uint64_t token_checksum(const void* data, size_t bytes, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

struct DatasetWriter::Split {
  std::string name;
  std::vector<uint32_t> tokens;           // current shard
  std::vector<uint64_t> doc_offsets{0};
  std::vector<ShardInfo> shards;
};

DatasetWriter::DatasetWriter(DatasetWriterOptions opt) : opt_(std::move(opt)) {
  MT_CHECK(opt_.dtype == "uint16" || opt_.dtype == "uint32", "dtype must be uint16 or uint32, not {}", opt_.dtype);
  MT_CHECK(opt_.vocab_size > 0, "the dataset needs a vocab_size");
  MT_CHECK(opt_.dtype == "uint32" || opt_.vocab_size <= 65536, "vocab_size {} does not fit uint16", opt_.vocab_size);
  ensure_directory(opt_.dir);
  for (const char* s : {"train", "val"}) {
    splits_[s] = std::make_unique<Split>();
    splits_[s]->name = s;
  }
}

DatasetWriter::~DatasetWriter() = default;

void DatasetWriter::add_document(const int32_t* tokens, int64_t n) {
  MT_CHECK(!finished_, "add_document after finish");
  // deterministic split: a hash of the document's index
  const bool val = core::uniform01_f64(0x5eed, 0xda7a, static_cast<uint64_t>(doc_counter_++)) < opt_.val_fraction;
  Split& s = *splits_[val ? "val" : "train"];
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= opt_.vocab_size) {
      throw core::Error(fmt::format("token id {} of document {} is outside the vocabulary [0, {})", tokens[i],
                                    doc_counter_ - 1, opt_.vocab_size));
    }
    s.tokens.push_back(static_cast<uint32_t>(tokens[i]));
  }
  s.doc_offsets.push_back(s.tokens.size());
  total_tokens_ += n;
  if (static_cast<int64_t>(s.tokens.size()) >= opt_.shard_tokens) flush_shard(s);
}

void DatasetWriter::flush_shard(Split& s) {
  if (s.tokens.empty()) return;
  const std::string file = fmt::format("{}_{:05d}.h5", s.name, s.shards.size());
  const std::string path = opt_.dir + "/" + file, tmp = path + ".tmp";
  // values in the file's dtype, for writing and the checksum
  std::vector<unsigned char> bytes(s.tokens.size() * dtype_bytes(opt_.dtype));
  if (opt_.dtype == "uint32") {
    std::memcpy(bytes.data(), s.tokens.data(), bytes.size());
  } else {
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const uint16_t v = static_cast<uint16_t>(s.tokens[i]);
      std::memcpy(bytes.data() + 2 * i, &v, 2);
    }
  }
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  {
    H5 f{H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
    h5check(f.id, "H5Fcreate", tmp);
    hsize_t n[1] = {s.tokens.size()};
    H5 space{H5Screate_simple(1, n, nullptr), H5Sclose};
    H5 dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
    hsize_t chunk[1] = {std::min<hsize_t>(n[0], static_cast<hsize_t>(opt_.chunk_tokens))};
    H5Pset_chunk(dcpl.id, 1, chunk);
    if (opt_.compress) H5Pset_deflate(dcpl.id, 4);
    H5 ds{H5Dcreate2(f.id, "tokens", file_type(opt_.dtype), space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT), H5Dclose};
    h5check(ds.id, "H5Dcreate2(tokens)", tmp);
    h5check(H5Dwrite(ds.id, mem_type(opt_.dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()), "H5Dwrite(tokens)", tmp);
    hsize_t nd[1] = {s.doc_offsets.size()};
    H5 dspace{H5Screate_simple(1, nd, nullptr), H5Sclose};
    H5 dd{H5Dcreate2(f.id, "doc_offsets", H5T_STD_U64LE, dspace.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
    h5check(dd.id, "H5Dcreate2(doc_offsets)", tmp);
    h5check(H5Dwrite(dd.id, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s.doc_offsets.data()), "H5Dwrite", tmp);
    write_attr_int(f.id, "format_version", kDatasetFormatVersion, tmp);
    write_attr_string(f.id, "dtype", opt_.dtype, tmp);
    write_attr_int(f.id, "vocab_size", opt_.vocab_size, tmp);
    write_attr_string(f.id, "tokenizer", opt_.tokenizer, tmp);
    write_attr_string(f.id, "split", s.name, tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw core::Error("cannot rename the shard into place").with_file(path).with_library(ec.message());
  ShardInfo info;
  info.file = file;
  info.tokens = static_cast<int64_t>(s.tokens.size());
  info.docs = static_cast<int64_t>(s.doc_offsets.size()) - 1;
  info.checksum = token_checksum(bytes.data(), bytes.size());
  s.shards.push_back(info);
  s.tokens.clear();
  s.doc_offsets.assign(1, 0);
}

void DatasetWriter::finish() {
  if (finished_) return;
  finished_ = true;
  nlohmann::json splits;
  for (auto& [name, s] : splits_) {
    flush_shard(*s);
    nlohmann::json list = nlohmann::json::array();
    for (const auto& sh : s->shards) {
      list.push_back({{"file", sh.file}, {"tokens", sh.tokens}, {"documents", sh.docs},
                      {"checksum", fmt::format("{:016x}", sh.checksum)}});
    }
    splits[name] = list;
  }
  nlohmann::json m{{"format_version", kDatasetFormatVersion}, {"dtype", opt_.dtype}, {"vocab_size", opt_.vocab_size},
                   {"tokenizer", opt_.tokenizer}, {"checksum", "fnv1a64 of the tokens as little-endian dtype bytes"},
                   {"splits", splits}};
  write_file_atomic(opt_.dir + "/manifest.json", m.dump(2) + "\n");
}

Dataset Dataset::open(const std::string& dir, bool verify) {
  const std::string mpath = dir + "/manifest.json";
  if (!fs::exists(mpath)) {
    throw core::Error("no dataset manifest").with_file(mpath).with_hint("build a dataset with `meshtrain prep`");
  }
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(read_file(mpath));
  } catch (const nlohmann::json::exception& e) {
    throw core::Error("unreadable dataset manifest").with_file(mpath).with_library(e.what());
  }
  Dataset d;
  d.dir_ = dir;
  const int version = m.value("format_version", -1);
  if (version != kDatasetFormatVersion) {
    throw core::Error(fmt::format("dataset format version {} is not supported (this build reads {})", version,
                                  kDatasetFormatVersion)).with_file(mpath);
  }
  d.dtype_ = m.value("dtype", "");
  if (d.dtype_ != "uint16" && d.dtype_ != "uint32") {
    throw core::Error(fmt::format("unknown token dtype '{}'", d.dtype_)).with_file(mpath).with_hint("uint16 or uint32");
  }
  d.vocab_ = m.value("vocab_size", 0);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  for (auto& [name, list] : m.at("splits").items()) {
    int64_t first = 0;
    for (const auto& s : list) {
      ShardInfo info;
      info.file = s.at("file").get<std::string>();
      info.tokens = s.at("tokens").get<int64_t>();
      info.docs = s.at("documents").get<int64_t>();
      info.checksum = std::stoull(s.at("checksum").get<std::string>(), nullptr, 16);
      info.first_token = first;
      first += info.tokens;
      const std::string path = dir + "/" + info.file;
      if (!fs::exists(path)) throw core::Error("missing shard").with_file(path).with_hint("the manifest lists it");
      H5 f{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
      if (f.id < 0) throw core::Error("unreadable or truncated shard (HDF5 cannot open it)").with_file(path);
      H5 ds{H5Dopen2(f.id, "tokens", H5P_DEFAULT), H5Dclose};
      if (ds.id < 0) throw core::Error("shard has no 'tokens' dataset").with_file(path);
      H5 space{H5Dget_space(ds.id), H5Sclose};
      hsize_t n[1] = {0};
      H5Sget_simple_extent_dims(space.id, n, nullptr);
      if (static_cast<int64_t>(n[0]) != info.tokens) {
        throw core::Error(fmt::format("shard holds {} tokens, the manifest says {}", n[0], info.tokens)).with_file(path);
      }
      if (verify) {
        std::vector<unsigned char> bytes(n[0] * dtype_bytes(d.dtype_));
        h5check(H5Dread(ds.id, mem_type(d.dtype_), H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()), "H5Dread", path);
        if (token_checksum(bytes.data(), bytes.size()) != info.checksum) {
          throw core::Error("shard checksum mismatch (corrupted tokens)").with_file(path);
        }
      }
      d.splits_[name].push_back(info);
    }
  }
  if (d.num_tokens("train") == 0) throw core::Error("the dataset's train split is empty").with_file(mpath);
  return d;
}

int64_t Dataset::num_tokens(const std::string& split) const {
  auto it = splits_.find(split);
  if (it == splits_.end() || it->second.empty()) return 0;
  return it->second.back().first_token + it->second.back().tokens;
}
int64_t Dataset::num_documents(const std::string& split) const {
  int64_t n = 0;
  auto it = splits_.find(split);
  if (it != splits_.end())
    for (const auto& s : it->second) n += s.docs;
  return n;
}
const std::vector<ShardInfo>& Dataset::shards(const std::string& split) const {
  static const std::vector<ShardInfo> none;
  auto it = splits_.find(split);
  return it == splits_.end() ? none : it->second;
}

void Dataset::check_vocab(int model_vocab) const {
  if (vocab_ > model_vocab) {
    throw core::Error(fmt::format("the dataset's vocab_size {} exceeds model.vocab_size {}", vocab_, model_vocab))
        .with_file(dir_ + "/manifest.json").with_yaml("model.vocab_size").with_hint("token ids must be < model.vocab_size");
  }
}

void Dataset::read_tokens(const std::string& split, int64_t offset, int64_t count, int32_t* out) const {
  const auto& shards = this->shards(split);
  MT_CHECK(offset >= 0 && offset + count <= num_tokens(split), "token range [{}, {}) outside split '{}' of {} tokens",
           offset, offset + count, split, num_tokens(split));
  auto it = std::upper_bound(shards.begin(), shards.end(), offset,
                             [](int64_t v, const ShardInfo& s) { return v < s.first_token; });
  --it;
  std::vector<uint32_t> buf;
  while (count > 0) {
    const int64_t in_shard = offset - it->first_token;
    const int64_t n = std::min(count, it->tokens - in_shard);
    const std::string path = dir_ + "/" + it->file;
    H5 f{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
    h5check(f.id, "H5Fopen", path);
    H5 ds{H5Dopen2(f.id, "tokens", H5P_DEFAULT), H5Dclose};
    h5check(ds.id, "H5Dopen2", path);
    H5 fspace{H5Dget_space(ds.id), H5Sclose};
    hsize_t start[1] = {static_cast<hsize_t>(in_shard)}, cnt[1] = {static_cast<hsize_t>(n)};
    h5check(H5Sselect_hyperslab(fspace.id, H5S_SELECT_SET, start, nullptr, cnt, nullptr), "H5Sselect_hyperslab", path);
    H5 mspace{H5Screate_simple(1, cnt, nullptr), H5Sclose};
    buf.resize(static_cast<size_t>(n));
    h5check(H5Dread(ds.id, H5T_NATIVE_UINT32, mspace.id, fspace.id, H5P_DEFAULT, buf.data()), "H5Dread", path);
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(buf[i]);
    out += n, offset += n, count -= n;
    ++it;
  }
}

Hdf5Source::Hdf5Source(const std::string& dir, int model_vocab, int seq_len, uint64_t seed)
    : ds_(Dataset::open(dir)), T_(seq_len), seed_(seed) {
  ds_.check_vocab(model_vocab);
  for (const char* s : {"train", "val"}) {
    if (ds_.num_tokens(s) > 0 && ds_.num_tokens(s) < seq_len + 1) {
      throw core::Error(fmt::format("split '{}' has {} tokens, fewer than one sample of seq_len + 1 = {}", s,
                                    ds_.num_tokens(s), seq_len + 1)).with_file(dir);
    }
  }
}

void Hdf5Source::sample(Split split, uint64_t index, int seq_len, int32_t* out) const {
  const std::string name = split == Split::Train || ds_.num_tokens("val") == 0 ? "train" : "val";
  const int64_t windows = (ds_.num_tokens(name) - 1) / T_;
  const uint64_t epoch = index / windows, pos = index % windows;
  // a seeded permutation of the windows of this epoch: sort-free, by a keyed random rank
  // would need O(windows) memory; an affine map i -> (a i + b) mod windows with a coprime to
  // windows is a permutation that depends only on (seed, epoch)
  uint64_t a = 1 + static_cast<uint64_t>(core::uniform01_f64(seed_, epoch, 0) * (windows - 1));
  while (std::__gcd<uint64_t>(a, static_cast<uint64_t>(windows)) != 1) a = a % windows + 1;
  const uint64_t b = static_cast<uint64_t>(core::uniform01_f64(seed_, epoch, 1) * windows);
  const uint64_t w = (static_cast<unsigned __int128>(a) * pos + b) % static_cast<uint64_t>(windows);
  ds_.read_tokens(name, static_cast<int64_t>(w) * T_, seq_len + 1, out);
}

std::string Hdf5Source::describe() const {
  return fmt::format("HDF5 dataset {}: {} train / {} val tokens, vocab {}, {} (concat windows of seq_len + 1)",
                     ds_.dir(), ds_.num_tokens("train"), ds_.num_tokens("val"), ds_.vocab_size(), ds_.dtype());
}

}  // namespace mt::io
