// What: rotary position embedding (RoPE) in Hugging Face's rotate-half layout, in place, the
// CPU reference's formulas (kernels/cpu/rope.cc). For each row n of x (rows of `stride`
// elements), each of its first n_heads heads (HS channels) and i < H = HS/2, with
// c = cos[pos[n], i], s = sin[pos[n], i]:
//   forward : x'[i] = x[i] c - x[i+H] s          x'[i+H] = x[i+H] c + x[i] s
//   backward: the transpose rotation of the gradient (s -> -s)
// cos, sin: (max_pos, H) fp32 tables; pos: (N) (restarting at 0 for each packed document).
// Why: one thread per (n, head, i) pair reads both elements of its pair, rotates in fp32 and
// writes both back: pairs are disjoint, so the in-place update has no races and the result
// does not depend on the launch shape. In a fused qkv buffer the q and k heads are adjacent at
// the start of a row, so one call (n_heads = NH + NKV, stride = the qkv row width) rotates
// both and leaves v alone.
// Launch: grid-stride loop over N * n_heads * H pairs, 256 threads per block, int64 indices.
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_llama_ops_test.cc checks it against the CPU.
#include "kernels/cuda/common.cuh"

namespace mt::kernels::cuda {

namespace {

// x: (N, stride) rotated in place on channels [0, n_heads * HS);  cos, sin: (max_pos, HS/2);
// pos: (N); sign = +1 forward, -1 backward (the transpose rotation)
template <typename T>
__global__ void rope_k(T* x, const float* cos, const float* sin, const int32_t* pos, int N, int stride, int n_heads,
                       int HS, float sign) {
  const int H = HS / 2;
  const int64_t per_row = static_cast<int64_t>(n_heads) * H;
  const int64_t total = static_cast<int64_t>(N) * per_row;
  MT_GRID_STRIDE(k, total) {
    const int64_t n = k / per_row, rem = k % per_row;
    const int64_t h = rem / H, i = rem % H;
    const int64_t tab = static_cast<int64_t>(pos[n]) * H + i;
    const float c = cos[tab], si = sign * sin[tab];
    T* lo = x + n * stride + h * HS + i;
    T* hi = lo + H;
    const float a = ld(*lo), b = ld(*hi);
    *lo = st<T>(a * c - b * si);
    *hi = st<T>(b * c + a * si);
  }
}

cudaError_t rope(Dt dt, void* x, const float* cos, const float* sin, const int32_t* pos, int N, int stride,
                 int n_heads, int HS, float sign, cudaStream_t s) {
  if (N < 0 || HS <= 0 || HS % 2 != 0 || n_heads < 0 || static_cast<int64_t>(n_heads) * HS > stride)
    return cudaErrorInvalidValue;
  const int64_t total = static_cast<int64_t>(N) * n_heads * (HS / 2);
  if (total == 0) return cudaSuccess;
  MT_DISPATCH(dt, T, rope_k<T><<<grid_for(total), kThreads, 0, s>>>(static_cast<T*>(x), cos, sin, pos, N, stride,
                                                                    n_heads, HS, sign););
  return cudaGetLastError();
}

}  // namespace

cudaError_t rope_forward(Dt dt, void* x, const float* cos, const float* sin, const int32_t* pos, int N, int stride,
                         int n_heads, int HS, cudaStream_t s) {
  return rope(dt, x, cos, sin, pos, N, stride, n_heads, HS, 1.0f, s);
}

cudaError_t rope_backward(Dt dt, void* dx, const float* cos, const float* sin, const int32_t* pos, int N, int stride,
                          int n_heads, int HS, cudaStream_t s) {
  return rope(dt, dx, cos, sin, pos, N, stride, n_heads, HS, -1.0f, s);
}

}  // namespace mt::kernels::cuda
