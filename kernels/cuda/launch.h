// What: the host-side entry points of the CUDA kernels in kernels/cuda/*.cu, one per op,
// called by CudaOps (cuda_ops.cc). Plain C++ (no CUDA device code): every launcher queues its
// kernel(s) on `stream` and returns cudaGetLastError() (launch failures only; execution
// errors surface at the next synchronizing call, as always with CUDA).
// Why: keeps nvcc away from the project's C++ headers (fmt, spdlog), and keeps dispatch over
// the element type (fp32 or bf16 "working" buffers) inside the .cu files.
// Shapes and semantics are kernels/ops.h's; `const void*`/`void*` working buffers are fp32
// or bf16 per `dt`, `float*` are fp32. Reductions are deterministic: fixed grid shapes that
// depend on the problem size only, fixed summation orders, no floating-point atomics.
//
// NOT RUN ON A GPU: compiled only (this machine's CUDA runtime returns error 35). The
// per-op tests in tests/cuda/ compare every launcher with the CPU reference where a GPU is.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace mt::kernels::cuda {

enum class Dt { F32, BF16 };

// ---------------------------------------------------------------- elementwise (elementwise.cu)
cudaError_t gelu_forward(Dt dt, void* out, const void* inp, int64_t n, cudaStream_t s);
cudaError_t gelu_backward(Dt dt, void* dinp, const void* inp, const void* dout, int64_t n, cudaStream_t s);
cudaError_t residual_forward(Dt dt, void* out, const void* a, const void* b, int64_t n, cudaStream_t s);
cudaError_t residual_backward(Dt dt, void* da, void* db, const void* dout, int64_t n, cudaStream_t s);
cudaError_t add_bias(Dt dt, void* out, const void* bias, int64_t N, int OC, cudaStream_t s);
// dst (n) = src (n), F32 <-> BF16 (round to nearest even); dst_dt != src_dt.
cudaError_t cast(Dt dst_dt, void* dst, Dt src_dt, const void* src, int64_t n, cudaStream_t s);
cudaError_t scale(float* x, int64_t n, float factor, cudaStream_t s);
cudaError_t add_f32(float* y, const float* x, int64_t n, cudaStream_t s);  // y += x
// Fused AdamW / SGD on fp32 master weights; `working` (null or n elements of working_dt)
// receives the updated weights. bc1, bc2: 1 - beta^t (computed by the caller in double).
cudaError_t adamw_update(float* params, Dt working_dt, void* working, const float* grads, float* m, float* v,
                         int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay, float bc1,
                         float bc2, cudaStream_t s);
cudaError_t sgd_update(float* params, Dt working_dt, void* working, const float* grads, float* buf, int64_t n,
                       float lr, float momentum, float weight_decay, cudaStream_t s);

// ---------------------------------------------------------------- reductions (reduce.cu)
// Scratch sizes (in elements) the reductions need from the caller.
int64_t sum_squares_scratch_doubles(int64_t n);
// *out (device) = sum x^2 (double), deterministic. scratch: sum_squares_scratch_doubles(n).
cudaError_t sum_squares(double* out, const float* x, int64_t n, double* scratch, cudaStream_t s);
int64_t column_sum_scratch_floats(int64_t N, int OC);
// dbias (OC) += sum over n of dout (N, OC); scratch: column_sum_scratch_floats(N, OC).
cudaError_t bias_backward(Dt dt, float* dbias, const void* dout, int64_t N, int OC, float* scratch, cudaStream_t s);

// ---------------------------------------------------------------- layernorm (layernorm.cu)
cudaError_t layernorm_forward(Dt dt, void* out, float* mean, float* rstd, const void* inp, const void* weight,
                              const void* bias, int N, int C, cudaStream_t s);
// scratch: 2 * column_sum_scratch_floats(N, C) (only when dweight or dbias is given).
cudaError_t layernorm_backward(Dt dt, void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                               const void* weight, const float* mean, const float* rstd, int N, int C,
                               float* scratch, cudaStream_t s);

// ---------------------------------------------------------------- embeddings (embedding.cu)
cudaError_t token_embedding_forward(Dt dt, void* out, const int32_t* tokens, const void* wte, int N, int C,
                                    int v_start, int v_count, cudaStream_t s);
cudaError_t token_embedding_backward(Dt dt, float* dwte, const void* dout, const int32_t* tokens, int N, int C,
                                     int v_start, int v_count, cudaStream_t s);
// out: (B, T, C) += wpe[p], p = pos[b*T + t] if pos (B, T) is given, else t.
cudaError_t position_embedding_forward(Dt dt, void* out, const void* wpe, const int32_t* pos, int B, int T, int C,
                                       cudaStream_t s);
// dwpe: (T_max, C) += the rows of dout at their positions; with pos, summed in token order
// (the token backward's deterministic scatter), else in batch order.
cudaError_t position_embedding_backward(Dt dt, float* dwpe, const void* dout, const int32_t* pos, int B, int T, int C,
                                        cudaStream_t s);

// ---------------------------------------------------------------- Llama blocks (rmsnorm.cu, swiglu.cu, rope.cu)
// out: (N, C) = inp * rstd * weight; rstd: (N) fp32 written (may be null).
cudaError_t rmsnorm_forward(Dt dt, void* out, float* rstd, const void* inp, const void* weight, int N, int C,
                            float eps, cudaStream_t s);
// dinp: (N, C) +=; dweight: (C) += (fp32). scratch: column_sum_scratch_floats(N, C) (only when
// dweight is given).
cudaError_t rmsnorm_backward(Dt dt, void* dinp, float* dweight, const void* dout, const void* inp, const void* weight,
                             const float* rstd, int N, int C, float* scratch, cudaStream_t s);
// inp: (N, 2F) per token [gate | up]; out: (N, F) = silu(gate) * up; dinp: (N, 2F) +=.
cudaError_t swiglu_forward(Dt dt, void* out, const void* inp, int64_t N, int F, cudaStream_t s);
cudaError_t swiglu_backward(Dt dt, void* dinp, const void* inp, const void* dout, int64_t N, int F, cudaStream_t s);
// In place on the first n_heads heads (HS channels) of each of the N rows of x (row stride
// `stride` elements); cos, sin: (max_pos, HS/2) fp32; pos: (N). rope_backward rotates back.
cudaError_t rope_forward(Dt dt, void* x, const float* cos, const float* sin, const int32_t* pos, int N, int stride,
                         int n_heads, int HS, cudaStream_t s);
cudaError_t rope_backward(Dt dt, void* dx, const float* cos, const float* sin, const int32_t* pos, int N, int stride,
                          int n_heads, int HS, cudaStream_t s);

// ---------------------------------------------------------------- cross-entropy (cross_entropy.cu)
cudaError_t xent_row_max(Dt dt, float* rowmax, const void* logits, int N, int Vl, int v_valid, cudaStream_t s);
cudaError_t xent_sum_exp(Dt dt, float* sumexp, const void* logits, const float* rowmax, int N, int Vl, int v_valid,
                         cudaStream_t s);
cudaError_t xent_target_logit(Dt dt, float* target_logit, const void* logits, const int32_t* targets, int N, int Vl,
                              int v_start, int v_valid, cudaStream_t s);
cudaError_t xent_loss(float* losses, const float* rowmax, const float* sumexp, const float* target_logit, int N,
                      cudaStream_t s);
cudaError_t xent_backward(Dt dt, void* dlogits, const void* logits, const float* rowmax, const float* sumexp,
                          const int32_t* targets, const float* dloss, int N, int Vl, int v_start, int v_valid,
                          cudaStream_t s);

// ---------------------------------------------------------------- knowledge distillation (distill.cu)
cudaError_t kd_sums(Dt dt, float* sums, const void* s, const void* t, const float* smax, const float* tmax, int N,
                    int Vl, int v_valid, float temperature, cudaStream_t st);
cudaError_t kd_loss(float* losses, float* kl, const float* ce, const float* sums, const float* smax,
                    const float* tmax, int N, float alpha, float temperature, cudaStream_t st);
cudaError_t kd_backward(Dt dt, void* dlogits, const void* s, const void* t, const float* smax, const float* tmax,
                        const float* sums, const float* dloss, int N, int Vl, int v_valid, float alpha,
                        float temperature, cudaStream_t st);

// ---------------------------------------------------------------- attention (attention.cu)
// The own causal attention with NKV grouped kv heads (online softmax; the backward recomputes
// the probabilities from the saved log-sum-exp). qkv: (B, T, (NH + 2 NKV) HS) per token
// [q | k | v]; out: (B, T, C); lse: (B, NH, T) fp32. Head size HS = C / NH must be
// <= kMaxHeadSize; NH % NKV == 0.
constexpr int kMaxHeadSize = 256;
cudaError_t attention_forward(Dt dt, void* out, float* lse, const void* qkv, const int32_t* doc_ids, int B, int T,
                              int C, int NH, int NKV, cudaStream_t s);
// dqkv: (B, T, (NH + 2 NKV) HS) +=. scratch: B * NH * T floats (the row dot products dout . out).
cudaError_t attention_backward(Dt dt, void* dqkv, const void* dout, const void* qkv, const void* out,
                               const float* lse, const int32_t* doc_ids, int B, int T, int C, int NH, int NKV,
                               float* scratch, cudaStream_t s);

// ---------------------------------------------------------------- KV-cached decoding (attention_decode.cu)
// k_cache, v_cache: (B, NKV, max_len, HS). kv_cache_append writes the k, v heads of qkv: (B,
// n_new, (NH + 2 NKV) HS) at positions [past, past + n_new); attention_decode: out (B, n_new,
// NH HS), new query i at position past + i over cache positions [0, past + i].
cudaError_t kv_cache_append(Dt dt, void* k_cache, void* v_cache, const void* qkv, int B, int n_new, int past,
                            int max_len, int NH, int NKV, int HS, cudaStream_t s);
cudaError_t attention_decode(Dt dt, void* out, const void* qkv, const void* k_cache, const void* v_cache, int B,
                             int n_new, int past, int max_len, int NH, int NKV, int HS, cudaStream_t s);

}  // namespace mt::kernels::cuda
