// What: the own causal attention for CUDA, forward and backward, with grouped key/value heads
// (grouped-query attention) and optional document masking (doc_ids), in the qkv layout of the
// model: qkv (B, T, (NH + 2 NKV) HS) per token [q (NH HS) | k (NKV HS) | v (NKV HS)], query
// head h owning q channels [h*HS, (h+1)*HS) and reading kv head g = h / (NH / NKV) (NKV == NH
// is multi-head attention); out (B, T, C = NH HS). K and v are never copied per query head.
//   forward  (one warp per query row (b, h, t)): keys s <= t (same document) in chunks of 32,
//            lane j scoring key s0 + j (full dot product, q staged in shared memory), with the
//            online softmax (running max m and sum l, FlashAttention's rescaling) and the
//            output accumulated per channel (lane owns channels lane, lane+32, ...). Saves
//            lse = m + log(l) per row instead of the (T, T) probabilities.
//   backward (three kernels, probabilities recomputed as P = exp(score - lse)):
//            D[t]   = dout_t . out_t                                   (one warp per query row)
//            dq_t  += scale * sum_s P[t,s] (dout_t . v_s - D[t]) k_s   (one warp per query row)
//            dk_s  += scale * sum_h sum_t P[t,s] (dout_t . v_s - D[t]) q_t
//            dv_s  += sum_h sum_t P[t,s] dout_t     (one warp per key row (b, g, s); h runs
//                                                    over the query heads of kv head g)
// Why: correctness first and simple enough to check by reading; O(T) memory per head like
// FlashAttention (no (T, T) matrix), deterministic: every gradient element is summed by one
// warp in a fixed order, no atomics. The dk/dv of a kv head gather from all NH/NKV query heads
// of its group: the warp that owns key row (b, g, s) walks those heads in order (h ascending,
// then t ascending, as the CPU reference), so GQA needs no atomics either. It is not a
// tensor-core kernel: cuDNN's fused attention (attention_cudnn.cc) is the fast path where it
// applies, this is the fallback and the path for doc_ids and grouped kv heads. Scores are
// computed exactly as in the forward in both backward kernels (same dot-product order), so P
// matches the forward's softmax.
// Launch: 4 warps (4 consecutive rows of one head, sharing K/V in cache) per 128-thread block.
// GPU-UNVERIFIED (speed): each lane computes whole q.k dot products on CUDA cores, reading its
// own key row 2 bytes at a time; at GPT-2 small sizes (T = 1024, HS = 64) a rough L1-traffic
// estimate puts forward + backward at several times the step's matmul time, so bench step's
// MFU will be far below the cuBLASLt matmuls' until the cuDNN seam (or a tiled tensor-core
// kernel) replaces it. With few kv heads the dk/dv kernel has B * NKV * T warps, each doing
// NH/NKV heads' work (less parallelism for NKV == 1 and small B * T). Measure with `bench
// step` before drawing conclusions.
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_ops_test.cc and cuda_llama_ops_test.cc
// compare it with the CPU reference (with and without doc_ids, grouped kv heads, odd T and
// head sizes) where a GPU is.
#include <math_constants.h>

#include "kernels/cuda/common.cuh"

namespace mt::kernels::cuda {

namespace {

constexpr int kAttWarps = 4;
constexpr int kAttThreads = kAttWarps * 32;
constexpr int kPerLane = kMaxHeadSize / 32;  // channels per lane at the largest head size
constexpr unsigned kFull = 0xffffffffu;

// Row (b, h, t) of a warp; rows enumerate (b, h) major, t minor: row = (b * NH + h) * T + t,
// which is also the index of its log-sum-exp.
struct Row {
  int b, h, t;
};
__device__ __forceinline__ Row row_of(int64_t row, int T, int NH) {
  Row r;
  r.t = static_cast<int>(row % T);
  const int64_t bh = row / T;
  r.h = static_cast<int>(bh % NH);
  r.b = static_cast<int>(bh / NH);
  return r;
}

// sum_c a[c] * g[c] over c = 0..HS-1 in order (a: fp32 in shared memory, g: a global row).
template <typename T>
__device__ __forceinline__ float dot_row(const float* a, const T* g, int HS) {
  float d = 0.0f;
  for (int c = 0; c < HS; ++c) d += a[c] * ld(g[c]);
  return d;
}

__device__ __forceinline__ bool same_doc(const int32_t* doc, int s, int t) {
  return doc == nullptr || doc[s] == doc[t];
}

// Where the heads of one sequence live in qkv: row width C3 = (NH + 2 NKV) HS; query head h
// at h*HS, kv head g's k at koff(g), its v at voff(g).
struct Layout {
  int64_t C3;
  int C, NKV, HS, group;  // group = NH / NKV query heads per kv head
  __device__ __forceinline__ int64_t koff(int g) const { return C + static_cast<int64_t>(g) * HS; }
  __device__ __forceinline__ int64_t voff(int g) const { return C + (static_cast<int64_t>(NKV) + g) * HS; }
};

// out: (B, T, C) written;  lse: (B, NH, T) written;  qkv: (B, T, C3);  doc_ids: (B, T) or null
template <typename T>
__global__ void attn_forward_k(T* out, float* lse, const T* qkv, const int32_t* doc_ids, int B, int Tn, int NH,
                               Layout L, float scale) {
  __shared__ float sq[kAttWarps][kMaxHeadSize];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kAttWarps + warp;
  if (row >= static_cast<int64_t>(B) * NH * Tn) return;  // whole warp; no block barriers below
  const Row r = row_of(row, Tn, NH);
  const int HS = L.HS, C = L.C;
  const int64_t C3 = L.C3;
  const int g = r.h / L.group;
  const T* base = qkv + static_cast<int64_t>(r.b) * Tn * C3;  // token 0 of sequence b
  const int32_t* doc = doc_ids != nullptr ? doc_ids + static_cast<int64_t>(r.b) * Tn : nullptr;
  float* q = sq[warp];
  for (int c = lane; c < HS; c += 32) q[c] = ld(base[r.t * C3 + r.h * HS + c]);
  __syncwarp();

  float m = -CUDART_INF_F, l = 0.0f;
  float acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = 0.0f;
  for (int s0 = 0; s0 <= r.t; s0 += 32) {
    const int s = s0 + lane;
    const bool valid = s <= r.t && same_doc(doc, s, r.t);
    const float score = valid ? dot_row(q, base + s * C3 + L.koff(g), HS) * scale : -CUDART_INF_F;
    const float cmax = warp_max(score);
    if (cmax == -CUDART_INF_F) continue;  // the whole chunk is masked (same on every lane)
    const float nm = fmaxf(m, cmax);
    const float p = valid ? expf(score - nm) : 0.0f;
    const float corr = expf(m - nm);  // 0 while m is still -inf
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) acc[j] *= corr;
    const int cnt = r.t - s0 + 1 < 32 ? r.t - s0 + 1 : 32;
    for (int jj = 0; jj < cnt; ++jj) {
      const float pj = __shfl_sync(kFull, p, jj);
      if (pj == 0.0f) continue;  // masked or underflowed (same on every lane)
      const T* v = base + (s0 + jj) * C3 + L.voff(g);
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int c = lane + 32 * j;
        if (c < HS) acc[j] += pj * ld(v[c]);
      }
    }
    m = nm;
  }
  // The diagonal is always allowed, so l >= 1 here.
  T* o = out + (static_cast<int64_t>(r.b) * Tn + r.t) * C + r.h * HS;
  const float inv = 1.0f / l;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int c = lane + 32 * j;
    if (c < HS) o[c] = st<T>(acc[j] * inv);
  }
  if (lane == 0) lse[row] = m + logf(l);
}

// D: (B, NH, T) written, D[row] = dout_row . out_row over the head's channels;  dout, out: (B, T, C)
template <typename T>
__global__ void attn_rowdot_k(float* D, const T* dout, const T* out, int B, int Tn, int C, int NH, int HS) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kAttWarps + warp;
  if (row >= static_cast<int64_t>(B) * NH * Tn) return;
  const Row r = row_of(row, Tn, NH);
  const int64_t off = (static_cast<int64_t>(r.b) * Tn + r.t) * C + r.h * HS;
  float d = 0.0f;
  for (int c = lane; c < HS; c += 32) d += ld(dout[off + c]) * ld(out[off + c]);
  d = warp_sum(d);
  if (lane == 0) D[row] = d;
}

// dq for query row (b, h, t).
// dqkv: (B, T, C3) += (q channels);  dout: (B, T, C);  qkv: (B, T, C3);  lse, D: (B, NH, T)
template <typename T>
__global__ void attn_backward_dq_k(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D,
                                   const int32_t* doc_ids, int B, int Tn, int NH, Layout L, float scale) {
  __shared__ float sq[kAttWarps][kMaxHeadSize];
  __shared__ float sdo[kAttWarps][kMaxHeadSize];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kAttWarps + warp;
  if (row >= static_cast<int64_t>(B) * NH * Tn) return;
  const Row r = row_of(row, Tn, NH);
  const int HS = L.HS, C = L.C;
  const int64_t C3 = L.C3;
  const int g = r.h / L.group;
  const T* base = qkv + static_cast<int64_t>(r.b) * Tn * C3;
  const int32_t* doc = doc_ids != nullptr ? doc_ids + static_cast<int64_t>(r.b) * Tn : nullptr;
  const int64_t out_off = (static_cast<int64_t>(r.b) * Tn + r.t) * C + r.h * HS;
  float* q = sq[warp];
  float* dO = sdo[warp];
  for (int c = lane; c < HS; c += 32) {
    q[c] = ld(base[r.t * C3 + r.h * HS + c]);
    dO[c] = ld(dout[out_off + c]);
  }
  __syncwarp();
  const float Ls = lse[row], Dt = D[row];
  float acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = 0.0f;
  for (int s0 = 0; s0 <= r.t; s0 += 32) {
    const int s = s0 + lane;
    float ds = 0.0f;
    if (s <= r.t && same_doc(doc, s, r.t)) {
      const float score = dot_row(q, base + s * C3 + L.koff(g), HS) * scale;
      const float P = expf(score - Ls);
      const float dP = dot_row(dO, base + s * C3 + L.voff(g), HS);
      ds = P * (dP - Dt) * scale;
    }
    const int cnt = r.t - s0 + 1 < 32 ? r.t - s0 + 1 : 32;
    for (int jj = 0; jj < cnt; ++jj) {
      const float dsj = __shfl_sync(kFull, ds, jj);
      if (dsj == 0.0f) continue;
      const T* k = base + (s0 + jj) * C3 + L.koff(g);
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int c = lane + 32 * j;
        if (c < HS) acc[j] += dsj * ld(k[c]);
      }
    }
  }
  T* dq = dqkv + static_cast<int64_t>(r.b) * Tn * C3 + r.t * C3 + r.h * HS;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int c = lane + 32 * j;
    if (c < HS) dq[c] = st<T>(ld(dq[c]) + acc[j]);
  }
}

// dk and dv for key row (b, g, s) of kv head g: the queries t >= s of the same document of
// every query head h of the group (h = g*group .. (g+1)*group - 1, in order). The warp owns
// these dk/dv channels alone, so the sum needs no atomics and has a fixed order.
// dqkv: (B, T, C3) += (k and v channels);  dout: (B, T, C);  qkv: (B, T, C3);  lse, D: (B, NH, T)
template <typename T>
__global__ void attn_backward_dkv_k(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D,
                                    const int32_t* doc_ids, int B, int Tn, int NH, Layout L, float scale) {
  __shared__ float sk[kAttWarps][kMaxHeadSize];
  __shared__ float sv[kAttWarps][kMaxHeadSize];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kAttWarps + warp;
  if (row >= static_cast<int64_t>(B) * L.NKV * Tn) return;
  const Row r = row_of(row, Tn, L.NKV);  // r.h is the kv head g, r.t the key position s
  const int g = r.h, s = r.t;
  const int HS = L.HS, C = L.C;
  const int64_t C3 = L.C3;
  const T* base = qkv + static_cast<int64_t>(r.b) * Tn * C3;
  const T* dout_b = dout + static_cast<int64_t>(r.b) * Tn * C;
  const int32_t* doc = doc_ids != nullptr ? doc_ids + static_cast<int64_t>(r.b) * Tn : nullptr;
  float* k = sk[warp];
  float* v = sv[warp];
  for (int c = lane; c < HS; c += 32) {
    k[c] = ld(base[s * C3 + L.koff(g) + c]);
    v[c] = ld(base[s * C3 + L.voff(g) + c]);
  }
  __syncwarp();
  float acck[kPerLane], accv[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acck[j] = accv[j] = 0.0f;
  for (int h = g * L.group; h < (g + 1) * L.group; ++h) {
    const int64_t lse_bh = (static_cast<int64_t>(r.b) * NH + h) * Tn;  // index of (b, h, t = 0)
    for (int t0 = s; t0 < Tn; t0 += 32) {
      const int t = t0 + lane;
      float P = 0.0f, ds = 0.0f;
      if (t < Tn && same_doc(doc, s, t)) {
        // score = q_t . k_s in the forward's order (q_t[c] * k_s[c], c ascending)
        const T* qt = base + t * C3 + h * HS;
        float d = 0.0f;
        for (int c = 0; c < HS; ++c) d += ld(qt[c]) * k[c];
        const float score = d * scale;
        P = expf(score - lse[lse_bh + t]);
        const float dP = dot_row(v, dout_b + static_cast<int64_t>(t) * C + h * HS, HS);
        ds = P * (dP - D[lse_bh + t]) * scale;
      }
      const int cnt = Tn - t0 < 32 ? Tn - t0 : 32;
      for (int jj = 0; jj < cnt; ++jj) {
        const float Pj = __shfl_sync(kFull, P, jj);
        const float dsj = __shfl_sync(kFull, ds, jj);
        if (Pj == 0.0f) continue;  // then dsj is 0 too
        const T* qt = base + (t0 + jj) * C3 + h * HS;
        const T* dot = dout_b + static_cast<int64_t>(t0 + jj) * C + h * HS;
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) {
          const int c = lane + 32 * j;
          if (c < HS) {
            acck[j] += dsj * ld(qt[c]);
            accv[j] += Pj * ld(dot[c]);
          }
        }
      }
    }
  }
  T* dk = dqkv + static_cast<int64_t>(r.b) * Tn * C3 + s * C3 + L.koff(g);
  T* dv = dqkv + static_cast<int64_t>(r.b) * Tn * C3 + s * C3 + L.voff(g);
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int c = lane + 32 * j;
    if (c < HS) {
      dk[c] = st<T>(ld(dk[c]) + acck[j]);
      dv[c] = st<T>(ld(dv[c]) + accv[j]);
    }
  }
}

bool bad_shape(int B, int T, int C, int NH, int NKV) {
  return B < 0 || T < 0 || C <= 0 || NH <= 0 || NKV <= 0 || C % NH != 0 || NH % NKV != 0 ||
         C / NH > kMaxHeadSize;
}

Layout layout_of(int C, int NH, int NKV) {
  Layout L;
  L.HS = C / NH;
  L.C = C;
  L.NKV = NKV;
  L.group = NH / NKV;
  L.C3 = C + 2 * static_cast<int64_t>(NKV) * L.HS;
  return L;
}

}  // namespace

cudaError_t attention_forward(Dt dt, void* out, float* lse, const void* qkv, const int32_t* doc_ids, int B, int T,
                              int C, int NH, int NKV, cudaStream_t s) {
  if (bad_shape(B, T, C, NH, NKV)) return cudaErrorInvalidValue;
  const int64_t rows = static_cast<int64_t>(B) * NH * T;
  if (rows == 0) return cudaSuccess;
  const Layout L = layout_of(C, NH, NKV);
  const float scale = 1.0f / sqrtf(static_cast<float>(L.HS));
  const unsigned int grid = static_cast<unsigned int>(ceil_div(rows, kAttWarps));
  MT_DISPATCH(dt, X, attn_forward_k<X><<<grid, kAttThreads, 0, s>>>(static_cast<X*>(out), lse,
                                                                    static_cast<const X*>(qkv), doc_ids, B, T, NH, L,
                                                                    scale););
  return cudaGetLastError();
}

cudaError_t attention_backward(Dt dt, void* dqkv, const void* dout, const void* qkv, const void* out,
                               const float* lse, const int32_t* doc_ids, int B, int T, int C, int NH, int NKV,
                               float* scratch, cudaStream_t s) {
  if (bad_shape(B, T, C, NH, NKV)) return cudaErrorInvalidValue;
  const int64_t rows = static_cast<int64_t>(B) * NH * T;
  if (rows == 0 || dqkv == nullptr) return cudaSuccess;
  const Layout L = layout_of(C, NH, NKV);
  const float scale = 1.0f / sqrtf(static_cast<float>(L.HS));
  const unsigned int grid = static_cast<unsigned int>(ceil_div(rows, kAttWarps));
  const unsigned int kv_grid = static_cast<unsigned int>(ceil_div(static_cast<int64_t>(B) * NKV * T, kAttWarps));
  MT_DISPATCH(dt, X, {
    attn_rowdot_k<X><<<grid, kAttThreads, 0, s>>>(scratch, static_cast<const X*>(dout), static_cast<const X*>(out), B,
                                                  T, C, NH, L.HS);
    attn_backward_dq_k<X><<<grid, kAttThreads, 0, s>>>(static_cast<X*>(dqkv), static_cast<const X*>(dout),
                                                       static_cast<const X*>(qkv), lse, scratch, doc_ids, B, T, NH, L,
                                                       scale);
    attn_backward_dkv_k<X><<<kv_grid, kAttThreads, 0, s>>>(static_cast<X*>(dqkv), static_cast<const X*>(dout),
                                                           static_cast<const X*>(qkv), lse, scratch, doc_ids, B, T,
                                                           NH, L, scale);
  });
  return cudaGetLastError();
}

}  // namespace mt::kernels::cuda
