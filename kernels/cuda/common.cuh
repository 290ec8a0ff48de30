// What: small device helpers shared by the .cu files: fp32/bf16 loads and stores, warp
// reductions, launch-size arithmetic, the grid-stride loop and the element-type dispatch macro.
// Why: every kernel is written once as a template over the working type T (float or
// __nv_bfloat16) and computes in fp32; loads widen, stores round to nearest even.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace mt::kernels::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ld(float x) { return x; }
__device__ __forceinline__ float ld(bf16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T st(float x);
template <>
__device__ __forceinline__ float st<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 st<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// Butterfly reductions: every lane ends with the same value, combined in a fixed order.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

constexpr int kThreads = 256;  // default block size of the elementwise kernels

// Blocks for a grid-stride loop over n elements (capped; the loop covers the rest).
inline unsigned int grid_for(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > (int64_t{1} << 20)) blocks = int64_t{1} << 20;
  return static_cast<unsigned int>(blocks);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace mt::kernels::cuda

// MT_GRID_STRIDE(i, n) { body }: a grid-stride loop, int64_t i over [0, n), for kernels
// launched with grid_for(n) blocks.
#define MT_GRID_STRIDE(i, n)                                                             \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// MT_DISPATCH(dt, T, body): runs `body` with T = float or T = bf16 according to dt.
#define MT_DISPATCH(dt, T, ...)                          \
  do {                                                   \
    if ((dt) == ::mt::kernels::cuda::Dt::BF16) {         \
      using T = ::mt::kernels::cuda::bf16;               \
      __VA_ARGS__                                        \
    } else {                                             \
      using T = float;                                   \
      __VA_ARGS__                                        \
    }                                                    \
  } while (0)
