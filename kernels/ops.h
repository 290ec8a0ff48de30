// What: Ops, the device-kernel interface: one virtual per op of the models (GPT-2, Llama) (forward and
// backward), the optimizer updates, and the reductions, casts and copies around them; and
// make_ops(), which picks the implementation for a device (kernels/ops_factory.cc is the one
// file that knows the list: the CPU reference kernels, the CUDA kernels).
// Why: one model file per architecture (parallel/models/), one optimizer and one trainer serve the CPU and the
// GPU without #ifdef. The CPU implementation forwards every call to kernels::cpu unchanged,
// so the CPU path keeps its reference semantics bit for bit.
//
// Conventions (the same as kernels/cpu/kernels.h, whose comments define each op's maths):
// - Every pointer is memory of device(): host memory for the CPU, device memory for CUDA.
//   Calls are queued on the device's compute stream in issue order and return at once on
//   CUDA; results are read back with Device::copy().
// - Two element types. `void*` buffers hold the WORKING dtype (working_dtype()): the
//   activations, their gradients and the working copy of the parameters the forward reads.
//   It is fp32 on the CPU, bf16 (mixed precision) or fp32 on CUDA. `float*` buffers are
//   always fp32: parameter gradients, master weights, optimizer state, normalisation
//   statistics, cross-entropy pieces, losses. int32_t* are token ids / document ids.
// - Backward ops ACCUMULATE (+=) into their gradients (callers zero them once per step); a
//   null gradient pointer skips it. Exceptions are marked (xent_backward overwrites).
// - Shapes: N = B*T tokens; `l` suffixes (tensor-parallel local slices) are the caller's.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/device.h"
#include "core/tensor.h"

namespace mt::kernels {

struct OpsOptions {
  // Element type of activations and of the parameter working copy: F32, or BF16 (CUDA only).
  core::DType working = core::DType::F32;
  // Attention implementation on CUDA: "auto" (cuDNN's fused attention where it supports
  // the shape, else the own kernel), "cudnn" (prefer cuDNN; still falls back, with a
  // warning, when it cannot run), "own". Ignored on the CPU.
  std::string attention = "auto";
};

class Ops {
 public:
  virtual ~Ops() = default;
  virtual core::Device& device() const = 0;
  virtual core::DType working_dtype() const = 0;
  virtual std::string describe() const = 0;  // "cpu reference kernels (fp32)", ...

  // ------------------------------------------------------------ linear
  // out: (N, OC) = inp: (N, C) @ weight^T, weight: (OC, C), + bias: (OC) (may be null). Written.
  virtual void matmul_forward(void* out, const void* inp, const void* weight, const void* bias, int N, int C,
                              int OC) = 0;
  // dinp: (N, C) += dout @ weight; dweight: (OC, C) += dout^T @ inp (fp32);
  // dbias: (OC) += sum_n dout (fp32).
  virtual void matmul_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                               const void* weight, int N, int C, int OC) = 0;
  // Row-parallel bias after the all-reduce: out: (N, OC) += bias: (OC).
  virtual void add_bias(void* out, const void* bias, int64_t N, int OC) = 0;
  // dbias: (OC) += sum_n dout: (N, OC).
  virtual void bias_backward(float* dbias, const void* dout, int64_t N, int OC) = 0;

  // ------------------------------------------------------------ layernorm (eps 1e-5)
  // out: (N, C); mean, rstd: (N) fp32 saved for backward; weight, bias: (C).
  virtual void layernorm_forward(void* out, float* mean, float* rstd, const void* inp, const void* weight,
                                 const void* bias, int N, int C) = 0;
  // dinp: (N, C) +=; dweight, dbias: (C) += (fp32).
  virtual void layernorm_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                                  const void* weight, const float* mean, const float* rstd, int N, int C) = 0;

  // ------------------------------------------------------------ elementwise
  virtual void gelu_forward(void* out, const void* inp, int64_t n) = 0;
  virtual void gelu_backward(void* dinp, const void* inp, const void* dout, int64_t n) = 0;  // dinp +=
  virtual void residual_forward(void* out, const void* a, const void* b, int64_t n) = 0;    // out = a + b
  virtual void residual_backward(void* da, void* db, const void* dout, int64_t n) = 0;       // da, db += dout

  // ------------------------------------------------------------ causal self-attention
  // qkv: (B, T, (NH + 2 NKV) HS) per token [q (NH HS) | k (NKV HS) | v (NKV HS)], HS = C/NH;
  // query head h reads kv head h / (NH/NKV) (grouped-query; NKV == NH is multi-head).
  // out: (B, T, C). `state` holds what the backward needs, attention_state_elems(B, T, NH)
  // fp32 values whose meaning is the implementation's (CPU: the probabilities (B, NH, T, T);
  // CUDA: the log-sum-exp of every score row (B, NH, T)). doc_ids: (B, T) or null (see
  // kernels.h).
  virtual int64_t attention_state_elems(int B, int T, int NH) const = 0;
  virtual void attention_forward(void* out, float* state, const void* qkv, const int32_t* doc_ids, int B, int T,
                                 int C, int NH, int NKV) = 0;
  // dqkv: (B, T, (NH + 2 NKV) HS) +=. out is the forward's output, doc_ids the forward's
  // (implementations that recompute the probabilities need them).
  virtual void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* out,
                                  const float* state, const int32_t* doc_ids, int B, int T, int C, int NH,
                                  int NKV) = 0;

  // ------------------------------------------------------------ KV-cached decoding
  // The cache of one attention layer: k_cache, v_cache: (B, NKV, max_len, HS) working dtype.
  // kv_cache_append writes the k and v heads of qkv: (B, n_new, (NH + 2 NKV) HS) (the
  // attention_forward layout, rotary embedding applied) at positions [past, past + n_new).
  virtual void kv_cache_append(void* k_cache, void* v_cache, const void* qkv, int B, int n_new, int past,
                               int max_len, int NH, int NKV, int HS) = 0;
  // out: (B, n_new, NH HS): new query i of row b (q channels of qkv row (b, i)) at position
  // past + i attends to the cache's positions [0, past + i] of its kv head (causal within the
  // new block; the cache holds [0, past + n_new) already). Same maths as attention_forward.
  virtual void attention_decode(void* out, const void* qkv, const void* k_cache, const void* v_cache, int B,
                                int n_new, int past, int max_len, int NH, int NKV, int HS) = 0;

  // ------------------------------------------------------------ Llama blocks
  // RMSNorm: out: (N, C) = inp * rstd * weight; rstd: (N) fp32 = 1/sqrt(mean(inp^2) + eps).
  virtual void rmsnorm_forward(void* out, float* rstd, const void* inp, const void* weight, int N, int C,
                               float eps) = 0;
  // dinp: (N, C) +=; dweight: (C) += (fp32).
  virtual void rmsnorm_backward(void* dinp, float* dweight, const void* dout, const void* inp, const void* weight,
                                const float* rstd, int N, int C) = 0;
  // SwiGLU: inp: (N, 2F) per token [gate | up]; out: (N, F) = silu(gate) * up.
  virtual void swiglu_forward(void* out, const void* inp, int64_t N, int F) = 0;
  virtual void swiglu_backward(void* dinp, const void* inp, const void* dout, int64_t N, int F) = 0;  // dinp +=
  // Rotary embedding, IN PLACE, on the first n_heads heads (HS channels) of each of the N rows
  // of x (row stride `stride` elements); cos, sin: (max_pos, HS/2) fp32 tables; pos: (N).
  // rope_backward applies the inverse rotation to a gradient (also in place).
  virtual void rope_forward(void* x, const float* cos, const float* sin, const int32_t* pos, int N, int stride,
                            int n_heads, int HS) = 0;
  virtual void rope_backward(void* dx, const float* cos, const float* sin, const int32_t* pos, int N, int stride,
                             int n_heads, int HS) = 0;

  // ------------------------------------------------------------ embeddings
  // out: (N, C) = wte[tokens - v_start] for tokens in [v_start, v_start + v_count), else 0.
  virtual void token_embedding_forward(void* out, const int32_t* tokens, const void* wte, int N, int C,
                                       int v_start, int v_count) = 0;
  // dwte: (v_count, C) += (fp32).
  virtual void token_embedding_backward(float* dwte, const void* dout, const int32_t* tokens, int N, int C,
                                        int v_start, int v_count) = 0;
  // out: (B, T, C) += wpe[p], p = pos[b, t] if pos (B, T) is given (packed documents restart
  // at 0), else t.
  virtual void position_embedding_forward(void* out, const void* wpe, const int32_t* pos, int B, int T, int C) = 0;
  // dwpe: (T_max, C) += the rows of dout at their positions (fp32).
  virtual void position_embedding_backward(float* dwpe, const void* dout, const int32_t* pos, int B, int T,
                                           int C) = 0;

  // ------------------------------------------------------------ vocab-sliced cross-entropy
  // logits: (N, Vl) working dtype; rowmax, sumexp, target_logit, losses: (N) fp32.
  virtual void xent_row_max(float* rowmax, const void* logits, int N, int Vl, int v_valid) = 0;
  virtual void xent_sum_exp(float* sumexp, const void* logits, const float* rowmax, int N, int Vl,
                            int v_valid) = 0;
  virtual void xent_target_logit(float* target_logit, const void* logits, const int32_t* targets, int N, int Vl,
                                 int v_start, int v_valid) = 0;
  virtual void xent_loss(float* losses, const float* rowmax, const float* sumexp, const float* target_logit,
                         int N) = 0;
  // dlogits: (N, Vl) WRITTEN (not accumulated); dloss: (N) fp32 weight per token.
  virtual void xent_backward(void* dlogits, const void* logits, const float* rowmax, const float* sumexp,
                             const int32_t* targets, const float* dloss, int N, int Vl, int v_start,
                             int v_valid) = 0;

  // ------------------------------------------------------------ knowledge distillation
  // (train.distill; kernels/cpu/distill.cc defines the maths.) s, t: (N, Vl) student and
  // teacher logits of the same vocabulary slice (working dtype); smax, tmax: (N) global row
  // maxima (xent_row_max + all-reduce max); sums: (3, N) fp32 written (then all-reduced sum).
  virtual void kd_sums(float* sums, const void* s, const void* t, const float* smax, const float* tmax, int N, int Vl,
                       int v_valid, float temperature) = 0;
  // kl: (N) written; losses: (N) written = (1 - alpha) ce + alpha T^2 kl, ce: (N) the
  // cross-entropy losses (losses may alias ce).
  virtual void kd_loss(float* losses, float* kl, const float* ce, const float* sums, const float* smax,
                       const float* tmax, int N, float alpha, float temperature) = 0;
  // dlogits (N, Vl): xent_backward's output, rewritten on the valid columns to
  // (1 - alpha) dlogits + alpha T (softmax(s/T) - softmax(t/T)) dloss[n].
  virtual void kd_backward(void* dlogits, const void* s, const void* t, const float* smax, const float* tmax,
                           const float* sums, const float* dloss, int N, int Vl, int v_valid, float alpha,
                           float temperature) = 0;

  // ------------------------------------------------------------ optimizer and reductions
  // Updates the fp32 master `params` (n) in place; if `working` is not null it also receives
  // the updated values in the working dtype (the bf16 copy the forward reads).
  virtual void adamw_update(float* params, void* working, const float* grads, float* m, float* v, int64_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay, int64_t t) = 0;
  virtual void sgd_update(float* params, void* working, const float* grads, float* momentum_buf, int64_t n,
                          float lr, float momentum, float weight_decay) = 0;
  // *out (one double in device memory) = sum x^2, deterministic (same bits every call).
  virtual void sum_squares(double* out, const float* x, int64_t n) = 0;
  virtual void scale(float* x, int64_t n, float s) = 0;  // x *= s
  virtual void add_f32(float* y, const float* x, int64_t n) = 0;  // y += x (ZeRO-2/3 gradient accumulation)
  // dst (n of dst_type) = src (n of src_type), F32 <-> BF16 (round to nearest even) or same.
  virtual void cast(void* dst, core::DType dst_type, const void* src, core::DType src_type, int64_t n) = 0;
};

// The process-wide CPU implementation (the reference kernels, fp32).
Ops& cpu_ops();

// The implementation for `device`. Throws with a hint if the device's backend has no kernels
// in this build, or the options are not supported there (bf16 on the CPU).
std::unique_ptr<Ops> make_ops(core::Device& device, const OpsOptions& options = {});

}  // namespace mt::kernels
