// What: causal self-attention with grouped key/value heads, forward and backward, on a rank's
// local heads; and its KV-cached decoding form (kv_cache_append, attention_decode: new queries
// against a cache of earlier keys and values, row by row the forward's arithmetic).
//   qkv: (B, T, (NH + 2 NKV) HS) per token [q (NH HS) | k (NKV HS) | v (NKV HS)], HS = C / NH.
//   Query head h owns q channels [h*HS, (h+1)*HS) and reads kv head g = h / (NH / NKV) (the
//   group of NH/NKV consecutive query heads sharing it, as Hugging Face's repeat_kv); k_s and
//   v_s below are kv head g's. NKV == NH is GPT-2's multi-head attention. For every (b, h, t):
//     preatt[s] = q_t . k_s / sqrt(HS)                 for allowed s (s <= t, same document)
//     att[t, s] = exp(preatt[s] - max) / sum_s' exp(preatt[s'] - max)    (0 if not allowed)
//     out_t     = sum_s att[t, s] * v_s
//   backward (per row t, with datt[s] = dout_t . v_s):
//     dv_s += att[t, s] * dout_t
//     dpreatt[s] = att[t, s] * (datt[s] - sum_s' att[t, s'] * datt[s'])      (softmax backward)
//     dq_t += dpreatt[s] / sqrt(HS) * k_s;   dk_s += dpreatt[s] / sqrt(HS) * q_t
// Why: the readable reference for the fused/flash attention of other backends (llm.c
// train_gpt2.c attention), O(B * NH * T^2 * HS) plain loops. `doc_ids` (B, T) optionally keeps
// documents packed into one sequence apart: s is allowed only if doc_ids[b,s] == doc_ids[b,t].
// The diagonal s = t is always allowed, so every softmax row has at least one term.
// The saved `att` (B, NH, T, T) holds exact zeros above the diagonal and at masked entries, so
// the backward needs no mask: it skips zero probabilities (their contribution is exactly 0).
// Parallelism and determinism: the forward is independent per (b, h, t) and is split over all
// of them. In the backward every (b, g) pair (a kv head and its group of query heads) owns
// its own q/k/v gradient channels, but dk_s and dv_s gather contributions from all rows t >= s
// of every query head of the group; so the backward is split over (b, g) pairs only, and each
// pair walks its query heads in order and t = 0..T-1 in order: every gradient element is summed
// in a fixed order whatever the thread count (for NKV == NH the order of the multi-head
// kernel). K and v are never copied per query head. Per-thread scratch is one row of T floats.
// Inner loops run over the HS contiguous channels of a head (dot products with a fixed set of
// kLanes partial sums, and axpys), which the compiler vectorises.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {

constexpr int kLanes = 16;  // partial sums in a dot product: two AVX2 registers of 8 floats

// a . b over n floats, lanes combined in a fixed pairwise order (deterministic).
inline float dot(const float* __restrict a, const float* __restrict b, int n) {
  float acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; j++) acc[j] += a[i + j] * b[i + j];
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; j++) acc[j] += acc[j + w];
  float s = acc[0];
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// y += alpha * x over n floats.
inline void axpy(float* __restrict y, float alpha, const float* __restrict x, int n) {
  for (int i = 0; i < n; i++) y[i] += alpha * x[i];
}

void check_shapes(const char* fn, int B, int T, int C, int NH, int NKV) {
  MT_CHECK(B >= 0 && T >= 0 && C > 0 && NH > 0 && NKV > 0, "{}: bad shape B={} T={} C={} NH={} NKV={}", fn, B,
           T, C, NH, NKV);
  MT_CHECK(C % NH == 0, "{}: C={} is not divisible by NH={}", fn, C, NH);
  MT_CHECK(NH % NKV == 0, "{}: NH={} query heads are not divisible by NKV={} kv heads", fn, NH, NKV);
}

}  // namespace

// ---------------------------------------------------------------------------- forward
// out:     (B, T, C)      written
// att:     (B, NH, T, T)  written (probabilities; 0 above the diagonal and where masked)
// qkv:     (B, T, (NH + 2 NKV) HS)
// doc_ids: (B, T) or null
void attention_forward(float* out, float* att, const float* qkv, const int32_t* doc_ids,
                       int B, int T, int C, int NH, int NKV) {
  check_shapes("attention_forward", B, T, C, NH, NKV);
  const int HS = C / NH;
  const int64_t C3 = C + 2 * static_cast<int64_t>(NKV) * HS;  // qkv row width
  const int64_t koff = C, voff = C + static_cast<int64_t>(NKV) * HS;
  const int group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const float neg_inf = -std::numeric_limits<float>::infinity();

  // Iterations (b, h, t) dealt round-robin (chunk 1): row t costs O(t), so neighbouring rows
  // go to different threads and the work stays balanced even for B * NH = 1.
#pragma omp parallel for collapse(3) schedule(static, 1) \
    if (static_cast<int64_t>(B) * NH * T * T * HS >= (1 << 16))
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      for (int t = 0; t < T; t++) {
        const float* q = qkv + (static_cast<int64_t>(b) * T + t) * C3 + h * HS;
        float* att_row = att + ((static_cast<int64_t>(b) * NH + h) * T + t) * T;
        const int32_t* doc = doc_ids != nullptr ? doc_ids + static_cast<int64_t>(b) * T : nullptr;

        // 1) scaled scores q . k_s for s <= t (-inf where another document), and their max.
        float maxval = neg_inf;
        for (int s = 0; s <= t; s++) {
          if (doc != nullptr && doc[s] != doc[t]) {
            att_row[s] = neg_inf;
            continue;
          }
          const float* k = qkv + (static_cast<int64_t>(b) * T + s) * C3 + koff + (h / group) * HS;
          const float score = dot(q, k, HS) * scale;
          att_row[s] = score;
          if (score > maxval) maxval = score;
        }

        // 2) softmax over s <= t; exp(-inf - max) = 0 zeroes the masked entries.
        float sum = 0.0f;
        for (int s = 0; s <= t; s++) {
          const float e = std::exp(att_row[s] - maxval);
          att_row[s] = e;
          sum += e;
        }
        const float inv_sum = 1.0f / sum;
        for (int s = 0; s <= t; s++) att_row[s] *= inv_sum;
        for (int s = t + 1; s < T; s++) att_row[s] = 0.0f;  // causal: no weight on the future

        // 3) out_t = sum_s att[t, s] * v_s.
        float* o = out + (static_cast<int64_t>(b) * T + t) * C + h * HS;
        for (int i = 0; i < HS; i++) o[i] = 0.0f;
        for (int s = 0; s <= t; s++) {
          const float a = att_row[s];
          if (a == 0.0f) continue;  // masked (or underflowed): contributes exactly nothing
          const float* v = qkv + (static_cast<int64_t>(b) * T + s) * C3 + voff + (h / group) * HS;
          axpy(o, a, v, HS);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------- backward
// dqkv: (B, T, (NH + 2 NKV) HS) += (q, k and v gradients in the qkv layout)
// dout: (B, T, C)
// qkv:  (B, T, (NH + 2 NKV) HS)  the forward's input
// att:  (B, NH, T, T)            saved by attention_forward
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int B, int T, int C, int NH, int NKV) {
  check_shapes("attention_backward", B, T, C, NH, NKV);
  if (dqkv == nullptr || B == 0 || T == 0) return;
  const int HS = C / NH;
  const int64_t C3 = C + 2 * static_cast<int64_t>(NKV) * HS;
  const int group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));

#pragma omp parallel if (static_cast<int64_t>(B) * NH * T * T * HS >= (1 << 16))
  {
    std::vector<float> datt(T);  // per-thread scratch: datt[s] = dout_t . v_s for one row

#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
      for (int g = 0; g < NKV; g++) {
        const int64_t koff = C + static_cast<int64_t>(g) * HS;
        const int64_t voff = C + (static_cast<int64_t>(NKV) + g) * HS;
        for (int h = g * group; h < (g + 1) * group; h++) {
          for (int t = 0; t < T; t++) {
            const float* att_row = att + ((static_cast<int64_t>(b) * NH + h) * T + t) * T;
            const int64_t row_t = static_cast<int64_t>(b) * T + t;
            const float* q_t = qkv + row_t * C3 + h * HS;
            float* dq_t = dqkv + row_t * C3 + h * HS;
            const float* dout_t = dout + row_t * C + h * HS;

            // 1) through out_t = sum_s att[t,s] v_s: datt[s] = dout_t . v_s and dv_s.
            //    Also the softmax's row sum  sum_s att[t,s] * datt[s].
            float dsum = 0.0f;
            for (int s = 0; s <= t; s++) {
              const float a = att_row[s];
              if (a == 0.0f) {
                datt[s] = 0.0f;
                continue;
              }
              const int64_t row_s = static_cast<int64_t>(b) * T + s;
              const float* v_s = qkv + row_s * C3 + voff;
              float* dv_s = dqkv + row_s * C3 + voff;
              datt[s] = dot(dout_t, v_s, HS);
              dsum += a * datt[s];
              axpy(dv_s, a, dout_t, HS);
            }

            // 2) through the softmax and the scaled scores into q_t and every k_s.
            for (int s = 0; s <= t; s++) {
              const float a = att_row[s];
              if (a == 0.0f) continue;
              const float dpre = a * (datt[s] - dsum) * scale;
              const int64_t row_s = static_cast<int64_t>(b) * T + s;
              const float* k_s = qkv + row_s * C3 + koff;
              float* dk_s = dqkv + row_s * C3 + koff;
              axpy(dq_t, dpre, k_s, HS);
              axpy(dk_s, dpre, q_t, HS);
            }
          }
        }
      }
    }
  }
}

}  // namespace mt::kernels::cpu

namespace mt::kernels::cpu {

// ---------------------------------------------------------------------------- KV cache
// Decoding is memory bound (B = 1: one query row per head reads the whole cache once), so the
// kernels are plain loops over contiguous HS-channel runs: the cache layout (B, NKV, max_len,
// HS) keeps a kv head's keys (and values) consecutive, and the dot / axpy helpers above
// vectorise over the channels.
void kv_cache_append(float* k_cache, float* v_cache, const float* qkv, int B, int n_new, int past,
                     int max_len, int NH, int NKV, int HS) {
  MT_CHECK(B >= 0 && n_new >= 0 && past >= 0 && past + n_new <= max_len && NH > 0 && NKV > 0 && NH % NKV == 0,
           "kv_cache_append: bad shape B={} n_new={} past={} max_len={} NH={} NKV={}", B, n_new, past, max_len, NH,
           NKV);
  const int64_t C3 = (static_cast<int64_t>(NH) + 2 * NKV) * HS;
  const int64_t koff = static_cast<int64_t>(NH) * HS, voff = koff + static_cast<int64_t>(NKV) * HS;
  for (int b = 0; b < B; b++) {
    for (int i = 0; i < n_new; i++) {
      const float* row = qkv + (static_cast<int64_t>(b) * n_new + i) * C3;
      for (int g = 0; g < NKV; g++) {
        const int64_t at = ((static_cast<int64_t>(b) * NKV + g) * max_len + past + i) * HS;
        std::copy(row + koff + g * HS, row + koff + (g + 1) * HS, k_cache + at);
        std::copy(row + voff + g * HS, row + voff + (g + 1) * HS, v_cache + at);
      }
    }
  }
}

void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                      int B, int n_new, int past, int max_len, int NH, int NKV, int HS) {
  MT_CHECK(B >= 0 && n_new >= 0 && past >= 0 && past + n_new <= max_len && HS > 0,
           "attention_decode: bad shape B={} n_new={} past={} max_len={} HS={}", B, n_new, past, max_len, HS);
  check_shapes("attention_decode", B, n_new, NH * HS, NH, NKV);
  const int64_t C = static_cast<int64_t>(NH) * HS;
  const int64_t C3 = C + 2 * static_cast<int64_t>(NKV) * HS;
  const int group = NH / NKV;
  const int len = past + n_new;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));

#pragma omp parallel if (static_cast<int64_t>(B) * NH * n_new * len * HS >= (1 << 16))
  {
    std::vector<float> att_row(static_cast<size_t>(len));  // per-thread scores / probabilities

#pragma omp for collapse(3) schedule(static, 1)
    for (int b = 0; b < B; b++) {
      for (int h = 0; h < NH; h++) {
        for (int i = 0; i < n_new; i++) {
          const int t = past + i;
          const float* q = qkv + (static_cast<int64_t>(b) * n_new + i) * C3 + h * HS;
          const int64_t head = (static_cast<int64_t>(b) * NKV + h / group) * max_len * HS;
          const float* kh = k_cache + head;
          const float* vh = v_cache + head;
          // as attention_forward's row t: scores and max, softmax, then the weighted values
          float maxval = -std::numeric_limits<float>::infinity();
          for (int s = 0; s <= t; s++) {
            const float score = dot(q, kh + static_cast<int64_t>(s) * HS, HS) * scale;
            att_row[s] = score;
            if (score > maxval) maxval = score;
          }
          float sum = 0.0f;
          for (int s = 0; s <= t; s++) {
            const float e = std::exp(att_row[s] - maxval);
            att_row[s] = e;
            sum += e;
          }
          const float inv_sum = 1.0f / sum;
          for (int s = 0; s <= t; s++) att_row[s] *= inv_sum;
          float* o = out + (static_cast<int64_t>(b) * n_new + i) * C + h * HS;
          for (int c = 0; c < HS; c++) o[c] = 0.0f;
          for (int s = 0; s <= t; s++) {
            const float a = att_row[s];
            if (a == 0.0f) continue;
            axpy(o, a, vh + static_cast<int64_t>(s) * HS, HS);
          }
        }
      }
    }
  }
}

}  // namespace mt::kernels::cpu
