// What: the vocab-sliced softmax cross-entropy pieces (kernels/cpu/cross_entropy.cc):
// row max, sum of exp against the global max, target logit, loss, and the backward
// (softmax - onehot) * dloss over a rank's columns [v_start, v_start + Vl) of which v_valid
// are real tokens. A tensor-parallel caller all-reduces max / sum / target logit in between,
// exactly as on the CPU.
// Why: one block per row for the two row reductions (a row is up to ~50k logits); the
// backward is elementwise. Reductions: each thread covers a fixed strided set of columns in
// order, warps combine by butterfly, and warp results are added in warp order (deterministic).
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_ops_test.cc checks it against the CPU.
#include <math_constants.h>

#include "kernels/cuda/common.cuh"

namespace mt::kernels::cuda {

namespace {

constexpr int kRowThreads = 256;
constexpr int kRowWarps = kRowThreads / 32;

template <typename T>
__global__ void row_max_k(float* rowmax, const T* logits, int Vl, int v_valid) {
  __shared__ float warp_vals[kRowWarps];
  const T* z = logits + static_cast<int64_t>(blockIdx.x) * Vl;
  float m = -CUDART_INF_F;
  for (int v = threadIdx.x; v < v_valid; v += kRowThreads) m = fmaxf(m, ld(z[v]));
  m = warp_max(m);
  if (threadIdx.x % 32 == 0) warp_vals[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    float r = warp_vals[0];
    for (int w = 1; w < kRowWarps; ++w) r = fmaxf(r, warp_vals[w]);
    rowmax[blockIdx.x] = r;
  }
}

template <typename T>
__global__ void sum_exp_k(float* sumexp, const T* logits, const float* rowmax, int Vl, int v_valid) {
  __shared__ float warp_vals[kRowWarps];
  const T* z = logits + static_cast<int64_t>(blockIdx.x) * Vl;
  const float m = rowmax[blockIdx.x];
  float s = 0.0f;
  for (int v = threadIdx.x; v < v_valid; v += kRowThreads) s += expf(ld(z[v]) - m);
  s = warp_sum(s);
  if (threadIdx.x % 32 == 0) warp_vals[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float r = 0.0f;
    for (int w = 0; w < kRowWarps; ++w) r += warp_vals[w];
    sumexp[blockIdx.x] = r;
  }
}

template <typename T>
__global__ void target_logit_k(float* target_logit, const T* logits, const int32_t* targets, int N, int Vl,
                               int v_start, int v_valid) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int64_t r = static_cast<int64_t>(targets[n]) - v_start;
  target_logit[n] = (r >= 0 && r < v_valid) ? ld(logits[static_cast<int64_t>(n) * Vl + r]) : 0.0f;
}

// losses may alias target_logit (read before written).
__global__ void loss_k(float* losses, const float* rowmax, const float* sumexp, const float* target_logit, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const double tl = target_logit[n];
  losses[n] = static_cast<float>(log(static_cast<double>(sumexp[n])) + static_cast<double>(rowmax[n]) - tl);
}

template <typename T>
__global__ void xent_backward_k(T* dlogits, const T* logits, const float* rowmax, const float* sumexp,
                                const int32_t* targets, const float* dloss, int N, int Vl, int v_start, int v_valid) {
  const int64_t total = static_cast<int64_t>(N) * Vl;
  MT_GRID_STRIDE(i, total) {
    const int64_t n = i / Vl;
    const int v = static_cast<int>(i % Vl);
    if (v >= v_valid) {
      dlogits[i] = st<T>(0.0f);
      continue;
    }
    const float d = dloss != nullptr ? dloss[n] : 1.0f;
    float p = expf(ld(logits[i]) - rowmax[n]) * (1.0f / sumexp[n]);
    if (static_cast<int64_t>(targets[n]) - v_start == v) p -= 1.0f;
    dlogits[i] = st<T>(p * d);
  }
}

}  // namespace

cudaError_t xent_row_max(Dt dt, float* rowmax, const void* logits, int N, int Vl, int v_valid, cudaStream_t s) {
  if (N <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, row_max_k<T><<<N, kRowThreads, 0, s>>>(rowmax, static_cast<const T*>(logits), Vl, v_valid););
  return cudaGetLastError();
}

cudaError_t xent_sum_exp(Dt dt, float* sumexp, const void* logits, const float* rowmax, int N, int Vl, int v_valid,
                         cudaStream_t s) {
  if (N <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, sum_exp_k<T><<<N, kRowThreads, 0, s>>>(sumexp, static_cast<const T*>(logits), rowmax, Vl,
                                                             v_valid););
  return cudaGetLastError();
}

cudaError_t xent_target_logit(Dt dt, float* target_logit, const void* logits, const int32_t* targets, int N, int Vl,
                              int v_start, int v_valid, cudaStream_t s) {
  if (N <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, target_logit_k<T><<<static_cast<unsigned int>(ceil_div(N, kThreads)), kThreads, 0, s>>>(
                         target_logit, static_cast<const T*>(logits), targets, N, Vl, v_start, v_valid););
  return cudaGetLastError();
}

cudaError_t xent_loss(float* losses, const float* rowmax, const float* sumexp, const float* target_logit, int N,
                      cudaStream_t s) {
  if (N <= 0) return cudaSuccess;
  loss_k<<<static_cast<unsigned int>(ceil_div(N, kThreads)), kThreads, 0, s>>>(losses, rowmax, sumexp, target_logit,
                                                                               N);
  return cudaGetLastError();
}

cudaError_t xent_backward(Dt dt, void* dlogits, const void* logits, const float* rowmax, const float* sumexp,
                          const int32_t* targets, const float* dloss, int N, int Vl, int v_start, int v_valid,
                          cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(N) * Vl;
  if (total <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, xent_backward_k<T><<<grid_for(total), kThreads, 0, s>>>(
                         static_cast<T*>(dlogits), static_cast<const T*>(logits), rowmax, sumexp, targets, dloss, N,
                         Vl, v_start, v_valid););
  return cudaGetLastError();
}

}  // namespace mt::kernels::cuda
