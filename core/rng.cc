// What: Philox-4x32-10 and the fills built on it.
#include "core/rng.h"

#include <cmath>
#include <cstring>

#include "core/hash.h"

namespace mt::core {

std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo) {
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += kW0;
    k1 += kW1;
  }
  return {c0, c1, c2, c3};
}

float uniform01(uint64_t seed, uint64_t stream, uint64_t index) {
  const auto r = philox4x32(seed, stream, index);
  return ((r[0] >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

double uniform01_f64(uint64_t seed, uint64_t stream, uint64_t index) {
  const auto r = philox4x32(seed, stream, index);
  const uint64_t bits = (static_cast<uint64_t>(r[0]) << 21) ^ (r[1] >> 11);
  return static_cast<double>(bits & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

float normal01(uint64_t seed, uint64_t stream, uint64_t index) {
  const auto r = philox4x32(seed, stream, index);
  const double u1 = ((r[0] >> 8) + 0.5) * (1.0 / 16777216.0);  // (0, 1), never 0
  const double u2 = (r[1] >> 8) * (1.0 / 16777216.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

void fill_normal(float* out, int64_t n, float mean, float std, uint64_t seed, uint64_t stream,
                 uint64_t first_index) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = mean + std * normal01(seed, stream, first_index + i);
}

void fill_normal_block(float* out, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                       int64_t full_cols, float std, uint64_t seed, uint64_t stream) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t base = static_cast<uint64_t>((row0 + r) * full_cols + col0);
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = std * normal01(seed, stream, base + c);
  }
}

uint64_t hash_string(const char* s) { return fnv1a64(s, std::strlen(s)); }

}  // namespace mt::core
