// What: the safetensors reader and writer (see safetensors.h).
#include "io/hf/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/metrics.h"

namespace mt::io::hf {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit (100 MB)

core::Error bad_file(const std::string& path, const std::string& msg) {
  core::Error e(msg);
  e.with_file(path).with_hint("the file is truncated or was not written as safetensors; download or export it again");
  return e;
}

std::string shape_text(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}
}  // namespace

int dtype_bytes(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "BOOL" || d == "U8" || d == "I8" || d == "F8_E5M2" || d == "F8_E4M3") return 1;
  return 0;
}

uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN, sign kept
  u += 0x7fff + ((u >> 16) & 1);                                      // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ff;
  float f;
  if (exp == 0) {  // zero or subnormal: man x 2^-24
    f = std::ldexp(static_cast<float>(man), -24);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u |= sign;
    std::memcpy(&f, &u, 4);
    return f;
  }
  const uint32_t u = exp == 31 ? sign | 0x7f800000u | (man << 13) : sign | ((exp - 15 + 127) << 23) | (man << 13);
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- reading ----

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw core::Error("cannot open the safetensors file").with_file(path).with_library(std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw core::Error("cannot stat the safetensors file").with_file(path).with_library(std::strerror(errno));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      throw core::Error("cannot memory-map the safetensors file").with_file(path).with_library(std::strerror(errno));
    }
    data_ = static_cast<const unsigned char*>(m);
  }
  ::close(fd);  // the mapping stays valid
  try {
    if (size_ < 8) throw bad_file(path, fmt::format("truncated header: the file has {} bytes, fewer than the 8-byte header length", size_));
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | data_[i];  // little-endian
    if (n > size_ - 8) {
      throw bad_file(path, fmt::format("truncated header: its length is {} bytes but only {} bytes follow", n, size_ - 8));
    }
    if (n > kMaxHeaderBytes) throw bad_file(path, fmt::format("header of {} bytes exceeds the format's 100 MB limit", n));
    const size_t data_start = 8 + static_cast<size_t>(n), data_bytes = size_ - data_start;
    json h;
    try {
      h = json::parse(data_ + 8, data_ + data_start);
    } catch (const json::exception& e) {
      throw bad_file(path, "the header is not valid JSON").with_library(e.what());
    }
    if (!h.is_object()) throw bad_file(path, "the header is not a JSON object");
    for (const auto& [name, v] : h.items()) {
      if (name == "__metadata__") {
        if (!v.is_object()) throw bad_file(path, "__metadata__ is not an object of strings");
        for (const auto& [k, s] : v.items()) {
          if (!s.is_string()) throw bad_file(path, fmt::format("__metadata__ value of '{}' is not a string", k));
          metadata_[k] = s.get<std::string>();
        }
        continue;
      }
      auto bad_tensor = [&](const std::string& what) { return bad_file(path, fmt::format("tensor '{}': {}", name, what)); };
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
        throw bad_tensor("needs dtype, shape and data_offsets");
      TensorEntry t;
      t.name = name;
      if (!v["dtype"].is_string()) throw bad_tensor("dtype is not a string");
      t.dtype = v["dtype"].get<std::string>();
      const int eb = dtype_bytes(t.dtype);
      if (eb == 0) throw bad_tensor(fmt::format("unknown dtype '{}'", t.dtype));
      if (!v["shape"].is_array()) throw bad_tensor("shape is not a list");
      for (const auto& d : v["shape"]) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0) throw bad_tensor("shape has an entry that is not a size");
        t.shape.push_back(d.get<int64_t>());
        t.numel *= t.shape.back();
      }
      const auto& off = v["data_offsets"];
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        throw bad_tensor("data_offsets is not [begin, end]");
      const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
      if (b > e) throw bad_tensor(fmt::format("data_offsets [{}, {}] end before they begin", b, e));
      if (e > data_bytes) {
        throw bad_tensor(fmt::format("data_offsets [{}, {}] reach past the end of the file ({} data bytes)", b, e,
                                     data_bytes));
      }
      if (e - b != static_cast<uint64_t>(t.numel) * static_cast<uint64_t>(eb)) {
        throw bad_tensor(fmt::format("{} bytes for shape {} of {} ({} bytes expected)", e - b, shape_text(t.shape),
                                     t.dtype, t.numel * eb));
      }
      t.begin = static_cast<int64_t>(data_start + b);
      t.end = static_cast<int64_t>(data_start + e);
      tensors_[name] = std::move(t);
    }
    // the data: tensors back to back, no overlap, no hole, nothing after the last
    std::vector<const TensorEntry*> order;
    for (const auto& [k, t] : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
    int64_t at = static_cast<int64_t>(data_start);
    for (const TensorEntry* t : order) {
      if (t->begin < at) throw bad_file(path, fmt::format("tensor '{}' overlaps the tensor before it", t->name));
      if (t->begin > at) throw bad_file(path, fmt::format("{} unused bytes before tensor '{}'", t->begin - at, t->name));
      at = t->end;
    }
    if (at != static_cast<int64_t>(size_))
      throw bad_file(path, fmt::format("{} bytes after the last tensor", static_cast<int64_t>(size_) - at));
  } catch (...) {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
    data_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void SafetensorsFile::read(const TensorEntry& t, int64_t first, int64_t n, float* out, int64_t stride) const {
  if (n <= 0) return;
  MT_CHECK(first >= 0 && stride >= 1 && first + (n - 1) * stride < t.numel,
           "read of elements {} + {} x {} outside tensor '{}' of {} elements ({})", first, n, stride, t.name, t.numel,
           path_);
  const unsigned char* base = data_ + t.begin;
  if (t.dtype == "F32") {
    if (stride == 1) {
      std::memcpy(out, base + first * 4, static_cast<size_t>(n) * 4);
    } else {
      for (int64_t i = 0; i < n; ++i) std::memcpy(out + i, base + (first + i * stride) * 4, 4);
    }
    return;
  }
  if (t.dtype == "BF16" || t.dtype == "F16") {
    const bool bf = t.dtype == "BF16";
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, base + (first + i * stride) * 2, 2);
      out[i] = bf ? bf16_to_float(h) : f16_to_float(h);
    }
    return;
  }
  if (t.dtype == "I8") {  // the raw integers (SafetensorsModel::read applies the scales)
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int8_t>(base[first + i * stride]));
    return;
  }
  throw core::Error(fmt::format("tensor '{}' has dtype {}, which meshtrain does not read", t.name, t.dtype))
      .with_file(path_).with_hint("meshtrain reads F32, BF16 and F16 weights (and I8 with scales from its own int8 "
                                  "export); convert the model to one of them");
}

SafetensorsModel::SafetensorsModel(const std::string& dir) : dir_(dir) {
  const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(index, ec)) {
    source_ = index;
    json j;
    try {
      j = json::parse(read_file(index));
    } catch (const json::exception& e) {
      throw core::Error("the safetensors index is not valid JSON").with_file(index).with_library(e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw core::Error("the safetensors index has no weight_map object").with_file(index);
    std::map<std::string, size_t> file_index;
    for (const auto& [name, f] : j["weight_map"].items()) {
      if (!f.is_string()) throw core::Error(fmt::format("weight_map entry '{}' is not a file name", name)).with_file(index);
      const std::string file = f.get<std::string>();
      if (file.find('/') != std::string::npos)
        throw core::Error(fmt::format("weight_map names '{}' outside the model directory", file)).with_file(index);
      auto it = file_index.find(file);
      if (it == file_index.end()) {
        files_.push_back(std::make_unique<SafetensorsFile>(dir + "/" + file));
        it = file_index.emplace(file, files_.size() - 1).first;
      }
      if (!files_[it->second]->find(name)) {
        throw core::Error(fmt::format("tensor '{}' is not in {}, where the index says it is", name, file))
            .with_file(index);
      }
      where_[name] = it->second;
    }
  } else if (fs::exists(single, ec)) {
    source_ = single;
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& [name, t] : files_[0]->tensors()) where_[name] = 0;
  } else {
    std::string hint = "a Hugging Face model directory has config.json and model.safetensors (or sharded: "
                       "model.safetensors.index.json and its shards)";
    if (fs::exists(dir + "/pytorch_model.bin", ec) || fs::exists(dir + "/pytorch_model.bin.index.json", ec))
      hint = "this model is in PyTorch pickle format (pytorch_model.bin), which meshtrain does not read: save it with "
             "save_pretrained(..., safe_serialization=True)";
    throw core::Error("no model.safetensors or model.safetensors.index.json").with_file(dir).with_hint(hint);
  }
}

SafetensorsModel SafetensorsModel::from_file(const std::string& path) {
  SafetensorsModel m;
  m.dir_ = fs::path(path).parent_path().string();
  m.source_ = path;
  m.files_.push_back(std::make_unique<SafetensorsFile>(path));
  for (const auto& [name, t] : m.files_[0]->tensors()) m.where_[name] = 0;
  return m;
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> v;
  for (const auto& [k, i] : where_) v.push_back(k);
  return v;
}

const SafetensorsFile& SafetensorsModel::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    throw core::Error(fmt::format("tensor '{}' is missing", name)).with_file(source_)
        .with_hint("the weights do not match config.json (another architecture or size?)");
  }
  return *files_[it->second];
}

const TensorEntry& SafetensorsModel::entry(const std::string& name) const { return *file_of(name).find(name); }

void SafetensorsModel::read(const std::string& name, int64_t first, int64_t n, float* out, int64_t stride) const {
  const SafetensorsFile& f = file_of(name);
  const TensorEntry& t = *f.find(name);
  f.read(t, first, n, out, stride);
  if (t.dtype != "I8") return;
  // int8: w = q * scale, the scale broadcast along its size-1 dimension
  auto it = scales_.find(name);
  if (it == scales_.end()) {
    const std::string sn = name + ".scale";
    if (!has(sn)) {
      throw core::Error(fmt::format("tensor '{}' is int8 but there is no '{}' with its scales", name, sn))
          .with_file(f.path())
          .with_hint("meshtrain reads int8 weights only as its own `export --quantize int8` writes them");
    }
    const TensorEntry& se = entry(sn);
    const bool ok = se.dtype == "F32" && t.shape.size() == 2 && se.shape.size() == 2 &&
                    ((se.shape[0] == t.shape[0] && se.shape[1] == 1) || (se.shape[0] == 1 && se.shape[1] == t.shape[1]));
    if (!ok) {
      throw core::Error(fmt::format("'{}' ({} {}) is not the F32 per-row [{}, 1] or per-column [1, {}] scale of int8 "
                                    "tensor '{}' {}", sn, se.dtype, shape_text(se.shape), t.shape.empty() ? 0 : t.shape[0],
                                    t.shape.size() < 2 ? 0 : t.shape[1], name, shape_text(t.shape)))
          .with_file(file_of(sn).path());
    }
    std::vector<float> sv(static_cast<size_t>(se.numel));
    file_of(sn).read(se, 0, se.numel, sv.data());
    it = scales_.emplace(name, std::make_pair(se.shape[1] == 1, std::move(sv))).first;
  }
  const bool per_row = it->second.first;
  const std::vector<float>& sc = it->second.second;
  const int64_t cols = t.shape[1];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t idx = first + i * stride;
    out[i] *= sc[static_cast<size_t>(per_row ? idx / cols : idx % cols)];
  }
}

bool SafetensorsModel::is_quantized(const std::string& name) const { return has(name) && entry(name).dtype == "I8"; }

bool SafetensorsModel::is_scale(const std::string& name) const {
  const std::string suffix = ".scale";
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
         is_quantized(name.substr(0, name.size() - suffix.size()));
}

std::vector<float> SafetensorsModel::read_all(const std::string& name) const {
  const TensorEntry& t = entry(name);
  std::vector<float> v(static_cast<size_t>(t.numel));
  read(name, 0, t.numel, v.data());
  return v;
}

// ---- writing ----

int64_t parse_size(const std::string& text) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(text, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  std::string unit = text.substr(pos);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  static const std::pair<const char*, double> units[] = {
      {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
      {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}};
  for (const auto& [u, scale] : units) {
    if (pos > 0 && unit == u && v > 0) return static_cast<int64_t>(v * scale);
  }
  throw core::Error(fmt::format("'{}' is not a size", text)).with_hint("e.g. 5GB, 500MB, 2GiB or a number of bytes");
}

void SafetensorsWriter::FileCloser::operator()(std::FILE* f) const { std::fclose(f); }

SafetensorsWriter::SafetensorsWriter(std::string dir, std::vector<TensorPlan> plan, const std::string& dtype,
                                     int64_t max_shard_bytes, std::map<std::string, std::string> metadata)
    : dir_(std::move(dir)), dtype_(dtype), plan_(std::move(plan)), metadata_(std::move(metadata)) {
  MT_CHECK(dtype_ == "F32" || dtype_ == "BF16", "safetensors writer: dtype {} (F32 or BF16)", dtype_);
  MT_CHECK(max_shard_bytes > 0, "safetensors writer: shard size {}", max_shard_bytes);
  size_t shards = 0;
  int64_t in_shard = 0;
  for (size_t i = 0; i < plan_.size(); ++i) {
    const TensorPlan& t = plan_[i];
    const std::string& dt = dtype_of(i);
    MT_CHECK(dt == "F32" || dt == "BF16" || dt == "I8", "safetensors writer: dtype {} of '{}' (F32, BF16 or I8)", dt,
             t.name);
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    const int64_t bytes = n * dtype_bytes(dt);
    if (shards == 0 || (in_shard > 0 && in_shard + bytes > max_shard_bytes)) {
      ++shards;
      in_shard = 0;
    }
    in_shard += bytes;
    total_bytes_ += bytes;
    shard_of_.push_back(shards - 1);
  }
  if (shards <= 1) {
    shard_files_ = {"model.safetensors"};
  } else {
    for (size_t s = 0; s < shards; ++s) shard_files_.push_back(fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards));
  }
}

SafetensorsWriter::~SafetensorsWriter() = default;

void SafetensorsWriter::open_shard(size_t shard) {
  json h = json::object();
  if (!metadata_.empty()) h["__metadata__"] = metadata_;
  int64_t at = 0;
  for (size_t i = 0; i < plan_.size(); ++i) {
    if (shard_of_[i] != shard) continue;
    int64_t n = 1;
    for (int64_t d : plan_[i].shape) n *= d;
    const int64_t eb = dtype_bytes(dtype_of(i));
    h[plan_[i].name] = {{"dtype", dtype_of(i)}, {"shape", plan_[i].shape}, {"data_offsets", {at, at + n * eb}}};
    at += n * eb;
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data 8-byte aligned, as the Python writer does
  const std::string path = dir_ + "/" + shard_files_[shard];
  out_.reset(std::fopen(path.c_str(), "wb"));
  if (!out_) throw core::Error("cannot create the safetensors file").with_file(path).with_library(std::strerror(errno));
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  if (std::fwrite(len, 1, 8, out_.get()) != 8 || std::fwrite(text.data(), 1, text.size(), out_.get()) != text.size())
    throw core::Error("cannot write the safetensors header").with_file(path).with_library(std::strerror(errno));
  open_shard_ = static_cast<long>(shard);
}

void SafetensorsWriter::begin_tensor(const std::string& name) {
  MT_CHECK(next_ < plan_.size() && plan_[next_].name == name, "safetensors writer: '{}' written out of plan order", name);
  const size_t shard = shard_of_[next_];
  if (open_shard_ != static_cast<long>(shard)) {
    out_.reset();
    open_shard(shard);
  }
}

void SafetensorsWriter::write_i8(const std::string& name, const int8_t* data) {
  begin_tensor(name);
  MT_CHECK(dtype_of(next_) == "I8", "safetensors writer: '{}' is {}, not I8", name, dtype_of(next_));
  int64_t n = 1;
  for (int64_t d : plan_[next_].shape) n *= d;
  if (std::fwrite(data, 1, static_cast<size_t>(n), out_.get()) != static_cast<size_t>(n))
    throw core::Error(fmt::format("cannot write tensor '{}'", name))
        .with_file(dir_ + "/" + shard_files_[shard_of_[next_]])
        .with_library(std::strerror(errno));
  ++next_;
}

void SafetensorsWriter::write(const std::string& name, const float* data) {
  begin_tensor(name);
  const std::string& dt = dtype_of(next_);
  MT_CHECK(dt != "I8", "safetensors writer: int8 tensor '{}' needs write_i8", name);
  const size_t shard = shard_of_[next_];
  int64_t n = 1;
  for (int64_t d : plan_[next_].shape) n *= d;
  const std::string path = dir_ + "/" + shard_files_[shard];
  bool ok = true;
  if (dt == "F32") {
    ok = std::fwrite(data, 4, static_cast<size_t>(n), out_.get()) == static_cast<size_t>(n);
  } else {
    std::vector<uint16_t> buf(static_cast<size_t>(std::min<int64_t>(n, 1 << 16)));
    for (int64_t i = 0; i < n && ok; i += static_cast<int64_t>(buf.size())) {
      const size_t k = static_cast<size_t>(std::min<int64_t>(n - i, static_cast<int64_t>(buf.size())));
      for (size_t j = 0; j < k; ++j) buf[j] = float_to_bf16(data[i + static_cast<int64_t>(j)]);
      ok = std::fwrite(buf.data(), 2, k, out_.get()) == k;
    }
  }
  if (!ok) throw core::Error(fmt::format("cannot write tensor '{}'", name)).with_file(path).with_library(std::strerror(errno));
  ++next_;
}

void SafetensorsWriter::finish() {
  MT_CHECK(next_ == plan_.size(), "safetensors writer: {} of {} tensors written", next_, plan_.size());
  if (plan_.empty()) open_shard(0);
  if (out_ && std::fflush(out_.get()) != 0)
    throw core::Error("cannot write").with_file(dir_ + "/" + shard_files_[open_shard_]).with_library(std::strerror(errno));
  out_.reset();
  if (shard_files_.size() > 1) {
    json wm = json::object();
    for (size_t i = 0; i < plan_.size(); ++i) wm[plan_[i].name] = shard_files_[shard_of_[i]];
    json idx{{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", wm}};
    write_file_atomic(dir_ + "/model.safetensors.index.json", idx.dump(2) + "\n");
  }
}

}  // namespace mt::io::hf
