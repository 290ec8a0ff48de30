// What: correctness tests for the CPU reference kernels (kernels/cpu/kernels.h).
// How: every kernel's forward is compared with an independent naive implementation written
// here in double precision; every backward is checked against central finite differences of
// that double reference: with a random R, the scalar L = sum(out * R) has dL/dout = R, so the
// float kernel's gradient (called with dout = R) must match dL/dx computed by perturbing each
// input of the double reference by +-1e-4 (truncation error ~1e-9, far below fp32 noise).
// Gradient buffers are pre-filled with random values to check that backward kernels
// accumulate (+=). Sizes are tiny and deliberately odd (not multiples of the kernels' lane and
// block widths) so that tails are covered; the whole file runs in well under a second.
// Thread-count determinism is tested separately in kernels_determinism_test.cc.
// Cross-entropy, optimizers and reductions: kernels_loss_optim_test.cc; shared helpers and
// references: kernel_test_util.h.
#include <gtest/gtest.h>

#include "unit/kernel_test_util.h"

using namespace mt::kernel_test;

namespace {

// ================================================================ linear
class MatmulTest : public ::testing::TestWithParam<bool> {};  // param: with bias

TEST_P(MatmulTest, ForwardMatchesNaive) {
  const bool with_bias = GetParam();
  for (auto [N, C, OC] : {std::tuple{7, 13, 11}, std::tuple{33, 70, 45}, std::tuple{1, 1, 1}}) {
    const VecF inp = uniform(N * C, 1), w = uniform(OC * C, 2), bias = uniform(OC, 3);
    VecF out(N * OC, 123.0f);  // garbage: the forward must overwrite
    k::matmul_forward(out.data(), inp.data(), w.data(), with_bias ? bias.data() : nullptr, N, C, OC);
    const VecD bd = to_double(bias);
    const VecD want = matmul_ref(to_double(inp), to_double(w), with_bias ? &bd : nullptr, N, C, OC);
    expect_close(out, want, 1e-5, 1e-5, "matmul out N=" + std::to_string(N));
  }
}

TEST_P(MatmulTest, BackwardMatchesFiniteDifferences) {
  const bool with_bias = GetParam();
  const int N = 6, C = 9, OC = 5;
  const VecF inp = uniform(N * C, 11), w = uniform(OC * C, 12), bias = uniform(OC, 13);
  const VecF R = uniform(N * OC, 14);
  const VecF dinp0 = uniform(N * C, 15), dw0 = uniform(OC * C, 16), db0 = uniform(OC, 17);
  VecF dinp = dinp0, dw = dw0, db = db0;
  k::matmul_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, R.data(), inp.data(),
                     w.data(), N, C, OC);

  VecD xi = to_double(inp), xw = to_double(w), xb = to_double(bias);
  auto loss = [&] { return dot_all(matmul_ref(xi, xw, with_bias ? &xb : nullptr, N, C, OC), R); };
  expect_close(added(dinp, dinp0), fd_grad(xi, loss), kGradAtol, kGradRtol, "matmul dinp");
  expect_close(added(dw, dw0), fd_grad(xw, loss), kGradAtol, kGradRtol, "matmul dweight");
  if (with_bias) {
    expect_close(added(db, db0), fd_grad(xb, loss), kGradAtol, kGradRtol, "matmul dbias");
  } else {
    EXPECT_EQ(db, db0);  // null dbias: untouched
  }
}

INSTANTIATE_TEST_SUITE_P(Bias, MatmulTest, ::testing::Bool());

TEST(Matmul, BackwardNullGradientsSkipOnlyThemselves) {
  const int N = 4, C = 70, OC = 66;  // OC > 64: dbias spans two channel blocks
  const VecF inp = uniform(N * C, 21), w = uniform(OC * C, 22), dout = uniform(N * OC, 23);
  VecF dinp_all(N * C, 0.0f), dw_all(OC * C, 0.0f), db_all(OC, 0.0f);
  k::matmul_backward(dinp_all.data(), dw_all.data(), db_all.data(), dout.data(), inp.data(),
                     w.data(), N, C, OC);
  VecF dinp(N * C, 0.0f), dw(OC * C, 0.0f), db(OC, 0.0f);
  k::matmul_backward(dinp.data(), nullptr, nullptr, dout.data(), inp.data(), w.data(), N, C, OC);
  k::matmul_backward(nullptr, dw.data(), nullptr, dout.data(), inp.data(), w.data(), N, C, OC);
  k::matmul_backward(nullptr, nullptr, db.data(), dout.data(), inp.data(), w.data(), N, C, OC);
  EXPECT_EQ(dinp, dinp_all);
  EXPECT_EQ(dw, dw_all);
  EXPECT_EQ(db, db_all);
  // dbias is a plain column sum of dout.
  for (int o = 0; o < OC; o++) {
    double s = 0.0;
    for (int n = 0; n < N; n++) s += dout[n * OC + o];
    EXPECT_NEAR(db[o], s, 1e-6) << "o=" << o;
  }
}

// ================================================================ layernorm
TEST(LayerNorm, ForwardMatchesNaive) {
  for (auto [N, C] : {std::pair{5, 37}, std::pair{3, 70}, std::pair{2, 8}}) {
    VecF x = uniform(N * C, 31, -2.0f, 2.0f);
    // Row 0: large offset, small spread (needs the two-pass variance).
    for (int c = 0; c < C; c++) x[c] = 100.0f + 0.05f * x[c];
    const VecF w = uniform(C, 32, 0.5f, 1.5f), b = uniform(C, 33);
    VecF out(N * C, 9.0f), mean(N, 9.0f), rstd(N, 9.0f);
    k::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    VecD wm, wr;
    const VecD want = layernorm_ref(to_double(x), to_double(w), to_double(b), N, C, &wm, &wr);
    const std::string tag = " C=" + std::to_string(C);
    expect_close(out, want, 2e-4, 1e-4, "layernorm out" + tag);  // row 0 rstd ~ 35: fp32 noise x35
    expect_close(mean, wm, 1e-5, 1e-6, "layernorm mean" + tag);
    expect_close(rstd, wr, 1e-5, 1e-4, "layernorm rstd" + tag);
  }
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
  for (auto [N, C] : {std::pair{5, 37}, std::pair{3, 70}}) {  // C=70 spans two channel blocks
    const VecF x = uniform(N * C, 41, -2.0f, 2.0f), w = uniform(C, 42, 0.5f, 1.5f),
               b = uniform(C, 43), R = uniform(N * C, 44);
    VecF out(N * C), mean(N), rstd(N);
    k::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    const VecF dx0 = uniform(N * C, 45), dw0 = uniform(C, 46), db0 = uniform(C, 47);
    VecF dx = dx0, dw = dw0, db = db0;
    k::layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(),
                          mean.data(), rstd.data(), N, C);
    VecD xd = to_double(x), wd = to_double(w), bd = to_double(b);
    auto loss = [&] { return dot_all(layernorm_ref(xd, wd, bd, N, C), R); };
    const std::string tag = " C=" + std::to_string(C);
    expect_close(added(dx, dx0), fd_grad(xd, loss), kGradAtol, kGradRtol, "layernorm dinp" + tag);
    expect_close(added(dw, dw0), fd_grad(wd, loss), kGradAtol, kGradRtol, "layernorm dweight" + tag);
    expect_close(added(db, db0), fd_grad(bd, loss), kGradAtol, kGradRtol, "layernorm dbias" + tag);

    // Null gradients are skipped; the others are unchanged by the skip.
    VecF dx2 = dx0, dw2 = dw0;
    k::layernorm_backward(dx2.data(), nullptr, nullptr, R.data(), x.data(), w.data(), mean.data(),
                          rstd.data(), N, C);
    k::layernorm_backward(nullptr, dw2.data(), nullptr, R.data(), x.data(), w.data(), mean.data(),
                          rstd.data(), N, C);
    EXPECT_EQ(dx2, dx);
    EXPECT_EQ(dw2, dw);
  }
}

// ================================================================ GELU
TEST(Gelu, ForwardMatchesNaive) {
  VecF x = uniform(1000, 51, -6.0f, 6.0f);
  for (float v : {0.0f, 1.0f, -1.0f, 2.0f, -3.0f, -12.0f, 12.0f, -40.0f, 40.0f, 1e-20f}) x.push_back(v);
  VecF out(x.size());
  k::gelu_forward(out.data(), x.data(), static_cast<int64_t>(x.size()));
  VecD want(x.size());
  for (size_t i = 0; i < x.size(); i++) want[i] = gelu_ref(x[i]);
  expect_close(out, want, 1e-6, 2e-6, "gelu out");
  // Known values of the GPT-2 tanh approximation.
  EXPECT_NEAR(out[1001], 0.8411919906, 1e-6);   // gelu(1)
  EXPECT_NEAR(out[1002], -0.1588080094, 1e-6);  // gelu(-1)
  EXPECT_NEAR(out[1003], 1.9545976941, 1e-6);   // gelu(2)
  EXPECT_NEAR(out[1004], -0.0036373921, 1e-8);  // gelu(-3)
  EXPECT_EQ(out[1000], 0.0f);
  EXPECT_EQ(out[1006], 12.0f);
  EXPECT_EQ(out[1008], 40.0f);
  EXPECT_TRUE(std::isfinite(out[1007]) && std::fabs(out[1007]) < 1e-30f);
}

TEST(Gelu, BackwardMatchesFiniteDifferences) {
  VecF x = uniform(300, 61, -5.0f, 5.0f);
  for (float v : {0.0f, -12.0f, 12.0f, -40.0f, 40.0f}) x.push_back(v);
  const int64_t n = static_cast<int64_t>(x.size());
  const VecF R = uniform(n, 62), dx0 = uniform(n, 63);
  VecF dx = dx0;
  k::gelu_backward(dx.data(), x.data(), R.data(), n);
  VecD xd = to_double(x);
  // gelu is elementwise: finite differences of each element's own term are enough.
  VecD want(n);
  for (int64_t i = 0; i < n; i++) {
    const double e = 1e-4;
    want[i] = R[i] * (gelu_ref(xd[i] + e) - gelu_ref(xd[i] - e)) / (2 * e);
  }
  expect_close(added(dx, dx0), want, kGradAtol, kGradRtol, "gelu dinp");
  // Saturated tails: derivative exactly 0 (far left) and 1 (far right), never NaN.
  VecF tails = {-40.0f, 40.0f}, ones = {1.0f, 1.0f}, d2 = {0.0f, 0.0f};
  k::gelu_backward(d2.data(), tails.data(), ones.data(), 2);
  EXPECT_EQ(d2[0], 0.0f);
  EXPECT_EQ(d2[1], 1.0f);
}

// ================================================================ residual
TEST(Residual, ForwardAndBackward) {
  const int64_t n = 1001;
  const VecF a = uniform(n, 71), b = uniform(n, 72), R = uniform(n, 73);
  VecF out(n);
  k::residual_forward(out.data(), a.data(), b.data(), n);
  for (int64_t i = 0; i < n; i++) ASSERT_EQ(out[i], a[i] + b[i]) << i;

  const VecF da0 = uniform(n, 74), db0 = uniform(n, 75);
  VecF da = da0, db = db0;
  k::residual_backward(da.data(), db.data(), R.data(), n);
  // L = sum((a + b) * R): dL/da = dL/db = R, exactly what is added.
  for (int64_t i = 0; i < n; i++) {
    ASSERT_EQ(da[i], da0[i] + R[i]) << i;
    ASSERT_EQ(db[i], db0[i] + R[i]) << i;
  }
  // dout aliasing da (the residual stream's gradient flowing through): da doubles, db += dout.
  VecF d = R, db2 = db0;
  k::residual_backward(d.data(), db2.data(), d.data(), n);
  for (int64_t i = 0; i < n; i++) {
    ASSERT_EQ(d[i], R[i] + R[i]) << i;
    ASSERT_EQ(db2[i], db0[i] + R[i]) << i;
  }
  VecF db3 = db0;
  k::residual_backward(nullptr, db3.data(), R.data(), n);
  EXPECT_EQ(db3, db);
}

// ================================================================ attention
struct AttnCase {
  int B, T, C, NH;
  bool docs;
  int NKV = 0;  // kv heads (0: NH, multi-head)
  int nkv() const { return NKV == 0 ? NH : NKV; }
  int width() const { return C + 2 * nkv() * (C / NH); }  // qkv row
};

class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

std::vector<int32_t> make_docs(int B, int T) {
  // Batch 0: documents [0,3) [3,4) [4,T); batch 1: one document then a new one at T/2;
  // further batches: ids alternating every position (only the diagonal survives).
  std::vector<int32_t> d(static_cast<size_t>(B) * T);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      int32_t id;
      if (b == 0) id = t < 3 ? 7 : (t < 4 ? 8 : 9);
      else if (b == 1) id = t < T / 2 ? 1 : 2;
      else id = t % 2;
      d[b * T + t] = id;
    }
  return d;
}

TEST_P(AttentionTest, ForwardMatchesNaive) {
  const auto [B, T, C, NH, docs, NKV0] = GetParam();
  const int NKV = GetParam().nkv();
  const VecF qkv = uniform(static_cast<size_t>(B) * T * GetParam().width(), 81, -1.5f, 1.5f);
  const std::vector<int32_t> doc = make_docs(B, T);
  const int32_t* dp = docs ? doc.data() : nullptr;
  VecF out(static_cast<size_t>(B) * T * C, 5.0f), att(static_cast<size_t>(B) * NH * T * T, 5.0f);
  k::attention_forward(out.data(), att.data(), qkv.data(), dp, B, T, C, NH, NKV);
  VecD watt;
  const VecD want = attention_ref(to_double(qkv), dp, B, T, C, NH, &watt, NKV);
  expect_close(out, want, 1e-5, 1e-5, "attention out");
  expect_close(att, watt, 1e-6, 1e-5, "attention att");
  // Structure: rows sum to 1; above the diagonal and masked entries exactly 0.
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++) {
        const float* row = &att[((b * NH + h) * T + t) * T];
        double sum = 0.0;
        for (int s = 0; s < T; s++) {
          sum += row[s];
          const bool allowed = s <= t && (!dp || dp[b * T + s] == dp[b * T + t]);
          if (!allowed) ASSERT_EQ(row[s], 0.0f) << "b=" << b << " h=" << h << " t=" << t << " s=" << s;
          else ASSERT_GT(row[s], 0.0f);
        }
        ASSERT_NEAR(sum, 1.0, 1e-6);
      }
}

TEST_P(AttentionTest, BackwardMatchesFiniteDifferences) {
  const auto [B, T, C, NH, docs, NKV0] = GetParam();
  const int NKV = GetParam().nkv();
  const size_t nqkv = static_cast<size_t>(B) * T * GetParam().width();
  const VecF qkv = uniform(nqkv, 91, -1.5f, 1.5f);
  const std::vector<int32_t> doc = make_docs(B, T);
  const int32_t* dp = docs ? doc.data() : nullptr;
  VecF out(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  k::attention_forward(out.data(), att.data(), qkv.data(), dp, B, T, C, NH, NKV);
  const VecF R = uniform(out.size(), 92);
  const VecF dqkv0 = uniform(nqkv, 93);
  VecF dqkv = dqkv0;
  k::attention_backward(dqkv.data(), R.data(), qkv.data(), att.data(), B, T, C, NH, NKV);
  VecD xd = to_double(qkv);
  auto loss = [&] { return dot_all(attention_ref(xd, dp, B, T, C, NH, nullptr, NKV), R); };
  expect_close(added(dqkv, dqkv0), fd_grad(xd, loss), kGradAtol, kGradRtol, "attention dqkv");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(AttnCase{2, 7, 12, 3, false},   // HS = 4: scalar tails only
                      AttnCase{2, 7, 12, 3, true},
                      AttnCase{1, 9, 40, 2, false},   // HS = 20: one 16-lane chunk + tail
                      AttnCase{3, 8, 40, 2, true},    // batch 2: alternating documents
                      AttnCase{1, 1, 8, 2, false},    // T = 1: att = 1, out = v
                      AttnCase{2, 7, 24, 6, false, 2},  // grouped: 3 query heads per kv head
                      AttnCase{3, 8, 40, 2, true, 1},   // multi-query, packed documents
                      AttnCase{1, 9, 64, 4, true, 2})); // HS = 16, 2 per group

// ================================================================ embeddings
TEST(TokenEmbedding, ForwardOnASlice) {
  const int N = 9, C = 5, v_start = 4, v_count = 6;  // owns global ids [4, 10)
  const std::vector<int32_t> tokens = {4, 9, 3, 10, 0, 7, 7, 15, 5};
  const VecF wte = uniform(v_count * C, 101);
  VecF out(N * C, 3.0f);
  k::token_embedding_forward(out.data(), tokens.data(), wte.data(), N, C, v_start, v_count);
  for (int n = 0; n < N; n++) {
    const int r = tokens[n] - v_start;
    const bool owned = r >= 0 && r < v_count;
    for (int c = 0; c < C; c++)
      ASSERT_EQ(out[n * C + c], owned ? wte[r * C + c] : 0.0f) << "n=" << n << " c=" << c;
  }
}

TEST(TokenEmbedding, BackwardMatchesFiniteDifferences) {
  // C = 70 spans two channel blocks; repeated tokens accumulate; some tokens are not owned.
  for (auto [v_start, v_count] : {std::pair{0, 12}, std::pair{4, 6}}) {
    const int N = 11, C = 70;
    const std::vector<int32_t> tokens = {4, 9, 3, 10, 0, 7, 7, 11, 5, 7, 4};
    const VecF wte = uniform(v_count * C, 111), R = uniform(N * C, 112), dw0 = uniform(v_count * C, 113);
    VecF dw = dw0;
    k::token_embedding_backward(dw.data(), R.data(), tokens.data(), N, C, v_start, v_count);
    VecD wd = to_double(wte);
    auto loss = [&] {
      double L = 0.0;
      for (int n = 0; n < N; n++) {
        const int r = tokens[n] - v_start;
        if (r < 0 || r >= v_count) continue;
        for (int c = 0; c < C; c++) L += wd[r * C + c] * R[n * C + c];
      }
      return L;
    };
    expect_close(added(dw, dw0), fd_grad(wd, loss), kGradAtol, kGradRtol,
                 "token dwte v_start=" + std::to_string(v_start));
  }
}

TEST(PositionEmbedding, ForwardAndBackward) {
  const int B = 3, T = 5, T_max = 8, C = 7;
  const VecF wpe = uniform(T_max * C, 121), x0 = uniform(B * T * C, 122);
  VecF out = x0;
  k::position_embedding_forward(out.data(), wpe.data(), nullptr, B, T, C);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++) {
        const int i = (b * T + t) * C + c;
        ASSERT_EQ(out[i], x0[i] + wpe[t * C + c]);
      }
  const VecF R = uniform(B * T * C, 123), dwpe0 = uniform(T * C, 124);
  VecF dwpe = dwpe0;
  k::position_embedding_backward(dwpe.data(), R.data(), nullptr, B, T, C);
  VecD wd = to_double(VecF(wpe.begin(), wpe.begin() + T * C));
  auto loss = [&] {
    double L = 0.0;
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) L += (x0[(b * T + t) * C + c] + wd[t * C + c]) * R[(b * T + t) * C + c];
    return L;
  };
  expect_close(added(dwpe, dwpe0), fd_grad(wd, loss), kGradAtol, kGradRtol, "dwpe");
}

}  // namespace
