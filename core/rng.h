// What: a counter-based RNG (Philox-4x32-10, Salmon et al. 2011). Every random number is a
// pure function of (seed, stream, index), so the same numbers come out whatever the thread
// count, the order of generation or the parallel layout.
// Why: a tensor-parallel rank must generate exactly its slice of the full-model weights
// (index = position in the FULL tensor), and data sampling must not depend on timing.
#pragma once

#include <array>
#include <cstdint>

namespace mt::core {

std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo);

// Uniform in (0, 1) with 24 random bits, from (seed, stream, index).
float uniform01(uint64_t seed, uint64_t stream, uint64_t index);
// Uniform in [0, 1) with 53 bits (for sampling from CDFs exactly).
double uniform01_f64(uint64_t seed, uint64_t stream, uint64_t index);
// Standard normal from (seed, stream, index) (Box-Muller on one Philox block).
float normal01(uint64_t seed, uint64_t stream, uint64_t index);

// out[i] = mean + std * normal01(seed, stream, first_index + i), OpenMP-parallel.
void fill_normal(float* out, int64_t n, float mean, float std, uint64_t seed, uint64_t stream,
                 uint64_t first_index = 0);
// Fill a (rows, cols) block that sits at (row0, col0) of a FULL matrix with full_cols columns:
// out[r*cols + c] = std * normal01(seed, stream, (row0 + r) * full_cols + col0 + c).
void fill_normal_block(float* out, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                       int64_t full_cols, float std, uint64_t seed, uint64_t stream);

// Stable 64-bit hash of a string (FNV-1a), e.g. a parameter name -> RNG stream.
uint64_t hash_string(const char* s);

}  // namespace mt::core
