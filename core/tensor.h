// What: Tensor = shape + dtype + a view into reference-counted storage owned by a Device.
// Why: the model keeps all parameters (and all gradients) in ONE contiguous buffer each, so
// gradient buckets, all-reduces and checkpoints work on plain byte ranges; individual weights
// are views (offset + shape) into that buffer. Element types: fp32 everywhere; bf16 for the
// CUDA mixed-precision working copies and activations; i32 token ids and f64 partial sums
// staged on a device; fp16 reserved.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"

namespace mt::core {

enum class DType : uint8_t { F32 = 0, BF16 = 1, F16 = 2, I32 = 3, F64 = 4 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "(2, 3, 4)"

class Storage {
 public:
  Storage(Device& dev, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Device& device() const { return *dev_; }

 private:
  Device* dev_;
  void* ptr_;
  size_t bytes_;
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device& dev = cpu_device());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device& dev = cpu_device());

  // A view of `shape` starting `elem_offset` elements into this tensor's storage.
  Tensor view(int64_t elem_offset, const Shape& shape) const;

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return numel() * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device& device() const { return storage_->device(); }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_ * dtype_size(dtype_); }
  float* f32() const;  // checks dtype == F32
  void zero_();

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  DType dtype_ = DType::F32;
  int64_t offset_ = 0;  // in elements
};

}  // namespace mt::core
