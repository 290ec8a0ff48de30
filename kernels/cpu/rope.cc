// What: rotary position embedding (RoPE) in Hugging Face's rotate-half layout, in place.
//   For each row n, each of the first n_heads heads (HS channels) and i < H = HS/2, with
//   c = cos[pos[n], i], s = sin[pos[n], i]:
//     forward : x'[i] = x[i] c - x[i+H] s          x'[i+H] = x[i+H] c + x[i] s
//     backward: the transpose rotation of the gradient,
//               dx[i] = dx'[i] c + dx'[i+H] s      dx[i+H] = dx'[i+H] c - dx'[i] s
//   (HF: q * cos + rotate_half(q) * sin with cos = cat(cos_half, cos_half), rotate_half(q) =
//   cat(-q[H:], q[:H]).) The tables (max_pos, H) are computed once per run by the model
//   (parallel/models/llama.cc) as HF does: inv_freq[i] = 1 / theta^(2i/HS) and the angle
//   pos * inv_freq[i] in fp32.
// Why: the reference for the CUDA kernel. Positions come per row so packed documents restart
// at 0. The rotation is applied to q and k after the qkv projection (rows of a fused qkv
// buffer: stride = its row width, n_heads = the q heads plus the k heads, which are adjacent).
// Every element pair is independent: any split over threads is deterministic.
#include <cstdint>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {

constexpr int64_t kParallelMinElems = 1 << 15;

// sign = +1: forward rotation; -1: its transpose (backward).
void rotate(float* x, const float* cos, const float* sin, const int32_t* pos, int N, int stride,
            int n_heads, int HS, float sign) {
  MT_CHECK(N >= 0 && HS > 0 && HS % 2 == 0 && n_heads >= 0 && static_cast<int64_t>(n_heads) * HS <= stride,
           "rope: bad shape N={} stride={} n_heads={} HS={} (HS must be even)", N, stride, n_heads, HS);
  const int H = HS / 2;
#pragma omp parallel for schedule(static) \
    if (static_cast<int64_t>(N) * n_heads * HS >= kParallelMinElems)
  for (int n = 0; n < N; n++) {
    const float* c = cos + static_cast<int64_t>(pos[n]) * H;
    const float* s = sin + static_cast<int64_t>(pos[n]) * H;
    float* row = x + static_cast<int64_t>(n) * stride;
    for (int h = 0; h < n_heads; h++) {
      float* lo = row + static_cast<int64_t>(h) * HS;
      float* hi = lo + H;
      for (int i = 0; i < H; i++) {
        const float a = lo[i], b = hi[i], si = sign * s[i];
        lo[i] = a * c[i] - b * si;
        hi[i] = b * c[i] + a * si;
      }
    }
  }
}

}  // namespace

// x: rows (N, stride), the first n_heads * HS channels of each rotated;  cos, sin: (max_pos, HS/2);
// pos: (N)
void rope_forward(float* x, const float* cos, const float* sin, const int32_t* pos, int N,
                  int stride, int n_heads, int HS) {
  rotate(x, cos, sin, pos, N, stride, n_heads, HS, 1.0f);
}

void rope_backward(float* dx, const float* cos, const float* sin, const int32_t* pos, int N,
                   int stride, int n_heads, int HS) {
  rotate(dx, cos, sin, pos, N, stride, n_heads, HS, -1.0f);
}

}  // namespace mt::kernels::cpu
