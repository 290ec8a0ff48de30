// What: the token and position embeddings, forward and backward.
//   token:    out[n, :] = wte[tokens[n] - v_start, :] if v_start <= tokens[n] < v_start + v_count,
//             else 0;  backward: dwte[tokens[n] - v_start, :] += dout[n, :] for owned tokens
//   position: out[b, t, :] += wpe[t, :];  backward: dwpe[t, :] += sum_b dout[b, t, :]
// Why: reference semantics (llm.c train_gpt2.c encoder), split into a token part and a
// position part because under vocab parallelism each rank holds only rows
// [v_start, v_start + v_count) of the (V, C) token table: its forward yields the rows of the
// tokens it owns and zeros elsewhere, and a tensor-parallel caller sums the partial outputs
// over its group (exactly one rank contributes each token) before adding the positions.
// Determinism: the backward reductions run over tokens, and the same vocab row can appear at
// many positions, so the token backward is split over blocks of channels: each thread owns a
// channel range of every row and walks n = 0..N-1 in order, so each dwte element receives its
// contributions in token order whatever the thread count. The position backward is split over
// t: one thread sums dwpe[t, :] over b = 0..B-1 in order.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {

// Channels per block in the token-embedding backward. A block is a contiguous run of
// channels of one table row (64 floats = 4 cache lines), so adding it is a vectorised loop.
constexpr int kChannelBlock = 64;
constexpr int64_t kParallelMinElems = 1 << 15;

// Local row of `token` in a slice [v_start, v_start + v_count), or -1 if not owned.
inline int64_t local_row(int32_t token, int v_start, int v_count) {
  const int64_t r = static_cast<int64_t>(token) - v_start;
  return (r >= 0 && r < v_count) ? r : -1;
}

}  // namespace

// ---------------------------------------------------------------------------- token embedding
// out:    (N, C)        written (zeros for tokens outside the slice)
// tokens: (N)           global token ids
// wte:    (v_count, C)  rows [v_start, v_start + v_count) of the full table
void token_embedding_forward(float* out, const int32_t* tokens, const float* wte, int N, int C,
                             int v_start, int v_count) {
  MT_CHECK(N >= 0 && C >= 0 && v_count >= 0 && v_start >= 0,
           "token_embedding_forward: bad shape N={} C={} v_start={} v_count={}", N, C, v_start,
           v_count);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C >= kParallelMinElems)
  for (int n = 0; n < N; n++) {
    float* out_n = out + static_cast<int64_t>(n) * C;
    const int64_t r = local_row(tokens[n], v_start, v_count);
    if (r >= 0) {
      std::memcpy(out_n, wte + r * C, sizeof(float) * C);
    } else {
      std::memset(out_n, 0, sizeof(float) * C);
    }
  }
}

// dwte:   (v_count, C)  += dout rows of the owned tokens (null to skip)
// dout:   (N, C)
// tokens: (N)           global token ids
void token_embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int N, int C,
                              int v_start, int v_count) {
  MT_CHECK(N >= 0 && C >= 0 && v_count >= 0 && v_start >= 0,
           "token_embedding_backward: bad shape N={} C={} v_start={} v_count={}", N, C, v_start,
           v_count);
  if (dwte == nullptr) return;
  const int nblocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C >= kParallelMinElems)
  for (int blk = 0; blk < nblocks; blk++) {
    const int c0 = blk * kChannelBlock;
    const int width = std::min(kChannelBlock, C - c0);
    for (int n = 0; n < N; n++) {  // in token order: fixes the summation order per element
      const int64_t r = local_row(tokens[n], v_start, v_count);
      if (r < 0) continue;
      float* dst = dwte + r * C + c0;
      const float* src = dout + static_cast<int64_t>(n) * C + c0;
      for (int j = 0; j < width; j++) dst[j] += src[j];
    }
  }
}

// ---------------------------------------------------------------------------- position embedding
// out: (B, T, C) += wpe[p, :], p = pos[b*T + t] (pos: (B, T), packed documents restart at 0) or
// t when pos is null;  wpe: (T_max > every p, C)
void position_embedding_forward(float* out, const float* wpe, const int32_t* pos, int B, int T, int C) {
  MT_CHECK(B >= 0 && T >= 0 && C >= 0, "position_embedding_forward: bad shape B={} T={} C={}", B,
           T, C);
#pragma omp parallel for collapse(2) schedule(static) \
    if (static_cast<int64_t>(B) * T * C >= kParallelMinElems)
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < T; t++) {
      const int64_t n = static_cast<int64_t>(b) * T + t;
      float* out_bt = out + n * C;
      const float* wpe_t = wpe + static_cast<int64_t>(pos != nullptr ? pos[n] : t) * C;
      for (int c = 0; c < C; c++) out_bt[c] += wpe_t[c];
    }
  }
}

// dwpe: (T_max, C) += the rows of dout at their positions (null to skip);  dout: (B, T, C)
void position_embedding_backward(float* dwpe, const float* dout, const int32_t* pos, int B, int T, int C) {
  MT_CHECK(B >= 0 && T >= 0 && C >= 0, "position_embedding_backward: bad shape B={} T={} C={}", B,
           T, C);
  if (dwpe == nullptr) return;
  if (pos == nullptr) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(B) * T * C >= kParallelMinElems)
    for (int t = 0; t < T; t++) {
      float* dst = dwpe + static_cast<int64_t>(t) * C;
      for (int b = 0; b < B; b++) {  // in batch order: fixes the summation order per element
        const float* src = dout + (static_cast<int64_t>(b) * T + t) * C;
        for (int c = 0; c < C; c++) dst[c] += src[c];
      }
    }
    return;
  }
  // Explicit positions: several tokens share a row of dwpe, so split over channels and walk
  // the tokens in order (a fixed summation order per element, whatever the thread count).
  constexpr int kBlock = 64;
  const int nblocks = (C + kBlock - 1) / kBlock;
  const int64_t N = static_cast<int64_t>(B) * T;
#pragma omp parallel for schedule(static) if (N * C >= kParallelMinElems)
  for (int blk = 0; blk < nblocks; blk++) {
    const int c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    for (int64_t n = 0; n < N; n++) {
      float* dst = dwpe + static_cast<int64_t>(pos[n]) * C;
      const float* src = dout + n * C;
      for (int c = c0; c < c1; c++) dst[c] += src[c];
    }
  }
}

}  // namespace mt::kernels::cpu
