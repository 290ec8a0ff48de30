// What: Storage and Tensor implementation.
#include "core/tensor.h"

#include "core/error.h"

namespace mt::core {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I32: return 4;
    case DType::F64: return 8;
  }
  return 0;
}
const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "fp32";
    case DType::BF16: return "bf16";
    case DType::F16: return "fp16";
    case DType::I32: return "i32";
    case DType::F64: return "f64";
  }
  return "?";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}
std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

Storage::Storage(Device& dev, size_t bytes) : dev_(&dev), ptr_(dev.alloc(bytes)), bytes_(bytes) {}
Storage::~Storage() { dev_->free(ptr_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device& dev) {
  for (auto d : shape) MT_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(dev, shape_numel(shape) * dtype_size(dtype));
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device& dev) {
  Tensor t = empty(shape, dtype, dev);
  t.zero_();
  return t;
}
Tensor Tensor::view(int64_t elem_offset, const Shape& shape) const {
  MT_CHECK(defined(), "view of an undefined tensor");
  const int64_t end = offset_ + elem_offset + shape_numel(shape);
  MT_CHECK(elem_offset >= 0 && end * (int64_t)dtype_size(dtype_) <= (int64_t)storage_->bytes(),
           "view {} at offset {} exceeds storage of {} bytes", shape_str(shape), elem_offset,
           storage_->bytes());
  Tensor t = *this;
  t.offset_ = offset_ + elem_offset;
  t.shape_ = shape;
  return t;
}
float* Tensor::f32() const {
  MT_CHECK(dtype_ == DType::F32, "tensor is {}, not fp32", dtype_name(dtype_));
  return static_cast<float*>(raw());
}
void Tensor::zero_() {
  if (defined()) device().memset_zero(raw(), nbytes());
}

}  // namespace mt::core
