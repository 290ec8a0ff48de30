// What: the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length N, a JSON header of N bytes {name: {dtype, shape,
// data_offsets: [begin, end)}, "__metadata__": {string: string}}, then the raw little-endian
// tensor bytes, offsets relative to the end of the header. Our own reader and writer on
// nlohmann-json: Debian packages no C++ safetensors library (the reference implementation is
// Rust with Python bindings).
//   SafetensorsFile   one file, memory-mapped and validated when opened: header length within
//                     the file, JSON, every entry's dtype / shape / data_offsets, offsets
//                     inside the file, tensors contiguous and non-overlapping, each size =
//                     dtype size x elements. Reads any run of elements (optionally strided) of
//                     an F32, BF16 or F16 tensor into fp32; other dtypes are refused by name.
//   SafetensorsModel  a Hugging Face model directory: model.safetensors, or the shards that
//                     model.safetensors.index.json's weight_map names. An I8 tensor NAME is
//                     meshtrain's int8 export (`export --quantize int8`): read dequantized,
//                     q * NAME.scale, the F32 scale broadcast along its size-1 dimension
//                     (per row: [rows, 1]; per column: [1, cols]).
//   SafetensorsWriter streams tensors (F32 or BF16) into one file or into shards
//                     model-0000x-of-0000n.safetensors + model.safetensors.index.json past a
//                     size limit; every name, shape and dtype is known up front, so each
//                     file's header is written first and the data follows tensor by tensor.
// Why: import reads only this rank's slices straight from the page cache (a 70B model does
// not need 70B of memory per rank) and export never holds more than one tensor.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mt::io::hf {

// One tensor of a safetensors file.
struct TensorEntry {
  std::string name;
  std::string dtype;           // as written: "F32", "BF16", "I64", ...
  std::vector<int64_t> shape;
  int64_t numel = 1;
  int64_t begin = 0, end = 0;  // byte range in the file (absolute: header included)
};

// Bytes per element of a safetensors dtype name (0 = not a dtype of the format).
int dtype_bytes(const std::string& dtype);

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws core::Error naming the file (and the tensor) otherwise.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Null if absent.
  const TensorEntry* find(const std::string& name) const;
  // n elements of tensor t (row-major flat indices first, first + stride, ...) into out as
  // fp32. Throws for a dtype other than F32 / BF16 / F16, naming it, the tensor and the file.
  void read(const TensorEntry& t, int64_t first, int64_t n, float* out, int64_t stride = 1) const;

 private:
  std::string path_;
  const unsigned char* data_ = nullptr;  // the mapping
  size_t size_ = 0;
  std::map<std::string, TensorEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsModel {
 public:
  // `dir` holds model.safetensors or model.safetensors.index.json (+ its shards).
  explicit SafetensorsModel(const std::string& dir);
  // One file alone (e.g. a gradient file named like the model's tensors).
  static SafetensorsModel from_file(const std::string& path);
  const std::string& dir() const { return dir_; }
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  bool has(const std::string& name) const { return where_.count(name) > 0; }
  // The tensor and the file holding it; throws an Error naming the missing tensor and where it
  // was looked for.
  const TensorEntry& entry(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  void read(const std::string& name, int64_t first, int64_t n, float* out, int64_t stride = 1) const;
  std::vector<float> read_all(const std::string& name) const;
  // Whether `name` is an int8 tensor (read dequantized), or the scale of one.
  bool is_quantized(const std::string& name) const;
  bool is_scale(const std::string& name) const;
  // "DIR/model.safetensors" or "DIR/model.safetensors.index.json": where the names come from.
  const std::string& source() const { return source_; }

 private:
  SafetensorsModel() = default;
  std::string dir_, source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor -> files_ index
  // int8 tensor -> (per row, its scales), read once
  mutable std::map<std::string, std::pair<bool, std::vector<float>>> scales_;
};

// A tensor to write, announced before any data.
struct TensorPlan {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;  // "" = the writer's; else F32, BF16 or I8 (int8: written with write_i8)
};

// Parses "5GB", "500MB", "10KB", "123" (bytes) into bytes (decimal units, as Hugging Face's
// max_shard_size; also KiB/MiB/GiB). Throws on anything else.
int64_t parse_size(const std::string& text);

class SafetensorsWriter {
 public:
  // Plans the files in `dir` (which must exist): tensors in the given order, a new shard when
  // the next tensor would take the current one past max_shard_bytes (a tensor larger than
  // that gets a shard of its own). dtype: "F32" or "BF16". One shard: model.safetensors;
  // several: model-0000x-of-0000n.safetensors and model.safetensors.index.json.
  SafetensorsWriter(std::string dir, std::vector<TensorPlan> plan, const std::string& dtype,
                    int64_t max_shard_bytes, std::map<std::string, std::string> metadata = {{"format", "pt"}});
  ~SafetensorsWriter();
  // The next tensor in plan order: numel fp32 values (converted to the dtype).
  void write(const std::string& name, const float* data);
  // The next tensor in plan order, an I8 one: numel int8 values.
  void write_i8(const std::string& name, const int8_t* data);
  // After every tensor: closes the last file, writes the index when there are several shards.
  void finish();
  int num_shards() const { return static_cast<int>(shard_files_.size()); }
  // The files written (relative names).
  const std::vector<std::string>& files() const { return shard_files_; }

 private:
  void open_shard(size_t shard);
  const std::string& dtype_of(size_t i) const { return plan_[i].dtype.empty() ? dtype_ : plan_[i].dtype; }
  void begin_tensor(const std::string& name);  // checks the order, opens its shard
  std::string dir_, dtype_;
  std::vector<TensorPlan> plan_;
  std::vector<size_t> shard_of_;           // per planned tensor
  std::vector<std::string> shard_files_;
  std::map<std::string, std::string> metadata_;
  size_t next_ = 0;                        // next tensor to write
  long open_shard_ = -1;
  struct FileCloser {
    void operator()(std::FILE* f) const;
  };
  std::unique_ptr<std::FILE, FileCloser> out_;
  int64_t total_bytes_ = 0;
};

// Float <-> bfloat16 (round to nearest even; NaN stays NaN) and half -> float.
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t h);
float f16_to_float(uint16_t h);

}  // namespace mt::io::hf
