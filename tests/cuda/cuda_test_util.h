// Shared helpers of the CUDA tests (built only in CUDA builds): skip with the runtime's own
// reason when no GPU can be used, device buffers from host vectors (fp32 or bf16), and the
// bf16 rounding the CPU references apply to their inputs.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_device.h"
#include "core/device.h"
#include "core/tensor.h"

// Skips the test (reported as SKIPPED, which ctest shows as "Skipped") when the CUDA runtime
// cannot be used here, quoting the runtime: "CUDA error 35 (cudaErrorInsufficientDriver): ...".
#define MT_REQUIRE_GPU()                                                     \
  do {                                                                       \
    const std::string mt_reason_ = ::mt::core::cuda_unavailable_reason();    \
    if (!mt_reason_.empty()) GTEST_SKIP() << "no usable GPU: " << mt_reason_; \
  } while (0)

namespace mt::core {
// Readable test names for dtype-parameterized tests ("... # GetParam() = bf16").
inline void PrintTo(DType t, std::ostream* os) { *os << dtype_name(t); }
}  // namespace mt::core

namespace mt::test {

inline uint16_t to_bf16_bits(float f) {  // round to nearest even (finite inputs)
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}
inline float from_bf16_bits(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline float round_bf16(float f) { return from_bf16_bits(to_bf16_bits(f)); }

// Rounds every element to bf16 (what the GPU sees) when `bf16`, so the CPU reference gets
// the same inputs.
inline std::vector<float> as_seen(std::vector<float> v, bool bf16) {
  if (bf16)
    for (auto& x : v) x = round_bf16(x);
  return v;
}

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// A device tensor holding `v` in `dtype` (F32 or BF16).
inline core::Tensor upload(core::Device& dev, const std::vector<float>& v, core::DType dtype) {
  core::Tensor t = core::Tensor::empty({static_cast<int64_t>(v.size())}, dtype, dev);
  if (dtype == core::DType::BF16) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = to_bf16_bits(v[i]);
    dev.copy(t.raw(), h.data(), h.size() * 2);
  } else {
    dev.copy(t.raw(), v.data(), v.size() * 4);
  }
  return t;
}
inline core::Tensor upload_i32(core::Device& dev, const std::vector<int32_t>& v) {
  core::Tensor t = core::Tensor::empty({static_cast<int64_t>(v.size())}, core::DType::I32, dev);
  dev.copy(t.raw(), v.data(), v.size() * 4);
  return t;
}
// The tensor's values as fp32 on the host.
inline std::vector<float> download(core::Device& dev, const core::Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (t.dtype() == core::DType::BF16) {
    std::vector<uint16_t> h(out.size());
    dev.copy(h.data(), t.raw(), h.size() * 2);
    for (size_t i = 0; i < h.size(); ++i) out[i] = from_bf16_bits(h[i]);
  } else {
    dev.copy(out.data(), t.raw(), out.size() * 4);
  }
  return out;
}

// Largest |a - b| / (atol + rtol |b|) over the elements (<= 1 means within tolerance), and
// where it happened, for readable failure messages.
struct Diff {
  double worst = 0;
  size_t at = 0;
  float a = 0, b = 0;
};
inline Diff compare(const std::vector<float>& a, const std::vector<float>& b, double atol, double rtol) {
  Diff d;
  EXPECT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double r = std::fabs(static_cast<double>(a[i]) - b[i]) / (atol + rtol * std::fabs(b[i]));
    if (!(r <= d.worst)) {  // NaN-safe: a NaN becomes the worst
      d = Diff{std::isnan(r) ? 1e30 : r, i, a[i], b[i]};
    }
  }
  return d;
}

}  // namespace mt::test

// EXPECT_CLOSE(gpu_vec, cpu_vec, atol, rtol): elementwise within tolerance, naming the worst.
#define EXPECT_CLOSE(actual_, expected_, atol_, rtol_)                                                    \
  do {                                                                                                    \
    const ::mt::test::Diff mt_d_ = ::mt::test::compare((actual_), (expected_), (atol_), (rtol_));         \
    EXPECT_LE(mt_d_.worst, 1.0) << #actual_ << " vs " << #expected_ << ": element " << mt_d_.at << " is " \
                                << mt_d_.a << ", expected " << mt_d_.b << " (atol " << (atol_)            \
                                << ", rtol " << (rtol_) << ")";                                           \
  } while (0)
