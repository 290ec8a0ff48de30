// What: the CPU reference kernels, forward and backward, for every op of the GPT-2 and Llama models,
// plus the optimizers. Plain float arrays, row-major, shapes in the comments
// (N = number of tokens = B*T). Backward kernels ACCUMULATE (+=) into their gradient
// outputs, so callers zero gradients once per step; any gradient pointer may be null
// to skip it.
// Why: the readable reference semantics (llm.c style) that every other backend is tested
// against. Determinism contract: every output element is computed in a fixed order that does
// not depend on the OpenMP thread count (reductions over tokens are split over output
// channels, never over tokens), so results are bitwise identical for any number of threads.
// Tensor-parallel use: the linear, attention and vocab kernels work on a rank's local slice
// (local heads, local vocab rows); the cross-entropy is split into pieces between which a
// tensor-parallel caller inserts all-reduces (max, sum) over its group.
#pragma once

#include <cstdint>

namespace mt::kernels::cpu {

// ---------------------------------------------------------------- linear (matmul + bias)
// out: (N, OC) = inp: (N, C) @ weight^T, weight: (OC, C), + bias: (OC) (bias may be null).
// Uses BLAS sgemm.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int N, int C, int OC);
// dinp: (N, C) += dout @ weight; dweight: (OC, C) += dout^T @ inp; dbias: (OC) += sum_n dout.
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC);
// The bias of a row-parallel linear, applied after the tensor-parallel all-reduce:
// out: (N, OC) += bias: (OC).
void add_bias(float* out, const float* bias, int64_t N, int OC);
// dbias: (OC) += sum_n dout: (N, OC), summed in float per channel in token order.
void bias_backward(float* dbias, const float* dout, int64_t N, int OC);

// ---------------------------------------------------------------- layernorm (eps = 1e-5)
// out: (N, C); mean, rstd: (N) saved for backward; weight, bias: (C).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C);

// ---------------------------------------------------------------- GELU (tanh approximation, as GPT-2)
void gelu_forward(float* out, const float* inp, int64_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);  // dinp +=

// ---------------------------------------------------------------- residual add
void residual_forward(float* out, const float* a, const float* b, int64_t n);  // out = a + b
void residual_backward(float* da, float* db, const float* dout, int64_t n);     // da += dout, db += dout

// ---------------------------------------------------------------- causal attention, grouped kv heads
// qkv: (B, T, (NH + 2*NKV) * HS) laid out per token as [q (NH*HS) | k (NKV*HS) | v (NKV*HS)],
// HS = C/NH channels per head, C = NH*HS the output width. Query head h reads key/value head
// h / (NH/NKV) (grouped-query attention as Hugging Face's repeat_kv: consecutive query heads
// share a kv head; NKV == NH is plain multi-head attention, NKV == 1 multi-query). No k/v is
// copied per query head.
// out: (B, T, C); att: (B, NH, T, T) softmax probabilities, saved for backward (entries above
// the diagonal, and masked ones, are 0). Scale 1/sqrt(HS).
// doc_ids: (B, T) or null. If given, position t attends only to s <= t with
// doc_ids[b,s] == doc_ids[b,t] (documents packed into one sequence stay separate).
void attention_forward(float* out, float* att, const float* qkv, const int32_t* doc_ids,
                       int B, int T, int C, int NH, int NKV);
// dqkv: (B, T, (NH + 2*NKV) * HS) +=.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int B, int T, int C, int NH, int NKV);

// ---------------------------------------------------------------- KV-cached decoding
// The cache of one attention layer: k_cache, v_cache: (B, NKV, max_len, HS), position p of kv
// head g of row b at ((b * NKV + g) * max_len + p) * HS.
// kv_cache_append: the k and v heads of n_new new tokens per row, qkv: (B, n_new, (NH + 2 NKV)
// HS) as attention_forward's (rotary embedding already applied), written at positions
// [past, past + n_new).
void kv_cache_append(float* k_cache, float* v_cache, const float* qkv, int B, int n_new, int past,
                     int max_len, int NH, int NKV, int HS);
// out: (B, n_new, NH HS): new query i of row b (q channels of qkv row (b, i)), at position
// t = past + i, attends to cache positions s <= t of its kv head (causal within the new block;
// the cache must already hold positions [0, past + n_new)). Row (b, h, i) is computed
// exactly as attention_forward's row (b, h, t) (same operations in the same order), so the
// decode of a prefix equals the training forward bit for bit given the same q, k and v.
void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                      int B, int n_new, int past, int max_len, int NH, int NKV, int HS);

// ---------------------------------------------------------------- RMSNorm (Llama)
// out: (N, C) = inp * rstd[n] * weight, rstd: (N) = 1 / sqrt(mean_c inp^2 + eps), saved.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps);
// dinp: (N, C) +=; dweight: (C) += sum_n dout * inp * rstd.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C);

// ---------------------------------------------------------------- SwiGLU (Llama MLP)
// inp: (N, 2F) per token [gate (F) | up (F)]; out: (N, F) = silu(gate) * up.
void swiglu_forward(float* out, const float* inp, int64_t N, int F);
// dinp: (N, 2F) += the gate and up gradients of dout: (N, F).
void swiglu_backward(float* dinp, const float* inp, const float* dout, int64_t N, int F);

// ---------------------------------------------------------------- rotary position embedding
// Hugging Face's rotate-half layout: for each of the first n_heads heads of HS channels in
// each row of x (rows of `stride` elements; the q and k heads of a fused qkv row), with
// i < HS/2, c = cos[pos[n], i], s = sin[pos[n], i]:
//   x'[i] = x[i] c - x[i + HS/2] s;   x'[i + HS/2] = x[i + HS/2] c + x[i] s
// cos, sin: (max_pos, HS/2) tables; pos: (N) position of each row (restarting at 0 for each
// packed document). In place.
void rope_forward(float* x, const float* cos, const float* sin, const int32_t* pos, int N,
                  int stride, int n_heads, int HS);
// dx: the gradient of the rotated x, rotated back in place (the transpose rotation).
void rope_backward(float* dx, const float* cos, const float* sin, const int32_t* pos, int N,
                   int stride, int n_heads, int HS);

// ---------------------------------------------------------------- embeddings
// Token embedding over a (possibly vocab-parallel) slice of the table: wte holds rows
// [v_start, v_start + v_count) of the full (V, C) table. out: (N, C) = wte[tokens - v_start]
// for owned tokens, 0 for tokens outside the slice (a tensor-parallel caller sums over ranks).
void token_embedding_forward(float* out, const int32_t* tokens, const float* wte, int N, int C,
                             int v_start, int v_count);
// dwte: (v_count, C) += for owned tokens.
void token_embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int N, int C,
                              int v_start, int v_count);
// out: (B, T, C) += wpe[p], wpe: (T_max >= T, C); p = pos[b*T + t] when pos (B, T) is given
// (positions restarting at each packed document), else t.
void position_embedding_forward(float* out, const float* wpe, const int32_t* pos, int B, int T, int C);
// dwpe: (T_max, C) += the rows of dout at their positions.
void position_embedding_backward(float* dwpe, const float* dout, const int32_t* pos, int B, int T, int C);

// ---------------------------------------------------------------- softmax cross-entropy, in pieces
// logits: (N, Vl), a rank's slice of the vocabulary: global columns [v_start, v_start + Vl).
// Only the first `v_valid` local columns are real tokens (the rest is padding that must get
// no probability mass). targets: (N) global token ids.
// 1) rowmax: (N) = max over valid local columns (-inf if v_valid == 0).
void xent_row_max(float* rowmax, const float* logits, int N, int Vl, int v_valid);
// 2) sumexp: (N) = sum over valid local columns of exp(logit - rowmax) (rowmax is the GLOBAL max).
void xent_sum_exp(float* sumexp, const float* logits, const float* rowmax, int N, int Vl, int v_valid);
// 3) target_logit: (N) = logits[n, targets[n] - v_start] if this slice owns the target, else 0.
void xent_target_logit(float* target_logit, const float* logits, const int32_t* targets, int N,
                       int Vl, int v_start, int v_valid);
// 4) losses: (N) = log(sumexp) + rowmax - target_logit (all three GLOBAL values).
void xent_loss(float* losses, const float* rowmax, const float* sumexp, const float* target_logit,
               int N);
// Backward: dlogits: (N, Vl) = (softmax - onehot(target)) * dloss[n] for valid columns, 0 for
// padding (overwrites, does not accumulate). dloss: (N) weight of each token's loss.
void xent_backward(float* dlogits, const float* logits, const float* rowmax, const float* sumexp,
                   const int32_t* targets, const float* dloss, int N, int Vl, int v_start,
                   int v_valid);
// Knowledge distillation over the same vocabulary slice of student logits s and teacher
// logits t (distill.cc has the maths). smax, tmax: (N) GLOBAL row maxima of s and t (at
// temperature 1: the maximum of x/T is max(x)/T).
// sums: (3, N) written: local S_s = sum exp((s - smax)/T), S_t = sum exp((t - tmax)/T),
// and sum exp((t - tmax)/T) (t - s), over valid columns (the caller sums them over tp).
void kd_sums(float* sums, const float* s, const float* t, const float* smax, const float* tmax, int N, int Vl,
             int v_valid, float temperature);
// kl: (N) written = KL(softmax(t/T) || softmax(s/T)) from the GLOBAL sums; losses: (N)
// written = (1 - alpha) ce + alpha T^2 kl, ce: (N) the cross-entropy losses (may alias losses).
void kd_loss(float* losses, float* kl, const float* ce, const float* sums, const float* smax, const float* tmax,
             int N, float alpha, float temperature);
// dlogits: (N, Vl) holding xent_backward's (softmax(s) - onehot) dloss, valid columns
// rewritten to (1 - alpha) dlogits + alpha T (softmax(s/T) - softmax(t/T)) dloss[n]; padding
// columns untouched (xent_backward zeroed them).
void kd_backward(float* dlogits, const float* s, const float* t, const float* smax, const float* tmax,
                 const float* sums, const float* dloss, int N, int Vl, int v_valid, float alpha, float temperature);
// Convenience for a single rank owning the full vocabulary: losses: (N), V = Vl columns of
// which v_valid are real; rowmax, sumexp: (N) scratch saved for backward.
void softmax_cross_entropy_forward(float* losses, float* rowmax, float* sumexp, const float* logits,
                                   const int32_t* targets, int N, int Vl, int v_valid);

// ---------------------------------------------------------------- optimizers and reductions
// AdamW with decoupled weight decay (Loshchilov & Hutter): step t >= 1 (bias correction).
// p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p)
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t t);
// SGD with momentum (PyTorch convention): buf = momentum * buf + (g + wd * p); p -= lr * buf.
void sgd_update(float* params, const float* grads, float* momentum_buf, int64_t n, float lr,
                float momentum, float weight_decay);
// Sum of squares in double, deterministic for any thread count (fixed blocks, fixed order).
double sum_squares(const float* x, int64_t n);
void scale_inplace(float* x, int64_t n, float s);  // x *= s
void add_inplace(float* y, const float* x, int64_t n);  // y += x

}  // namespace mt::kernels::cpu
