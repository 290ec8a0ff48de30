// What: fused LayerNorm forward and backward (eps = 1e-5), the CPU reference's formulas
// (kernels/cpu/layernorm.cc):
//   forward : mean, rstd per row (two passes: mean, then squared deviations), out = norm * w + b
//   backward: dinp += rstd * (g - mean(g) - norm * mean(g * norm)), g = w * dout
//             dweight += sum_n norm * dout, dbias += sum_n dout  (deterministic column sums)
// Why: one warp per row keeps the row's statistics in registers (warp shuffles, fixed
// butterfly order) and reads the row from L1/L2 on the second pass; the weight gradients are
// reductions over tokens and go through reduce.cuh's fixed-order column sums.
// Launch: 256 threads = 8 rows per block; grid ceil(N / 8).
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_ops_test.cc checks it against the CPU.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/reduce.cuh"

namespace mt::kernels::cuda {

namespace {

constexpr float kEps = 1e-5f;
constexpr int kRowsPerBlock = kThreads / 32;

template <typename T>
__global__ void layernorm_forward_k(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias,
                                    int N, int C) {
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (n >= N) return;  // whole warps leave together; no block barrier below
  const T* x = inp + n * C;
  float s = 0.0f;
  for (int c = lane; c < C; c += 32) s += ld(x[c]);
  const float m = warp_sum(s) / static_cast<float>(C);
  float v = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float d = ld(x[c]) - m;
    v += d * d;
  }
  const float var = warp_sum(v) / static_cast<float>(C);
  const float r = 1.0f / sqrtf(var + kEps);
  T* y = out + n * C;
  for (int c = lane; c < C; c += 32) y[c] = st<T>((ld(x[c]) - m) * r * ld(weight[c]) + ld(bias[c]));
  if (lane == 0) {
    if (mean != nullptr) mean[n] = m;
    if (rstd != nullptr) rstd[n] = r;
  }
}

template <typename T>
__global__ void layernorm_backward_dinp_k(T* dinp, const T* dout, const T* inp, const T* weight, const float* mean,
                                          const float* rstd, int N, int C) {
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (n >= N) return;
  const T* x = inp + n * C;
  const T* dy = dout + n * C;
  T* dx = dinp + n * C;
  const float m = mean[n], r = rstd[n];
  float sg = 0.0f, sgn = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float g = ld(weight[c]) * ld(dy[c]);
    sg += g;
    sgn += g * (ld(x[c]) - m) * r;
  }
  const float mean_g = warp_sum(sg) / static_cast<float>(C);
  const float mean_gn = warp_sum(sgn) / static_cast<float>(C);
  for (int c = lane; c < C; c += 32) {
    const float g = ld(weight[c]) * ld(dy[c]);
    const float norm = (ld(x[c]) - m) * r;
    dx[c] = st<T>(ld(dx[c]) + (g - mean_g - norm * mean_gn) * r);
  }
}

template <typename T>
struct NormTimesDout {  // v = (norm[n, c] * dout[n, c], dout[n, c])
  const T* inp;
  const T* dout;
  const float* mean;
  const float* rstd;
  __device__ void operator()(int64_t n, int c, int C, float (&v)[2]) const {
    const float dy = ld(dout[n * C + c]);
    const float norm = (ld(inp[n * C + c]) - mean[n]) * rstd[n];
    v[0] = norm * dy;
    v[1] = dy;
  }
};

}  // namespace

cudaError_t layernorm_forward(Dt dt, void* out, float* mean, float* rstd, const void* inp, const void* weight,
                              const void* bias, int N, int C, cudaStream_t s) {
  if (N <= 0) return cudaSuccess;
  if (C <= 0) return cudaErrorInvalidValue;
  const unsigned int grid = static_cast<unsigned int>(ceil_div(N, kRowsPerBlock));
  MT_DISPATCH(dt, T, layernorm_forward_k<T><<<grid, kThreads, 0, s>>>(
                         static_cast<T*>(out), mean, rstd, static_cast<const T*>(inp), static_cast<const T*>(weight),
                         static_cast<const T*>(bias), N, C););
  return cudaGetLastError();
}

cudaError_t layernorm_backward(Dt dt, void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                               const void* weight, const float* mean, const float* rstd, int N, int C,
                               float* scratch, cudaStream_t s) {
  if (N <= 0) return cudaSuccess;
  if (C <= 0) return cudaErrorInvalidValue;
  cudaError_t e = cudaSuccess;
  if (dinp != nullptr) {
    const unsigned int grid = static_cast<unsigned int>(ceil_div(N, kRowsPerBlock));
    MT_DISPATCH(dt, T, layernorm_backward_dinp_k<T><<<grid, kThreads, 0, s>>>(
                           static_cast<T*>(dinp), static_cast<const T*>(dout), static_cast<const T*>(inp),
                           static_cast<const T*>(weight), mean, rstd, N, C););
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  if (dweight == nullptr && dbias == nullptr) return cudaSuccess;
  ColumnOutputs<2> outs{{dweight, dbias}};
  MT_DISPATCH(dt, T,
              e = column_sums<2>(NormTimesDout<T>{static_cast<const T*>(inp), static_cast<const T*>(dout), mean, rstd},
                                 N, C, scratch, outs, s););
  return e;
}

}  // namespace mt::kernels::cuda
