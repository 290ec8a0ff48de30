// What: RMSNorm (Hugging Face's LlamaRMSNorm) forward and backward, the CPU reference's formulas
// (kernels/cpu/rmsnorm.cc):
//   forward : rstd[n] = 1 / sqrt((1/C) sum_c x^2 + eps),  out = (x * rstd) * weight
//   backward: dinp += r * w * dout - x * r^3 * (1/C) sum_c (w * dout * x)
//             dweight += sum_n x * rstd * dout             (deterministic column sums)
// Why: as layernorm.cu: one warp per row keeps the row's statistics in registers (fp32, warp
// shuffles in a fixed butterfly order, whatever the working dtype) and reads the row from
// L1/L2 on the second pass; the weight gradient is a reduction over tokens and goes through
// reduce.cuh's fixed-order column sums (no atomics, the same bits every run).
// Launch: 256 threads = 8 rows per block; grid ceil(N / 8).
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_llama_ops_test.cc checks it against the CPU.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/reduce.cuh"

namespace mt::kernels::cuda {

namespace {

constexpr int kRowsPerBlock = kThreads / 32;

// out: (N, C) written;  rstd: (N) written (or null);  inp: (N, C);  weight: (C)
template <typename T>
__global__ void rmsnorm_forward_k(T* out, float* rstd, const T* inp, const T* weight, int N, int C, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (n >= N) return;  // whole warps leave together; no block barrier below
  const T* x = inp + n * C;
  float ss = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float v = ld(x[c]);
    ss += v * v;
  }
  const float ms = warp_sum(ss) / static_cast<float>(C);
  const float r = 1.0f / sqrtf(ms + eps);
  T* y = out + n * C;
  for (int c = lane; c < C; c += 32) y[c] = st<T>((ld(x[c]) * r) * ld(weight[c]));
  if (lane == 0 && rstd != nullptr) rstd[n] = r;
}

// dinp: (N, C) +=;  dout, inp: (N, C);  weight: (C);  rstd: (N) from the forward
template <typename T>
__global__ void rmsnorm_backward_dinp_k(T* dinp, const T* dout, const T* inp, const T* weight, const float* rstd,
                                        int N, int C) {
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (n >= N) return;
  const T* x = inp + n * C;
  const T* dy = dout + n * C;
  T* dx = dinp + n * C;
  const float r = rstd[n];
  float gx = 0.0f;
  for (int c = lane; c < C; c += 32) gx += ld(weight[c]) * ld(dy[c]) * ld(x[c]);
  const float k = r * r * r * warp_sum(gx) / static_cast<float>(C);
  for (int c = lane; c < C; c += 32) {
    dx[c] = st<T>(ld(dx[c]) + (r * ld(weight[c]) * ld(dy[c]) - ld(x[c]) * k));
  }
}

template <typename T>
struct NormTimesDout {  // v = x[n, c] * rstd[n] * dout[n, c]
  const T* inp;
  const T* dout;
  const float* rstd;
  __device__ void operator()(int64_t n, int c, int C, float (&v)[1]) const {
    v[0] = ld(inp[n * C + c]) * rstd[n] * ld(dout[n * C + c]);
  }
};

}  // namespace

cudaError_t rmsnorm_forward(Dt dt, void* out, float* rstd, const void* inp, const void* weight, int N, int C,
                            float eps, cudaStream_t s) {
  if (N <= 0) return cudaSuccess;
  if (C <= 0) return cudaErrorInvalidValue;
  const unsigned int grid = static_cast<unsigned int>(ceil_div(N, kRowsPerBlock));
  MT_DISPATCH(dt, T, rmsnorm_forward_k<T><<<grid, kThreads, 0, s>>>(
                         static_cast<T*>(out), rstd, static_cast<const T*>(inp), static_cast<const T*>(weight), N, C,
                         eps););
  return cudaGetLastError();
}

cudaError_t rmsnorm_backward(Dt dt, void* dinp, float* dweight, const void* dout, const void* inp, const void* weight,
                             const float* rstd, int N, int C, float* scratch, cudaStream_t s) {
  if (N <= 0) return cudaSuccess;
  if (C <= 0) return cudaErrorInvalidValue;
  cudaError_t e = cudaSuccess;
  if (dinp != nullptr) {
    const unsigned int grid = static_cast<unsigned int>(ceil_div(N, kRowsPerBlock));
    MT_DISPATCH(dt, T, rmsnorm_backward_dinp_k<T><<<grid, kThreads, 0, s>>>(
                           static_cast<T*>(dinp), static_cast<const T*>(dout), static_cast<const T*>(inp),
                           static_cast<const T*>(weight), rstd, N, C););
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  if (dweight == nullptr) return cudaSuccess;
  ColumnOutputs<1> outs{{dweight}};
  MT_DISPATCH(dt, T,
              e = column_sums<1>(NormTimesDout<T>{static_cast<const T*>(inp), static_cast<const T*>(dout), rstd}, N,
                                 C, scratch, outs, s););
  return e;
}

}  // namespace mt::kernels::cuda
