// What: SwiGLU (the Llama MLP's gate), forward and backward, the CPU reference's formulas
// (kernels/cpu/activations.cc):
//   inp: (N, 2F) per token [gate (F) | up (F)];  out: (N, F) = silu(gate) * up,
//   silu(g) = g * sigmoid(g);  with s = sigmoid(g):
//   dgate += dout * up * s * (1 + g (1 - s));   dup += dout * g * s
// Why: one pass over memory, fp32 arithmetic in registers whatever the working dtype. Every
// output element is independent (no reduction), so results do not depend on the launch
// shape. For very negative g, expf(-g) overflows to inf and the terms become exact zeros
// (never NaN), as on the CPU.
// Launch: grid-stride loop over N * F elements, 256 threads per block, int64 indices.
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_llama_ops_test.cc checks it against the CPU.
#include "kernels/cuda/common.cuh"

namespace mt::kernels::cuda {

namespace {

// out: (N, F) written;  inp: (N, 2F)
template <typename T>
__global__ void swiglu_forward_k(T* out, const T* inp, int64_t N, int F) {
  const int64_t total = N * F;
  MT_GRID_STRIDE(i, total) {
    const int64_t n = i / F, f = i % F;
    const T* gate = inp + n * 2 * F;
    const float g = ld(gate[f]);
    out[i] = st<T>(g / (1.0f + expf(-g)) * ld(gate[F + f]));
  }
}

// dinp: (N, 2F) +=;  inp: (N, 2F) the forward's input;  dout: (N, F)
template <typename T>
__global__ void swiglu_backward_k(T* dinp, const T* inp, const T* dout, int64_t N, int F) {
  const int64_t total = N * F;
  MT_GRID_STRIDE(i, total) {
    const int64_t n = i / F, f = i % F;
    const int64_t gi = n * 2 * F + f, ui = gi + F;
    const float g = ld(inp[gi]), up = ld(inp[ui]), dy = ld(dout[i]);
    const float sg = 1.0f / (1.0f + expf(-g));
    dinp[gi] = st<T>(ld(dinp[gi]) + dy * up * sg * (1.0f + g * (1.0f - sg)));
    dinp[ui] = st<T>(ld(dinp[ui]) + dy * g * sg);
  }
}

}  // namespace

cudaError_t swiglu_forward(Dt dt, void* out, const void* inp, int64_t N, int F, cudaStream_t s) {
  if (N < 0 || F <= 0) return cudaErrorInvalidValue;
  const int64_t total = N * F;
  if (total == 0) return cudaSuccess;
  MT_DISPATCH(dt, T, swiglu_forward_k<T><<<grid_for(total), kThreads, 0, s>>>(static_cast<T*>(out),
                                                                              static_cast<const T*>(inp), N, F););
  return cudaGetLastError();
}

cudaError_t swiglu_backward(Dt dt, void* dinp, const void* inp, const void* dout, int64_t N, int F, cudaStream_t s) {
  if (N < 0 || F <= 0) return cudaErrorInvalidValue;
  const int64_t total = N * F;
  if (total == 0 || dinp == nullptr) return cudaSuccess;
  MT_DISPATCH(dt, T, swiglu_backward_k<T><<<grid_for(total), kThreads, 0, s>>>(
                         static_cast<T*>(dinp), static_cast<const T*>(inp), static_cast<const T*>(dout), N, F););
  return cudaGetLastError();
}

}  // namespace mt::kernels::cuda
