// What: LayerNorm over the channel dimension (eps = 1e-5), forward and backward.
//   forward : mean[n] = (1/C) sum_c x[n,c];  var[n] = (1/C) sum_c (x[n,c] - mean[n])^2
//             rstd[n] = 1 / sqrt(var[n] + eps);  norm = (x - mean) * rstd
//             out[n,c] = norm[n,c] * weight[c] + bias[c]
//   backward: with g = weight * dout (per element),
//             dinp[n,c]  += rstd[n] * (g[n,c] - mean_c(g[n,:]) - norm[n,c] * mean_c(g[n,:] * norm[n,:]))
//             dweight[c] += sum_n norm[n,c] * dout[n,c];   dbias[c] += sum_n dout[n,c]
// Why: the reference semantics for every other backend (llm.c train_gpt2.c layernorm), with
// the mean and rstd saved by the forward so the backward does not recompute the statistics.
// Parallelism and determinism: the per-row work (statistics, out, dinp) is split over rows.
// The weight/bias gradients are reductions over tokens; they are split over blocks of
// channels instead, each channel summed over n = 0..N-1 in order (in double) by one thread,
// so the result does not depend on the thread count. Row reductions over C use a fixed set of
// kLanes partial sums (lane j takes c = j mod kLanes) combined in a fixed order: the compiler
// keeps the lanes in one vector register and the order is independent of threads and flags.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {

constexpr float kEps = 1e-5f;
constexpr int kLanes = 8;           // independent partial sums in the row reductions
constexpr int kChannelBlock = 64;   // channels per block in the dweight/dbias reduction
constexpr int64_t kParallelMinElems = 1 << 14;

// Combines the lanes pairwise in a fixed tree: ((0+4)+(1+5)) + ((2+6)+(3+7)).
inline float combine_lanes(const float* acc) {
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// sum_c x[c]
inline float row_sum(const float* x, int C) {
  float acc[kLanes] = {};
  int c = 0;
  for (; c + kLanes <= C; c += kLanes)
    for (int j = 0; j < kLanes; j++) acc[j] += x[c + j];
  float s = combine_lanes(acc);
  for (; c < C; c++) s += x[c];
  return s;
}

// sum_c (x[c] - m)^2
inline float row_sq_dev(const float* x, float m, int C) {
  float acc[kLanes] = {};
  int c = 0;
  for (; c + kLanes <= C; c += kLanes)
    for (int j = 0; j < kLanes; j++) {
      const float d = x[c + j] - m;
      acc[j] += d * d;
    }
  float s = combine_lanes(acc);
  for (; c < C; c++) {
    const float d = x[c] - m;
    s += d * d;
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------- forward
// out:    (N, C)  written
// mean:   (N)     written (saved for backward; may be null when no backward follows)
// rstd:   (N)     written (saved for backward; may be null when no backward follows)
// inp:    (N, C)
// weight: (C), bias: (C)
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C) {
  MT_CHECK(N >= 0 && C > 0, "layernorm_forward: bad shape N={} C={}", N, C);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C >= kParallelMinElems)
  for (int n = 0; n < N; n++) {
    const float* x = inp + static_cast<int64_t>(n) * C;
    float* y = out + static_cast<int64_t>(n) * C;
    // Two passes (mean, then the squared deviations): stable when |mean| >> std, as in the
    // residual stream of a deep model.
    const float m = row_sum(x, C) / static_cast<float>(C);
    const float var = row_sq_dev(x, m, C) / static_cast<float>(C);
    const float s = 1.0f / std::sqrt(var + kEps);
    for (int c = 0; c < C; c++) y[c] = (x[c] - m) * s * weight[c] + bias[c];
    if (mean != nullptr) mean[n] = m;
    if (rstd != nullptr) rstd[n] = s;
  }
}

// ---------------------------------------------------------------------------- backward
// dinp:    (N, C) +=  (null to skip)
// dweight: (C)    +=  (null to skip)
// dbias:   (C)    +=  (null to skip)
// dout:    (N, C)
// inp:     (N, C)  the forward's input
// weight:  (C)
// mean, rstd: (N)  saved by layernorm_forward
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C) {
  MT_CHECK(N >= 0 && C > 0, "layernorm_backward: bad shape N={} C={}", N, C);
  const bool parallel = static_cast<int64_t>(N) * C >= kParallelMinElems;

  // 1) dinp, row by row.
  if (dinp != nullptr) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int n = 0; n < N; n++) {
      const float* x = inp + static_cast<int64_t>(n) * C;
      const float* dy = dout + static_cast<int64_t>(n) * C;
      float* dx = dinp + static_cast<int64_t>(n) * C;
      const float m = mean[n];
      const float s = rstd[n];

      // The two row means the formula needs: mean(g) and mean(g * norm), g = weight * dout.
      float acc_g[kLanes] = {};
      float acc_gn[kLanes] = {};
      int c = 0;
      for (; c + kLanes <= C; c += kLanes)
        for (int j = 0; j < kLanes; j++) {
          const float g = weight[c + j] * dy[c + j];
          const float norm = (x[c + j] - m) * s;
          acc_g[j] += g;
          acc_gn[j] += g * norm;
        }
      float sum_g = combine_lanes(acc_g);
      float sum_gn = combine_lanes(acc_gn);
      for (; c < C; c++) {
        const float g = weight[c] * dy[c];
        sum_g += g;
        sum_gn += g * (x[c] - m) * s;
      }
      const float mean_g = sum_g / static_cast<float>(C);
      const float mean_gn = sum_gn / static_cast<float>(C);

      for (int cc = 0; cc < C; cc++) {
        const float g = weight[cc] * dy[cc];
        const float norm = (x[cc] - m) * s;
        dx[cc] += (g - mean_g - norm * mean_gn) * s;
      }
    }
  }

  // 2) dweight and dbias: reductions over tokens, split over blocks of channels.
  if (dweight == nullptr && dbias == nullptr) return;
  const int nblocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (parallel)
  for (int blk = 0; blk < nblocks; blk++) {
    const int c0 = blk * kChannelBlock;
    const int width = std::min(kChannelBlock, C - c0);
    double acc_w[kChannelBlock] = {};
    double acc_b[kChannelBlock] = {};
    for (int n = 0; n < N; n++) {
      const float* x = inp + static_cast<int64_t>(n) * C + c0;
      const float* dy = dout + static_cast<int64_t>(n) * C + c0;
      const float m = mean[n];
      const float s = rstd[n];
      for (int j = 0; j < width; j++) {
        const float norm = (x[j] - m) * s;
        acc_w[j] += static_cast<double>(norm * dy[j]);
        acc_b[j] += static_cast<double>(dy[j]);
      }
    }
    if (dweight != nullptr)
      for (int j = 0; j < width; j++) dweight[c0 + j] += static_cast<float>(acc_w[j]);
    if (dbias != nullptr)
      for (int j = 0; j < width; j++) dbias[c0 + j] += static_cast<float>(acc_b[j]);
  }
}

}  // namespace mt::kernels::cpu
