// What: KV-cached decoding on CUDA: kv_cache_append (the new tokens' k and v heads into the
// cache) and attention_decode (new queries against the cache), see launch.h. The cache of one
// layer is (B, NKV, max_len, HS) per k and v, a kv head's positions consecutive.
//   kv_cache_append   one thread per element (b, i, g, c) of the new keys and values.
//   attention_decode  one warp per query row (b, h, i) at position t = past + i, the forward
//                     kernel's scheme (attention.cu): cache positions s <= t in chunks of 32,
//                     lane j scoring key s0 + j (q staged in shared memory), online softmax
//                     (running max and sum with FlashAttention's rescaling), each lane owning
//                     the output channels lane, lane + 32, ...
// Why: decoding is memory bound (B = 1: one query row per head, the cache read once); the
// simple warp-per-row kernel reads each key and value row once per query head. Not tuned:
// for long caches with few heads a split over positions (flash-decoding) would fill the GPU
// better; measure with `bench generate` first.
//
// NOT RUN ON A GPU: compiled on a machine without one; the CPU reference (kernels/cpu/
// attention.cc) defines the maths.
#include <math_constants.h>

#include "kernels/cuda/common.cuh"

namespace mt::kernels::cuda {

namespace {

constexpr int kDecWarps = 4;
constexpr int kDecThreads = kDecWarps * 32;
constexpr int kDecPerLane = kMaxHeadSize / 32;
constexpr unsigned kDecFull = 0xffffffffu;

// k_cache, v_cache: (B, NKV, max_len, HS) written at [past, past + n_new);  qkv: (B, n_new, C3)
template <typename T>
__global__ void kv_append_k(T* k_cache, T* v_cache, const T* qkv, int B, int n_new, int past, int max_len, int NH,
                            int NKV, int HS) {
  const int64_t C3 = (static_cast<int64_t>(NH) + 2 * NKV) * HS;
  const int64_t n = static_cast<int64_t>(B) * n_new * NKV * HS;
  MT_GRID_STRIDE(e, n) {
    const int c = static_cast<int>(e % HS);
    const int g = static_cast<int>((e / HS) % NKV);
    const int64_t bi = e / (static_cast<int64_t>(HS) * NKV);  // b * n_new + i
    const int i = static_cast<int>(bi % n_new), b = static_cast<int>(bi / n_new);
    const T* row = qkv + bi * C3;
    const int64_t at = ((static_cast<int64_t>(b) * NKV + g) * max_len + past + i) * HS + c;
    k_cache[at] = row[static_cast<int64_t>(NH) * HS + g * HS + c];
    v_cache[at] = row[(static_cast<int64_t>(NH) + NKV) * HS + g * HS + c];
  }
}

// out: (B, n_new, NH HS) written;  qkv: (B, n_new, C3);  k_cache, v_cache: (B, NKV, max_len, HS)
template <typename T>
__global__ void attn_decode_k(T* out, const T* qkv, const T* k_cache, const T* v_cache, int B, int n_new, int past,
                              int max_len, int NH, int NKV, int HS, float scale) {
  __shared__ float sq[kDecWarps][kMaxHeadSize];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kDecWarps + warp;  // ((b * NH + h) * n_new + i)
  if (row >= static_cast<int64_t>(B) * NH * n_new) return;  // whole warp; no block barriers below
  const int i = static_cast<int>(row % n_new);
  const int h = static_cast<int>((row / n_new) % NH);
  const int b = static_cast<int>(row / (static_cast<int64_t>(n_new) * NH));
  const int t = past + i;
  const int64_t C3 = (static_cast<int64_t>(NH) + 2 * NKV) * HS;
  const int64_t head = (static_cast<int64_t>(b) * NKV + h / (NH / NKV)) * max_len * HS;
  const T* kh = k_cache + head;
  const T* vh = v_cache + head;
  float* q = sq[warp];
  const T* qrow = qkv + (static_cast<int64_t>(b) * n_new + i) * C3 + static_cast<int64_t>(h) * HS;
  for (int c = lane; c < HS; c += 32) q[c] = ld(qrow[c]);
  __syncwarp();

  float m = -CUDART_INF_F, l = 0.0f;
  float acc[kDecPerLane];
#pragma unroll
  for (int j = 0; j < kDecPerLane; ++j) acc[j] = 0.0f;
  for (int s0 = 0; s0 <= t; s0 += 32) {
    const int s = s0 + lane;
    float score = -CUDART_INF_F;
    if (s <= t) {
      const T* k = kh + static_cast<int64_t>(s) * HS;
      float d = 0.0f;
      for (int c = 0; c < HS; ++c) d += q[c] * ld(k[c]);
      score = d * scale;
    }
    const float cmax = warp_max(score);
    const float nm = fmaxf(m, cmax);
    const float p = s <= t ? expf(score - nm) : 0.0f;
    const float corr = expf(m - nm);  // 0 while m is still -inf
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int j = 0; j < kDecPerLane; ++j) acc[j] *= corr;
    const int cnt = t - s0 + 1 < 32 ? t - s0 + 1 : 32;
    for (int jj = 0; jj < cnt; ++jj) {
      const float pj = __shfl_sync(kDecFull, p, jj);
      if (pj == 0.0f) continue;  // underflowed (same on every lane)
      const T* v = vh + static_cast<int64_t>(s0 + jj) * HS;
#pragma unroll
      for (int j = 0; j < kDecPerLane; ++j) {
        const int c = lane + 32 * j;
        if (c < HS) acc[j] += pj * ld(v[c]);
      }
    }
    m = nm;
  }
  // position t itself is always attended, so l >= 1 here
  T* o = out + (static_cast<int64_t>(b) * n_new + i) * (static_cast<int64_t>(NH) * HS) + static_cast<int64_t>(h) * HS;
  const float inv = 1.0f / l;
#pragma unroll
  for (int j = 0; j < kDecPerLane; ++j) {
    const int c = lane + 32 * j;
    if (c < HS) o[c] = st<T>(acc[j] * inv);
  }
}

bool bad_decode_shape(int B, int n_new, int past, int max_len, int NH, int NKV, int HS) {
  return B < 0 || n_new < 0 || past < 0 || past + n_new > max_len || NH <= 0 || NKV <= 0 || NH % NKV != 0 ||
         HS <= 0 || HS > kMaxHeadSize;
}

}  // namespace

cudaError_t kv_cache_append(Dt dt, void* k_cache, void* v_cache, const void* qkv, int B, int n_new, int past,
                            int max_len, int NH, int NKV, int HS, cudaStream_t s) {
  if (bad_decode_shape(B, n_new, past, max_len, NH, NKV, HS)) return cudaErrorInvalidValue;
  const int64_t n = static_cast<int64_t>(B) * n_new * NKV * HS;
  if (n == 0) return cudaSuccess;
  MT_DISPATCH(dt, X, kv_append_k<X><<<grid_for(n), kThreads, 0, s>>>(static_cast<X*>(k_cache), static_cast<X*>(v_cache),
                                                                      static_cast<const X*>(qkv), B, n_new, past,
                                                                      max_len, NH, NKV, HS););
  return cudaGetLastError();
}

cudaError_t attention_decode(Dt dt, void* out, const void* qkv, const void* k_cache, const void* v_cache, int B,
                             int n_new, int past, int max_len, int NH, int NKV, int HS, cudaStream_t s) {
  if (bad_decode_shape(B, n_new, past, max_len, NH, NKV, HS)) return cudaErrorInvalidValue;
  const int64_t rows = static_cast<int64_t>(B) * NH * n_new;
  if (rows == 0) return cudaSuccess;
  const float scale = 1.0f / sqrtf(static_cast<float>(HS));
  const unsigned int grid = static_cast<unsigned int>(ceil_div(rows, kDecWarps));
  MT_DISPATCH(dt, X, attn_decode_k<X><<<grid, kDecThreads, 0, s>>>(static_cast<X*>(out), static_cast<const X*>(qkv),
                                                                   static_cast<const X*>(k_cache),
                                                                   static_cast<const X*>(v_cache), B, n_new, past,
                                                                   max_len, NH, NKV, HS, scale););
  return cudaGetLastError();
}

}  // namespace mt::kernels::cuda
