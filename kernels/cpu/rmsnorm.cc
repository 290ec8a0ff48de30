// What: RMSNorm over the channel dimension (Llama's LlamaRMSNorm), forward and backward.
//   forward : rstd[n] = 1 / sqrt((1/C) sum_c x[n,c]^2 + eps)
//             out[n,c] = x[n,c] * rstd[n] * weight[c]
//   backward: with g = weight * dout (per element) and r = rstd[n],
//             dinp[n,c]  += r * g[n,c] - x[n,c] * r^3 * (1/C) sum_c' g[n,c'] x[n,c']
//             dweight[c] += sum_n dout[n,c] * x[n,c] * r
// Why: the reference semantics for the CUDA kernel; Hugging Face's formula (statistics in
// fp32, no mean subtraction, no bias), so imported Llama weights need no maths of their own.
// Parallelism and determinism as kernels/cpu/layernorm.cc: rows split over threads, row sums
// with a fixed set of lanes in a fixed order, the weight gradient split over blocks of
// channels, each channel summed over n = 0..N-1 in order (in double) by one thread.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {

constexpr int kLanes = 8;
constexpr int kChannelBlock = 64;
constexpr int64_t kParallelMinElems = 1 << 14;

inline float combine_lanes(const float* acc) {
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// sum_c a[c] * b[c] with kLanes partial sums combined in a fixed order.
inline float row_dot(const float* a, const float* b, int C) {
  float acc[kLanes] = {};
  int c = 0;
  for (; c + kLanes <= C; c += kLanes)
    for (int j = 0; j < kLanes; j++) acc[j] += a[c + j] * b[c + j];
  float s = combine_lanes(acc);
  for (; c < C; c++) s += a[c] * b[c];
  return s;
}

}  // namespace

// out: (N, C), rstd: (N) written;  inp: (N, C);  weight: (C)
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps) {
  MT_CHECK(N >= 0 && C > 0, "rmsnorm_forward: bad shape N={} C={}", N, C);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C >= kParallelMinElems)
  for (int n = 0; n < N; n++) {
    const float* x = inp + static_cast<int64_t>(n) * C;
    float* y = out + static_cast<int64_t>(n) * C;
    const float ms = row_dot(x, x, C) / static_cast<float>(C);
    const float r = 1.0f / std::sqrt(ms + eps);
    for (int c = 0; c < C; c++) y[c] = (x[c] * r) * weight[c];
    rstd[n] = r;
  }
}

// dinp: (N, C) +=;  dweight: (C) +=;  dout, inp: (N, C);  weight: (C);  rstd: (N) from forward
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C) {
  MT_CHECK(N >= 0 && C > 0, "rmsnorm_backward: bad shape N={} C={}", N, C);
  const bool parallel = static_cast<int64_t>(N) * C >= kParallelMinElems;
  if (dinp != nullptr) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int n = 0; n < N; n++) {
      const float* x = inp + static_cast<int64_t>(n) * C;
      const float* dy = dout + static_cast<int64_t>(n) * C;
      float* dx = dinp + static_cast<int64_t>(n) * C;
      const float r = rstd[n];
      float acc[kLanes] = {};
      int c = 0;
      for (; c + kLanes <= C; c += kLanes)
        for (int j = 0; j < kLanes; j++) acc[j] += weight[c + j] * dy[c + j] * x[c + j];
      float gx = combine_lanes(acc);
      for (; c < C; c++) gx += weight[c] * dy[c] * x[c];
      const float k = r * r * r * gx / static_cast<float>(C);
      for (int cc = 0; cc < C; cc++) dx[cc] += r * weight[cc] * dy[cc] - x[cc] * k;
    }
  }
  if (dweight == nullptr) return;
  const int nblocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (parallel)
  for (int blk = 0; blk < nblocks; blk++) {
    const int c0 = blk * kChannelBlock;
    const int width = std::min(kChannelBlock, C - c0);
    double acc_w[kChannelBlock] = {};
    for (int n = 0; n < N; n++) {
      const float* x = inp + static_cast<int64_t>(n) * C + c0;
      const float* dy = dout + static_cast<int64_t>(n) * C + c0;
      const float r = rstd[n];
      for (int j = 0; j < width; j++) acc_w[j] += static_cast<double>(x[j] * r * dy[j]);
    }
    for (int j = 0; j < width; j++) dweight[c0 + j] += static_cast<float>(acc_w[j]);
  }
}

}  // namespace mt::kernels::cpu
