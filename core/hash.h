// What: FNV-1a 64, the one checksum/hash function of meshtrain (parameter-name RNG streams,
// dataset shard and checkpoint shard checksums, parameter checksums across replicas).
// Why: one definition instead of a copy per file; incremental (pass the previous value as h)
// so large files are hashed in bounded blocks.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mt::core {

constexpr uint64_t kFnv1aOffset = 1469598103934665603ull;
constexpr uint64_t kFnv1aPrime = 1099511628211ull;

inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1aOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnv1aPrime;
  }
  return h;
}

}  // namespace mt::core
