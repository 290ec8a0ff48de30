// What: DatasetWriter, Dataset and Hdf5Source (see dataset.h). HDF5 C API, every call checked.
#include "io/dataset.h"

#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "io/h5_util.h"
#include "io/markov_source.h"
#include "io/metrics.h"
#include "io/shard_reader.h"

namespace mt::io {

namespace fs = std::filesystem;

namespace {

hid_t file_type(const std::string& dtype) { return dtype == "uint32" ? H5T_STD_U32LE : H5T_STD_U16LE; }
hid_t mem_type(const std::string& dtype) { return dtype == "uint32" ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT16; }
size_t dtype_bytes(const std::string& dtype) { return dtype == "uint32" ? 4 : 2; }

void write_attr_string(hid_t obj, const char* name, const std::string& value, const std::string& file) {
  H5Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, value.size() + 1);
  H5Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  H5Handle a{H5Acreate2(obj, name, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  h5check(a.id, "H5Acreate2", file);
  h5check(H5Awrite(a.id, type.id, value.c_str()), "H5Awrite", file);
}
void write_attr_int(hid_t obj, const char* name, int64_t value, const std::string& file) {
  H5Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  H5Handle a{H5Acreate2(obj, name, H5T_STD_I64LE, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  h5check(a.id, "H5Acreate2", file);
  h5check(H5Awrite(a.id, H5T_NATIVE_INT64, &value), "H5Awrite", file);
}

}  // namespace

uint64_t token_checksum(const void* data, size_t bytes, uint64_t h) { return core::fnv1a64(data, bytes, h); }

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
    H5Handle f{H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
    h5check(f.id, "H5Fcreate", tmp);
    hsize_t n[1] = {s.tokens.size()};
    H5Handle space{H5Screate_simple(1, n, nullptr), H5Sclose};
    H5Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
    hsize_t chunk[1] = {std::min<hsize_t>(n[0], static_cast<hsize_t>(opt_.chunk_tokens))};
    H5Pset_chunk(dcpl.id, 1, chunk);
    if (opt_.compress) H5Pset_deflate(dcpl.id, 4);
    H5Pset_obj_track_times(dcpl.id, false);  // no timestamps: the same documents give the same bytes
    H5Handle ds{H5Dcreate2(f.id, "tokens", file_type(opt_.dtype), space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT), H5Dclose};
    h5check(ds.id, "H5Dcreate2(tokens)", tmp);
    h5check(H5Dwrite(ds.id, mem_type(opt_.dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()), "H5Dwrite(tokens)", tmp);
    hsize_t nd[1] = {s.doc_offsets.size()};
    H5Handle dspace{H5Screate_simple(1, nd, nullptr), H5Sclose};
    H5Handle dcpl_off{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
    H5Pset_obj_track_times(dcpl_off.id, false);
    H5Handle dd{H5Dcreate2(f.id, "doc_offsets", H5T_STD_U64LE, dspace.id, H5P_DEFAULT, dcpl_off.id, H5P_DEFAULT), H5Dclose};
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
  if (!opt_.generator.is_null()) m["generator"] = opt_.generator;
  write_file_atomic(opt_.dir + "/manifest.json", m.dump(2) + "\n");
}

size_t locate_shard(const std::vector<ShardInfo>& shards, int64_t offset) {
  MT_CHECK(!shards.empty() && offset >= shards.front().first_token, "token offset {} before the first shard", offset);
  auto it = std::upper_bound(shards.begin(), shards.end(), offset,
                             [](int64_t v, const ShardInfo& s) { return v < s.first_token; });
  return static_cast<size_t>(it - shards.begin()) - 1;
}

namespace {
const char* int_type_name(hid_t t) {
  if (H5Tget_class(t) == H5T_FLOAT) return H5Tget_size(t) == 4 ? "float32" : "float64";
  if (H5Tget_class(t) != H5T_INTEGER) return "a non-integer type";
  const bool u = H5Tget_sign(t) == H5T_SGN_NONE;
  switch (H5Tget_size(t)) {
    case 1: return u ? "uint8" : "int8";
    case 2: return u ? "uint16" : "int16";
    case 4: return u ? "uint32" : "int32";
    case 8: return u ? "uint64" : "int64";
  }
  return "an integer type of unusual size";
}

// Checks a shard's tokens (stored type, length) and document offsets; appends its documents'
// global starts to `starts`; with `verify` reads the tokens once for the checksum and the
// vocabulary. Throws Error naming the shard.
void check_shard(const std::string& path, const std::string& dtype, int vocab, ShardInfo& info, bool verify,
                 std::vector<int64_t>& starts) {
  H5Handle f{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (f.id < 0) throw core::Error("unreadable or truncated shard (HDF5 cannot open it)").with_file(path);
  H5Handle ds{H5Dopen2(f.id, "tokens", H5P_DEFAULT), H5Dclose};
  if (ds.id < 0) throw core::Error("shard has no 'tokens' dataset").with_file(path);
  H5Handle type{H5Dget_type(ds.id), H5Tclose};
  if (H5Tget_class(type.id) != H5T_INTEGER || H5Tget_sign(type.id) != H5T_SGN_NONE ||
      H5Tget_size(type.id) != dtype_bytes(dtype)) {
    throw core::Error(fmt::format("the shard's tokens are stored as {}, the manifest says {}", int_type_name(type.id),
                                  dtype)).with_file(path).with_hint("rebuild the dataset with `meshtrain prep`");
  }
  H5Handle space{H5Dget_space(ds.id), H5Sclose};
  hsize_t n[1] = {0};
  if (H5Sget_simple_extent_ndims(space.id) != 1) throw core::Error("the shard's 'tokens' is not 1-D").with_file(path);
  H5Sget_simple_extent_dims(space.id, n, nullptr);
  if (static_cast<int64_t>(n[0]) != info.tokens) {
    throw core::Error(fmt::format("shard holds {} tokens, the manifest says {}", n[0], info.tokens)).with_file(path);
  }
  // document boundaries: docs + 1 non-decreasing offsets from 0 to the token count
  H5Handle dd{H5Dopen2(f.id, "doc_offsets", H5P_DEFAULT), H5Dclose};
  if (dd.id < 0) throw core::Error("shard has no 'doc_offsets' dataset").with_file(path);
  H5Handle dspace{H5Dget_space(dd.id), H5Sclose};
  hsize_t nd[1] = {0};
  H5Sget_simple_extent_dims(dspace.id, nd, nullptr);
  if (static_cast<int64_t>(nd[0]) != info.docs + 1) {
    throw core::Error(fmt::format("shard has {} doc_offsets, expected documents + 1 = {}", nd[0], info.docs + 1))
        .with_file(path);
  }
  std::vector<uint64_t> off(nd[0]);
  h5check(H5Dread(dd.id, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off.data()), "H5Dread(doc_offsets)", path);
  for (size_t i = 0; i < off.size(); ++i) {
    const bool bad = (i == 0 && off[i] != 0) || (i > 0 && off[i] < off[i - 1]) ||
                     (i + 1 == off.size() && off[i] != n[0]) || off[i] > n[0];
    if (bad) {
      throw core::Error(fmt::format("doc_offsets[{}] = {} is invalid (offsets must rise from 0 to the {} tokens)", i,
                                    off[i], n[0])).with_file(path);
    }
    if (i > 0) starts.push_back(info.first_token + static_cast<int64_t>(off[i]));
  }
  if (!verify) return;
  // checksum and vocabulary, in blocks (bounded memory)
  const int64_t block = 1 << 20;
  std::vector<unsigned char> bytes;
  uint64_t h = core::kFnv1aOffset;
  for (int64_t start = 0; start < info.tokens; start += block) {
    const int64_t cnt = std::min(block, info.tokens - start);
    bytes.resize(static_cast<size_t>(cnt) * dtype_bytes(dtype));
    H5Handle fs{H5Dget_space(ds.id), H5Sclose};
    hsize_t s0[1] = {static_cast<hsize_t>(start)}, c0[1] = {static_cast<hsize_t>(cnt)};
    H5Handle ms{H5Screate_simple(1, c0, nullptr), H5Sclose};
    h5check(H5Sselect_hyperslab(fs.id, H5S_SELECT_SET, s0, nullptr, c0, nullptr), "H5Sselect_hyperslab", path);
    h5check(H5Dread(ds.id, mem_type(dtype), ms.id, fs.id, H5P_DEFAULT, bytes.data()), "H5Dread(tokens)", path);
    h = token_checksum(bytes.data(), bytes.size(), h);
    const auto at = [&](int64_t i) -> uint32_t {
      if (dtype == "uint16") return reinterpret_cast<const uint16_t*>(bytes.data())[i];
      return reinterpret_cast<const uint32_t*>(bytes.data())[i];
    };
    uint32_t mx = 0;
    if (dtype == "uint16") {
      const auto* p = reinterpret_cast<const uint16_t*>(bytes.data());
      for (int64_t i = 0; i < cnt; ++i) mx = std::max<uint32_t>(mx, p[i]);
    } else {
      const auto* p = reinterpret_cast<const uint32_t*>(bytes.data());
      for (int64_t i = 0; i < cnt; ++i) mx = std::max(mx, p[i]);
    }
    if (mx < static_cast<uint32_t>(vocab)) continue;
    for (int64_t i = 0; i < cnt; ++i) {
      const uint32_t v = at(i);
      if (v >= static_cast<uint32_t>(vocab)) {
        throw core::Error(fmt::format("token id {} at offset {} of the shard is >= the dataset's vocab_size {}", v,
                                      start + i, vocab)).with_file(path)
            .with_hint("the manifest's vocab_size must exceed every token id");
      }
    }
  }
  if (h != info.checksum) {
    throw core::Error(fmt::format("shard checksum mismatch (corrupted tokens): the manifest says {:016x}, the tokens "
                                  "give {:016x}", info.checksum, h)).with_file(path);
  }
}
}  // namespace

Dataset Dataset::open(const std::string& dir, bool verify, bool mapped, int verify_first, int verify_stride) {
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
  if (d.vocab_ <= 0) throw core::Error("the manifest has no positive vocab_size").with_file(mpath);
  d.generator_ = m.value("generator", nlohmann::json());
  if (!m.contains("splits") || !m["splits"].is_object()) throw core::Error("the manifest has no splits").with_file(mpath);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  int64_t shard_index = 0;  // over all splits, for the share of the token pass
  verify_stride = std::max(verify_stride, 1);
  for (auto& [name, list] : m.at("splits").items()) {
    int64_t first = 0;
    std::vector<int64_t>& starts = d.doc_starts_[name];
    starts.assign(1, 0);
    for (const auto& s : list) {
      ShardInfo info;
      try {
        info.file = s.at("file").get<std::string>();
        info.tokens = s.at("tokens").get<int64_t>();
        info.docs = s.at("documents").get<int64_t>();
        info.checksum = std::stoull(s.at("checksum").get<std::string>(), nullptr, 16);
      } catch (const std::exception& e) {
        throw core::Error(fmt::format("malformed shard entry in split '{}': {}", name, s.dump())).with_file(mpath)
            .with_library(e.what());
      }
      info.first_token = first;
      first += info.tokens;
      const std::string path = dir + "/" + info.file;
      if (!fs::exists(path)) throw core::Error("missing shard").with_file(path).with_hint("the manifest lists it");
      const bool mine = verify && shard_index++ % verify_stride == verify_first;
      check_shard(path, d.dtype_, d.vocab_, info, mine, starts);
      d.splits_[name].push_back(info);
      d.readers_[name].push_back(std::make_shared<const ShardReader>(path, d.dtype_, info.tokens, mapped));
    }
  }
  if (d.num_tokens("train") == 0) {
    throw core::Error("the dataset's train split is empty").with_file(mpath)
        .with_hint("prep needs at least one document in the train split (--val-fraction < 1)");
  }
  return d;
}

int64_t Dataset::num_tokens(const std::string& split) const {
  auto it = splits_.find(split);
  if (it == splits_.end() || it->second.empty()) return 0;
  return it->second.back().first_token + it->second.back().tokens;
}
int64_t Dataset::num_documents(const std::string& split) const {
  auto it = doc_starts_.find(split);
  return it == doc_starts_.end() ? 0 : static_cast<int64_t>(it->second.size()) - 1;
}
const std::vector<ShardInfo>& Dataset::shards(const std::string& split) const {
  static const std::vector<ShardInfo> none;
  auto it = splits_.find(split);
  return it == splits_.end() ? none : it->second;
}
const std::vector<int64_t>& Dataset::doc_starts(const std::string& split) const {
  static const std::vector<int64_t> none{0};
  auto it = doc_starts_.find(split);
  return it == doc_starts_.end() ? none : it->second;
}

int Dataset::mapped_shards() const {
  int n = 0;
  for (const auto& [name, list] : readers_)
    for (const auto& r : list) n += r->mapped();
  return n;
}
int Dataset::num_shards() const {
  int n = 0;
  for (const auto& [name, list] : readers_) n += static_cast<int>(list.size());
  return n;
}

void Dataset::check_vocab(int model_vocab) const {
  if (vocab_ > model_vocab) {
    throw core::Error(fmt::format("the dataset's vocab_size {} exceeds model.vocab_size {}", vocab_, model_vocab))
        .with_file(dir_ + "/manifest.json").with_yaml("model.vocab_size").with_hint("token ids must be < model.vocab_size");
  }
}

Dataset::SplitView Dataset::view(const std::string& split) const {
  SplitView v;
  auto s = splits_.find(split);
  if (s == splits_.end()) return v;
  v.shards = &s->second;
  v.readers = &readers_.at(split);
  v.doc_starts = &doc_starts_.at(split);
  v.tokens = num_tokens(split);
  return v;
}

void Dataset::read_tokens(const std::string& split, int64_t offset, int64_t count, int32_t* out) const {
  MT_CHECK(splits_.count(split), "the dataset has no split '{}'", split);
  read_tokens(view(split), offset, count, out);
}

void Dataset::read_tokens(const SplitView& v, int64_t offset, int64_t count, int32_t* out) {
  MT_CHECK(offset >= 0 && count >= 0 && offset + count <= v.tokens, "token range [{}, {}) outside a split of {} tokens",
           offset, offset + count, v.tokens);
  if (count == 0) return;
  const auto& shards = *v.shards;
  for (size_t k = locate_shard(shards, offset); count > 0; ++k) {
    const int64_t in_shard = offset - shards[k].first_token;
    const int64_t n = std::min(count, shards[k].tokens - in_shard);
    (*v.readers)[k]->read(in_shard, n, out);
    out += n, offset += n, count -= n;
  }
}

Hdf5Source::Hdf5Source(const std::string& dir, int model_vocab, int seq_len, SampleMode mode, bool verify,
                       int verify_first, int verify_stride, int eod_token)
    : ds_(Dataset::open(dir, verify, true, verify_first, verify_stride)), T_(seq_len), mode_(mode),
      eod_(mode == SampleMode::Concat ? -1 : eod_token) {
  ds_.check_vocab(model_vocab);
  names_[0] = "train";
  names_[1] = ds_.num_tokens("val") > 0 ? "val" : "train";
  if (names_[1] == "train" && core::process_rank() <= 0) {
    core::log::warn("dataset {} has no val split: eval_loss is measured on the first batches of the train split "
                    "(prep with --val-fraction > 0 for held-out data)", dir);
  }
  views_[0] = ds_.view(names_[0]);
  views_[1] = ds_.view(names_[1]);
  for (int k = 0; k < 2; ++k) {
    const std::string& s = names_[k];
    if (mode_ == SampleMode::Concat) {
      if (ds_.num_tokens(s) < seq_len + 1) {
        throw core::Error(fmt::format("split '{}' has {} tokens, fewer than one sample of seq_len + 1 = {}", s,
                                      ds_.num_tokens(s), seq_len + 1))
            .with_file(dir).with_yaml("model.seq_len")
            .with_hint(k == 1 ? "the val split is the eval set: prep with a larger --val-fraction, or a smaller seq_len"
                              : "use a smaller model.seq_len, or more data");
      }
      continue;
    }
    const auto& starts = ds_.doc_starts(s);
    auto& len = doc_tokens_[k];
    len.resize(starts.size() - 1);
    int64_t longest = 0, usable = 0;
    for (size_t d = 0; d + 1 < starts.size(); ++d) {
      int64_t n = starts[d + 1] - starts[d];
      // the end-of-document token: appended unless the document ends with it; only documents
      // shorter than the sample (T + 1 tokens) need their last token read (the rest are cut)
      if (eod_ >= 0 && n < seq_len + 1) {
        int32_t last = -1;
        if (n > 0) Dataset::read_tokens(views_[k], starts[d + 1] - 1, 1, &last);
        if (last != eod_) ++n;
      }
      longest = std::max(longest, n);
      usable += n >= 2;
      len[d] = static_cast<int32_t>(std::min<int64_t>(n, seq_len + 1));
    }
    if (usable == 0) {
      throw core::Error(fmt::format("split '{}' has no document of 2 or more tokens (documents mode needs one "
                                    "token to predict from another)", s)).with_file(dir + "/manifest.json");
    }
    // (the val split may be all short documents; packed rows take several short ones)
    if (k == 0 && mode_ == SampleMode::Documents && longest < seq_len) {
      throw core::Error(fmt::format("model.seq_len = {} is longer than every document of split '{}' (the longest has "
                                    "{} tokens)", seq_len, s, longest)).with_file(dir + "/manifest.json")
          .with_yaml("model.seq_len").with_hint("use a seq_len the documents fill, or data.mode: concat");
    }
  }
  const auto& g = ds_.generator();
  if (g.is_object() && g.contains("markov")) {
    const auto& mk = g["markov"];
    markov_ = std::make_unique<MarkovSource>(mk.at("vocab").get<int>(), mk.at("order").get<int>(),
                                             mk.at("sharpness").get<double>(), mk.at("seed").get<uint64_t>());
  }
}

const std::string& Hdf5Source::split_name(Split split) const { return names_[split == Split::Train ? 0 : 1]; }

uint64_t Hdf5Source::epoch_samples(Split split) const {
  const std::string& name = split_name(split);
  if (mode_ != SampleMode::Concat) return static_cast<uint64_t>(ds_.num_documents(name));
  return static_cast<uint64_t>((ds_.num_tokens(name) - 1) / T_);
}

const std::vector<int32_t>* Hdf5Source::sample_tokens(Split split) const {
  return mode_ != SampleMode::Concat ? &doc_tokens_[split == Split::Train ? 0 : 1] : nullptr;
}

void Hdf5Source::sample(Split split, uint64_t index, int seq_len, int32_t* out) const {
  MT_CHECK(seq_len == T_, "dataset source opened for seq_len {}, asked for {}", T_, seq_len);
  const int k = split == Split::Train ? 0 : 1;
  const Dataset::SplitView& v = views_[k];
  if (mode_ == SampleMode::Concat) {
    Dataset::read_tokens(v, static_cast<int64_t>(index) * T_, T_ + 1, out);  // range-checked there
  } else {
    MT_CHECK(index < doc_tokens_[k].size(), "document {} outside the {} of the split", index, doc_tokens_[k].size());
    const int64_t stored = (*v.doc_starts)[index + 1] - (*v.doc_starts)[index];
    const int32_t n = doc_tokens_[k][index];
    Dataset::read_tokens(v, (*v.doc_starts)[index], std::min<int64_t>(n, stored), out);
    if (n > stored) out[stored] = eod_;  // (only when the eod was appended)
  }
}

void Hdf5Source::prefetch(Split split, uint64_t index) const {
  const int k = split == Split::Train ? 0 : 1;
  const Dataset::SplitView& v = views_[k];
  int64_t offset = 0, count = 0;
  if (mode_ == SampleMode::Concat) {
    offset = static_cast<int64_t>(index) * T_, count = T_ + 1;
  } else if (index < doc_tokens_[k].size()) {
    offset = (*v.doc_starts)[index];
    count = std::min<int64_t>(doc_tokens_[k][index], (*v.doc_starts)[index + 1] - offset);
  }
  if (count <= 0 || offset + count > v.tokens) return;
  const size_t s = locate_shard(*v.shards, offset);
  (*v.readers)[s]->prefetch(offset - (*v.shards)[s].first_token, count);
}

std::optional<double> Hdf5Source::entropy_floor(int seq_len) const {
  // the generator's floor: exact for documents of at least seq_len + 1 tokens; windows that
  // cross a document boundary are slightly harder (ignored: a few tokens per document)
  return markov_ ? markov_->entropy_floor(seq_len) : std::nullopt;
}

std::string Hdf5Source::describe() const {
  return fmt::format("HDF5 dataset {}: {} train / {} val tokens, {} / {} documents, vocab {}, {}, {}/{} shards mapped; "
                     "{} mode: {} train samples per epoch{}",
                     ds_.dir(), ds_.num_tokens("train"), ds_.num_tokens("val"), ds_.num_documents("train"),
                     ds_.num_documents("val"), ds_.vocab_size(), ds_.dtype(), ds_.mapped_shards(), ds_.num_shards(),
                     mode_name(mode_), epoch_samples(Split::Train),
                     mode_ == SampleMode::Concat ? fmt::format(" (windows of seq_len + 1 = {} tokens)", T_ + 1)
                     : fmt::format(" (documents{} truncated to {} tokens)",
                                   eod_ >= 0 ? fmt::format(" ending with eod token {}", eod_) : "", T_ + 1));
}

}  // namespace mt::io
