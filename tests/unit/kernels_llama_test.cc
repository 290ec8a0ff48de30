// What: correctness tests for the CPU reference kernels of the Llama blocks (RMSNorm, SwiGLU,
// rotary embedding) and for learned positions read at explicit (packed-document) positions.
// How: as kernels_test.cc: forwards against naive double implementations written here from
// the Hugging Face definitions (LlamaRMSNorm, silu(gate) * up, q * cos + rotate_half(q) * sin),
// backwards against central finite differences of those references with L = sum(out * R);
// gradient buffers pre-filled to check accumulation. Grouped-query attention is tested with
// the other attention shapes in kernels_test.cc.
#include <gtest/gtest.h>

#include <cmath>

#include "unit/kernel_test_util.h"

using namespace mt::kernel_test;

namespace {

// ================================================================ RMSNorm
VecD rmsnorm_ref(const VecD& x, const VecD& w, int N, int C, double eps) {
  VecD out(x.size());
  for (int n = 0; n < N; n++) {
    double ms = 0;
    for (int c = 0; c < C; c++) ms += x[n * C + c] * x[n * C + c];
    const double r = 1.0 / std::sqrt(ms / C + eps);
    for (int c = 0; c < C; c++) out[n * C + c] = w[c] * (x[n * C + c] * r);
  }
  return out;
}

TEST(RmsNorm, ForwardAndBackward) {
  for (auto [N, C] : {std::pair{5, 13}, std::pair{4, 70}}) {  // tails; two channel blocks
    const float eps = 1e-5f;
    const VecF x = uniform(N * C, 201, -2, 2), w = uniform(C, 202, 0.5f, 1.5f);
    VecF out(N * C, 9.0f), rstd(N, 9.0f);
    k::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    expect_close(out, rmsnorm_ref(to_double(x), to_double(w), N, C, eps), 1e-5, 1e-5, "rmsnorm out");

    const VecF R = uniform(N * C, 203), dx0 = uniform(N * C, 204), dw0 = uniform(C, 205);
    VecF dx = dx0, dw = dw0;
    k::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
    VecD xd = to_double(x), wd = to_double(w);
    auto loss = [&] { return dot_all(rmsnorm_ref(xd, wd, N, C, eps), R); };
    expect_close(added(dx, dx0), fd_grad(xd, loss), kGradAtol, kGradRtol, "rmsnorm dinp");
    expect_close(added(dw, dw0), fd_grad(wd, loss), kGradAtol, kGradRtol, "rmsnorm dweight");
  }
}

// ================================================================ SwiGLU
VecD swiglu_ref(const VecD& in, int64_t N, int F) {
  VecD out(static_cast<size_t>(N) * F);
  for (int64_t n = 0; n < N; n++)
    for (int i = 0; i < F; i++) {
      const double g = in[n * 2 * F + i], u = in[n * 2 * F + F + i];
      out[n * F + i] = g / (1.0 + std::exp(-g)) * u;
    }
  return out;
}

TEST(SwiGlu, ForwardAndBackward) {
  const int64_t N = 7;
  const int F = 11;
  const VecF in = uniform(N * 2 * F, 211, -4, 4);
  VecF out(N * F, 9.0f);
  k::swiglu_forward(out.data(), in.data(), N, F);
  expect_close(out, swiglu_ref(to_double(in), N, F), 1e-6, 1e-5, "swiglu out");
  const VecF R = uniform(N * F, 212), d0 = uniform(N * 2 * F, 213);
  VecF d = d0;
  k::swiglu_backward(d.data(), in.data(), R.data(), N, F);
  VecD xd = to_double(in);
  auto loss = [&] { return dot_all(swiglu_ref(xd, N, F), R); };
  expect_close(added(d, d0), fd_grad(xd, loss), kGradAtol, kGradRtol, "swiglu dinp");
}

TEST(SwiGlu, SaturatesWithoutNan) {
  const VecF in = {-200.0f, 200.0f, 3.0f, -2.0f};  // gates -200, 200; ups 3, -2
  VecF out(2), d(4, 0.0f);
  const VecF R = {1.0f, 1.0f};
  k::swiglu_forward(out.data(), in.data(), 1, 2);
  k::swiglu_backward(d.data(), in.data(), R.data(), 1, 2);
  EXPECT_EQ(out[0], -0.0f);
  EXPECT_FLOAT_EQ(out[1], -400.0f);
  for (float v : d) EXPECT_TRUE(std::isfinite(v));
}

// ================================================================ rotary embedding
// Hugging Face's tables: inv_freq = 1 / theta^(2i/HS) (fp32), angle = pos * inv_freq (fp32).
void rope_tables(int max_pos, int HS, float theta, VecF* cos, VecF* sin) {
  const int H = HS / 2;
  cos->resize(static_cast<size_t>(max_pos) * H);
  sin->resize(cos->size());
  for (int p = 0; p < max_pos; p++)
    for (int i = 0; i < H; i++) {
      const float inv = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(HS));
      const float ang = static_cast<float>(p) * inv;
      (*cos)[p * H + i] = static_cast<float>(std::cos(static_cast<double>(ang)));
      (*sin)[p * H + i] = static_cast<float>(std::sin(static_cast<double>(ang)));
    }
}

// x * cat(cos, cos) + rotate_half(x) * cat(sin, sin), rotate_half(x) = cat(-x[H:], x[:H]),
// on the first n_heads heads of each row; the rest of the row unchanged.
VecD rope_ref(const VecD& x, const VecF& cos, const VecF& sin, const std::vector<int32_t>& pos, int N, int stride,
              int n_heads, int HS) {
  const int H = HS / 2;
  VecD out = x;
  for (int n = 0; n < N; n++)
    for (int h = 0; h < n_heads; h++)
      for (int j = 0; j < HS; j++) {
        const int i = j % H;
        const double c = cos[pos[n] * H + i], s = sin[pos[n] * H + i];
        const double* v = &x[n * stride + h * HS];
        const double rot = j < H ? -v[j + H] : v[j - H];
        out[n * stride + h * HS + j] = v[j] * c + rot * s;
      }
  return out;
}

TEST(Rope, ForwardMatchesRotateHalfAndBackwardIsItsTranspose) {
  // rows of a fused qkv buffer: 3 q heads + 1 k head rotated, 1 v head left alone
  const int N = 6, HS = 8, n_heads = 4, stride = 5 * HS, max_pos = 10;
  VecF cos, sin;
  rope_tables(max_pos, HS, 10000.0f, &cos, &sin);
  const std::vector<int32_t> pos = {0, 1, 2, 0, 1, 9};  // a packed row: documents restart
  const VecF x = uniform(N * stride, 221);
  VecF y = x;
  k::rope_forward(y.data(), cos.data(), sin.data(), pos.data(), N, stride, n_heads, HS);
  expect_close(y, rope_ref(to_double(x), cos, sin, pos, N, stride, n_heads, HS), 1e-6, 1e-6, "rope out");
  for (int n = 0; n < N; n++)  // the v head is untouched, bit for bit
    for (int j = n_heads * HS; j < stride; j++) ASSERT_EQ(y[n * stride + j], x[n * stride + j]);

  const VecF R = uniform(N * stride, 222);
  VecF d = R;
  k::rope_backward(d.data(), cos.data(), sin.data(), pos.data(), N, stride, n_heads, HS);
  VecD xd = to_double(x);
  auto loss = [&] { return dot_all(rope_ref(xd, cos, sin, pos, N, stride, n_heads, HS), R); };
  expect_close(d, fd_grad(xd, loss), kGradAtol, kGradRtol, "rope dx");
  // a rotation: backward after forward gives back the input
  k::rope_backward(y.data(), cos.data(), sin.data(), pos.data(), N, stride, n_heads, HS);
  expect_close(y, to_double(x), 1e-6, 1e-6, "rope inverse");
}

TEST(Rope, OddHeadSizeIsRefused) {
  VecF x(6, 0.0f), c(3), s(3);
  const std::vector<int32_t> pos = {0};
  EXPECT_THROW(k::rope_forward(x.data(), c.data(), s.data(), pos.data(), 1, 6, 2, 3), std::exception);
}

// ================================================================ positions per packed document
TEST(PositionEmbedding, ExplicitPositions) {
  const int B = 2, T = 5, T_max = 6, C = 70;  // C spans two channel blocks
  const std::vector<int32_t> pos = {0, 1, 2, 0, 1, 0, 0, 1, 2, 3};
  const VecF wpe = uniform(T_max * C, 231), x0 = uniform(B * T * C, 232);
  VecF out = x0;
  k::position_embedding_forward(out.data(), wpe.data(), pos.data(), B, T, C);
  for (int n = 0; n < B * T; n++)
    for (int c = 0; c < C; c++) ASSERT_EQ(out[n * C + c], x0[n * C + c] + wpe[pos[n] * C + c]);
  const VecF R = uniform(B * T * C, 233), dw0 = uniform(T_max * C, 234);
  VecF dw = dw0;
  k::position_embedding_backward(dw.data(), R.data(), pos.data(), B, T, C);
  VecD want(T_max * C, 0.0);
  for (int n = 0; n < B * T; n++)
    for (int c = 0; c < C; c++) want[pos[n] * C + c] += R[n * C + c];
  expect_close(added(dw, dw0), want, 1e-6, 1e-6, "dwpe at positions");
}

}  // namespace
