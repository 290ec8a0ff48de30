// What: the knowledge-distillation pieces (kernels/cpu/distill.cc defines the maths) on the
// GPU: kd_sums (one block per row: the student's and teacher's sums of exp at temperature T
// and the cross term, against the global row maxima), kd_loss (per row), kd_backward
// (elementwise over the valid columns: (1 - a) dlogits + a T (q - p) dloss).
// Why: the loss of train.distill on train.device=cuda, vocabulary-sliced like the
// cross-entropy. Deterministic: fixed strided per-thread order, warp butterflies, warps added
// in order (as cross_entropy.cu).
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_ops_test.cc checks it against the CPU.
#include "kernels/cuda/common.cuh"

namespace mt::kernels::cuda {

namespace {

constexpr int kRowThreads = 256;
constexpr int kRowWarps = kRowThreads / 32;

// sum of `v` over the block (all threads get it); warp results added in warp order
__device__ float block_sum(float v, float* warp_vals) {
  v = warp_sum(v);
  __syncthreads();  // (warp_vals may still be read from a previous call)
  if (threadIdx.x % 32 == 0) warp_vals[threadIdx.x / 32] = v;
  __syncthreads();
  float r = 0.0f;
  for (int w = 0; w < kRowWarps; ++w) r += warp_vals[w];
  return r;
}

template <typename T>
__global__ void kd_sums_k(float* sums, const T* s, const T* t, const float* smax, const float* tmax, int N, int Vl,
                          int v_valid, float inv_t) {
  __shared__ float warp_vals[kRowWarps];
  const int n = blockIdx.x;
  const T* sr = s + static_cast<int64_t>(n) * Vl;
  const T* tr = t + static_cast<int64_t>(n) * Vl;
  const float ms = smax[n], mt = tmax[n];
  float ss = 0.0f, sum_t = 0.0f, cross = 0.0f;
  for (int v = threadIdx.x; v < v_valid; v += kRowThreads) {
    const float sv = ld(sr[v]), tv = ld(tr[v]);
    ss += expf((sv - ms) * inv_t);
    const float e = expf((tv - mt) * inv_t);
    sum_t += e;
    cross += e * (tv - sv);
  }
  ss = block_sum(ss, warp_vals);
  sum_t = block_sum(sum_t, warp_vals);
  cross = block_sum(cross, warp_vals);
  if (threadIdx.x == 0) {
    sums[n] = ss;
    sums[N + n] = sum_t;
    sums[2 * static_cast<int64_t>(N) + n] = cross;
  }
}

__global__ void kd_loss_k(float* losses, float* kl, const float* ce, const float* sums, const float* smax,
                          const float* tmax, int N, float alpha, float temperature) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const double T = temperature, a = alpha;
  const double ss = sums[n], sum_t = sums[N + n], cross = sums[2 * static_cast<int64_t>(N) + n];
  const double k = cross / (sum_t * T) - (tmax[n] / T + log(sum_t)) + (smax[n] / T + log(ss));
  kl[n] = static_cast<float>(k);
  losses[n] = static_cast<float>((1.0 - a) * ce[n] + a * T * T * k);
}

template <typename T>
__global__ void kd_backward_k(T* dlogits, const T* s, const T* t, const float* smax, const float* tmax,
                              const float* sums, const float* dloss, int N, int Vl, int v_valid, float alpha,
                              float temperature) {
  const int64_t total = static_cast<int64_t>(N) * Vl;
  const float inv_t = 1.0f / temperature;
  MT_GRID_STRIDE(i, total) {
    const int64_t n = i / Vl;
    const int v = static_cast<int>(i % Vl);
    if (v >= v_valid) continue;
    const float d = dloss != nullptr ? dloss[n] : 1.0f;
    const float q = expf((ld(s[i]) - smax[n]) * inv_t) / sums[n];
    const float p = expf((ld(t[i]) - tmax[n]) * inv_t) / sums[N + n];
    dlogits[i] = st<T>((1.0f - alpha) * ld(dlogits[i]) + alpha * temperature * (q - p) * d);
  }
}

}  // namespace

cudaError_t kd_sums(Dt dt, float* sums, const void* s, const void* t, const float* smax, const float* tmax, int N,
                    int Vl, int v_valid, float temperature, cudaStream_t stream) {
  if (N <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, kd_sums_k<T><<<N, kRowThreads, 0, stream>>>(sums, static_cast<const T*>(s),
                                                                  static_cast<const T*>(t), smax, tmax, N, Vl,
                                                                  v_valid, 1.0f / temperature););
  return cudaGetLastError();
}

cudaError_t kd_loss(float* losses, float* kl, const float* ce, const float* sums, const float* smax,
                    const float* tmax, int N, float alpha, float temperature, cudaStream_t stream) {
  if (N <= 0) return cudaSuccess;
  kd_loss_k<<<static_cast<unsigned int>(ceil_div(N, kThreads)), kThreads, 0, stream>>>(losses, kl, ce, sums, smax,
                                                                                        tmax, N, alpha, temperature);
  return cudaGetLastError();
}

cudaError_t kd_backward(Dt dt, void* dlogits, const void* s, const void* t, const float* smax, const float* tmax,
                        const float* sums, const float* dloss, int N, int Vl, int v_valid, float alpha,
                        float temperature, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(N) * Vl;
  if (total <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, kd_backward_k<T><<<grid_for(total), kThreads, 0, stream>>>(
                         static_cast<T*>(dlogits), static_cast<const T*>(s), static_cast<const T*>(t), smax, tmax,
                         sums, dloss, N, Vl, v_valid, alpha, temperature););
  return cudaGetLastError();
}

}  // namespace mt::kernels::cuda
