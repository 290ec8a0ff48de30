// What: the elementwise CUDA kernels: GELU (tanh approximation) forward/backward, residual
// add, row-parallel bias add, fp32 <-> bf16 casts, scaling, and the fused AdamW and SGD
// updates (fp32 master weights and state, optional bf16 working copy written alongside).
// Why: each is one pass over memory with fp32 arithmetic in registers; the formulas are the
// CPU reference's (kernels/cpu/activations.cc, optim.cc) so fp32 runs agree to rounding.
// Launch shape: grid-stride loops, 256 threads per block, int64 indices. Every element is
// independent, so the results do not depend on the launch shape.
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_ops_test.cc checks them against the CPU.
#include "kernels/cuda/common.cuh"

namespace mt::kernels::cuda {

namespace {

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

// s = 0.5 * (1 + tanh(u)) = sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) (see activations.cc).
__device__ __forceinline__ float gelu_gate(float x) {
  const float u = kGeluScale * (x + kGeluCubic * x * x * x);
  return 1.0f / (1.0f + expf(-2.0f * u));
}

template <typename T>
__global__ void gelu_forward_k(T* out, const T* inp, int64_t n) {
  MT_GRID_STRIDE(i, n) {
    const float x = ld(inp[i]);
    out[i] = st<T>(x * gelu_gate(x));
  }
}

template <typename T>
__global__ void gelu_backward_k(T* dinp, const T* inp, const T* dout, int64_t n) {
  MT_GRID_STRIDE(i, n) {
    const float x = ld(inp[i]);
    const float s = gelu_gate(x);
    const float du_dx = kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
    const float local_grad = s + x * 2.0f * s * (1.0f - s) * du_dx;
    dinp[i] = st<T>(ld(dinp[i]) + local_grad * ld(dout[i]));
  }
}

template <typename T>
__global__ void residual_forward_k(T* out, const T* a, const T* b, int64_t n) {
  MT_GRID_STRIDE(i, n) { out[i] = st<T>(ld(a[i]) + ld(b[i])); }
}

// dout may alias da or db: it is read before either is written.
template <typename T>
__global__ void residual_backward_k(T* da, T* db, const T* dout, int64_t n) {
  MT_GRID_STRIDE(i, n) {
    const float d = ld(dout[i]);
    if (da != nullptr) da[i] = st<T>(ld(da[i]) + d);
    if (db != nullptr) db[i] = st<T>(ld(db[i]) + d);
  }
}

template <typename T>
__global__ void add_bias_k(T* out, const T* bias, int64_t total, int OC) {
  MT_GRID_STRIDE(i, total) { out[i] = st<T>(ld(out[i]) + ld(bias[i % OC])); }
}

template <typename D, typename S>
__global__ void cast_k(D* dst, const S* src, int64_t n) {
  MT_GRID_STRIDE(i, n) { dst[i] = st<D>(ld(src[i])); }
}

__global__ void scale_k(float* x, int64_t n, float factor) {
  MT_GRID_STRIDE(i, n) { x[i] *= factor; }
}

// The CPU reference's AdamW step, element by element (kernels/cpu/optim.cc).
template <typename W>
__global__ void adamw_k(float* params, W* working, const float* grads, float* m, float* v, int64_t n, float lr,
                        float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2) {
  const float one_minus_b1 = 1.0f - beta1;
  const float one_minus_b2 = 1.0f - beta2;
  MT_GRID_STRIDE(i, n) {
    const float g = grads[i];
    const float mi = beta1 * m[i] + one_minus_b1 * g;
    const float vi = beta2 * v[i] + one_minus_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / bc1;
    const float vhat = vi / bc2;
    const float p = params[i] - lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * params[i]);
    params[i] = p;
    if (working != nullptr) working[i] = st<W>(p);
  }
}

template <typename W>
__global__ void sgd_k(float* params, W* working, const float* grads, float* buf, int64_t n, float lr,
                      float momentum, float weight_decay) {
  MT_GRID_STRIDE(i, n) {
    const float p = params[i];
    const float d = grads[i] + weight_decay * p;
    const float b = momentum * buf[i] + d;
    buf[i] = b;
    const float np = p - lr * b;
    params[i] = np;
    if (working != nullptr) working[i] = st<W>(np);
  }
}

}  // namespace

cudaError_t gelu_forward(Dt dt, void* out, const void* inp, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, gelu_forward_k<T><<<grid_for(n), kThreads, 0, s>>>(static_cast<T*>(out),
                                                                        static_cast<const T*>(inp), n););
  return cudaGetLastError();
}

cudaError_t gelu_backward(Dt dt, void* dinp, const void* inp, const void* dout, int64_t n, cudaStream_t s) {
  if (n <= 0 || dinp == nullptr) return cudaSuccess;
  MT_DISPATCH(dt, T, gelu_backward_k<T><<<grid_for(n), kThreads, 0, s>>>(
                         static_cast<T*>(dinp), static_cast<const T*>(inp), static_cast<const T*>(dout), n););
  return cudaGetLastError();
}

cudaError_t residual_forward(Dt dt, void* out, const void* a, const void* b, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, residual_forward_k<T><<<grid_for(n), kThreads, 0, s>>>(
                         static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), n););
  return cudaGetLastError();
}

cudaError_t residual_backward(Dt dt, void* da, void* db, const void* dout, int64_t n, cudaStream_t s) {
  if (n <= 0 || (da == nullptr && db == nullptr)) return cudaSuccess;
  MT_DISPATCH(dt, T, residual_backward_k<T><<<grid_for(n), kThreads, 0, s>>>(
                         static_cast<T*>(da), static_cast<T*>(db), static_cast<const T*>(dout), n););
  return cudaGetLastError();
}

cudaError_t add_bias(Dt dt, void* out, const void* bias, int64_t N, int OC, cudaStream_t s) {
  const int64_t total = N * OC;
  if (total <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, add_bias_k<T><<<grid_for(total), kThreads, 0, s>>>(static_cast<T*>(out),
                                                                        static_cast<const T*>(bias), total, OC););
  return cudaGetLastError();
}

cudaError_t cast(Dt dst_dt, void* dst, Dt src_dt, const void* src, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (dst_dt == src_dt) return cudaErrorInvalidValue;  // a copy, not a cast: the caller memcpys
  if (dst_dt == Dt::BF16) {
    cast_k<bf16, float><<<grid_for(n), kThreads, 0, s>>>(static_cast<bf16*>(dst), static_cast<const float*>(src), n);
  } else {
    cast_k<float, bf16><<<grid_for(n), kThreads, 0, s>>>(static_cast<float*>(dst), static_cast<const bf16*>(src), n);
  }
  return cudaGetLastError();
}

__global__ void add_f32_k(float* y, const float* x, int64_t n) {
  MT_GRID_STRIDE(i, n) { y[i] += x[i]; }
}

cudaError_t add_f32(float* y, const float* x, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  add_f32_k<<<grid_for(n), kThreads, 0, s>>>(y, x, n);
  return cudaGetLastError();
}

cudaError_t scale(float* x, int64_t n, float factor, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  scale_k<<<grid_for(n), kThreads, 0, s>>>(x, n, factor);
  return cudaGetLastError();
}

cudaError_t adamw_update(float* params, Dt working_dt, void* working, const float* grads, float* m, float* v,
                         int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay, float bc1,
                         float bc2, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  MT_DISPATCH(working_dt, W, adamw_k<W><<<grid_for(n), kThreads, 0, s>>>(params, static_cast<W*>(working), grads, m,
                                                                         v, n, lr, beta1, beta2, eps, weight_decay,
                                                                         bc1, bc2););
  return cudaGetLastError();
}

cudaError_t sgd_update(float* params, Dt working_dt, void* working, const float* grads, float* buf, int64_t n,
                       float lr, float momentum, float weight_decay, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  MT_DISPATCH(working_dt, W, sgd_k<W><<<grid_for(n), kThreads, 0, s>>>(params, static_cast<W*>(working), grads, buf,
                                                                       n, lr, momentum, weight_decay););
  return cudaGetLastError();
}

}  // namespace mt::kernels::cuda
