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
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace k = mt::kernels::cpu;

namespace {

using VecF = std::vector<float>;
using VecD = std::vector<double>;

// ---------------------------------------------------------------- helpers
VecF uniform(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  VecF v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

VecD to_double(const VecF& v) { return VecD(v.begin(), v.end()); }

// Element-wise |got - want| <= atol + rtol * |want|; reports the first few offenders.
void expect_close(const VecF& got, const VecD& want, double atol, double rtol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); i++) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tol = atol + rtol * std::fabs(want[i]);
    worst = std::max(worst, err / tol);
    if (!(err <= tol)) {  // also catches NaN
      if (bad < 5) {
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i]
                      << " (|err| " << err << " > tol " << tol << ")";
      }
      bad++;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size()
                    << " elements out of tolerance (worst err/tol " << worst << ")";
}

// after - before, i.e. what a backward kernel added to a pre-filled gradient buffer.
VecF added(const VecF& after, const VecF& before) {
  VecF d(after.size());
  for (size_t i = 0; i < d.size(); i++) d[i] = after[i] - before[i];
  return d;
}

// Central finite differences of loss() with respect to every element of x (perturbed in place).
VecD fd_grad(VecD& x, const std::function<double()>& loss, double eps = 1e-4) {
  VecD g(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    const double old = x[i];
    x[i] = old + eps;
    const double lp = loss();
    x[i] = old - eps;
    const double lm = loss();
    x[i] = old;
    g[i] = (lp - lm) / (2 * eps);
  }
  return g;
}

double dot_all(const VecD& a, const VecF& r) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * r[i];
  return s;
}

// Gradient tolerances: float kernel vs double finite differences, values of order 1.
constexpr double kGradAtol = 5e-5;
constexpr double kGradRtol = 5e-4;

// ---------------------------------------------------------------- double references
VecD matmul_ref(const VecD& inp, const VecD& w, const VecD* bias, int N, int C, int OC) {
  VecD out(static_cast<size_t>(N) * OC);
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      double s = bias ? (*bias)[o] : 0.0;
      for (int c = 0; c < C; c++) s += inp[n * C + c] * w[o * C + c];
      out[n * OC + o] = s;
    }
  return out;
}

VecD layernorm_ref(const VecD& x, const VecD& w, const VecD& b, int N, int C, VecD* mean = nullptr,
                   VecD* rstd = nullptr) {
  VecD out(x.size());
  if (mean) mean->assign(N, 0.0);
  if (rstd) rstd->assign(N, 0.0);
  for (int n = 0; n < N; n++) {
    double m = 0.0;
    for (int c = 0; c < C; c++) m += x[n * C + c];
    m /= C;
    double var = 0.0;
    for (int c = 0; c < C; c++) var += (x[n * C + c] - m) * (x[n * C + c] - m);
    var /= C;
    const double rs = 1.0 / std::sqrt(var + 1e-5);
    for (int c = 0; c < C; c++) out[n * C + c] = (x[n * C + c] - m) * rs * w[c] + b[c];
    if (mean) (*mean)[n] = m;
    if (rstd) (*rstd)[n] = rs;
  }
  return out;
}

double gelu_ref(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

// Causal attention in double: out (B,T,C), att (B,NH,T,T).
VecD attention_ref(const VecD& qkv, const int32_t* doc, int B, int T, int C, int NH,
                   VecD* att_out = nullptr) {
  const int HS = C / NH;
  VecD out(static_cast<size_t>(B) * T * C, 0.0);
  if (att_out) att_out->assign(static_cast<size_t>(B) * NH * T * T, 0.0);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++) {
        const double* q = &qkv[(b * T + t) * 3 * C + h * HS];
        std::vector<double> score(T, 0.0);
        std::vector<bool> allowed(T, false);
        double mx = -std::numeric_limits<double>::infinity();
        for (int s = 0; s <= t; s++) {
          allowed[s] = doc == nullptr || doc[b * T + s] == doc[b * T + t];
          if (!allowed[s]) continue;
          const double* kk = &qkv[(b * T + s) * 3 * C + C + h * HS];
          double d = 0.0;
          for (int i = 0; i < HS; i++) d += q[i] * kk[i];
          score[s] = d / std::sqrt(static_cast<double>(HS));
          mx = std::max(mx, score[s]);
        }
        double sum = 0.0;
        for (int s = 0; s <= t; s++)
          if (allowed[s]) sum += std::exp(score[s] - mx);
        for (int s = 0; s <= t; s++) {
          if (!allowed[s]) continue;
          const double a = std::exp(score[s] - mx) / sum;
          if (att_out) (*att_out)[((b * NH + h) * T + t) * T + s] = a;
          const double* v = &qkv[(b * T + s) * 3 * C + 2 * C + h * HS];
          for (int i = 0; i < HS; i++) out[(b * T + t) * C + h * HS + i] += a * v[i];
        }
      }
  return out;
}

// Per-token cross-entropy over the valid columns of (N, Vl) logits, in double.
VecD xent_ref(const VecD& logits, const std::vector<int32_t>& targets, int N, int Vl, int v_valid) {
  VecD losses(N);
  for (int n = 0; n < N; n++) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int v = 0; v < v_valid; v++) mx = std::max(mx, logits[n * Vl + v]);
    double sum = 0.0;
    for (int v = 0; v < v_valid; v++) sum += std::exp(logits[n * Vl + v] - mx);
    losses[n] = std::log(sum) + mx - logits[n * Vl + targets[n]];
  }
  return losses;
}

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
  const auto [B, T, C, NH, docs] = GetParam();
  const VecF qkv = uniform(static_cast<size_t>(B) * T * 3 * C, 81, -1.5f, 1.5f);
  const std::vector<int32_t> doc = make_docs(B, T);
  const int32_t* dp = docs ? doc.data() : nullptr;
  VecF out(static_cast<size_t>(B) * T * C, 5.0f), att(static_cast<size_t>(B) * NH * T * T, 5.0f);
  k::attention_forward(out.data(), att.data(), qkv.data(), dp, B, T, C, NH);
  VecD watt;
  const VecD want = attention_ref(to_double(qkv), dp, B, T, C, NH, &watt);
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
  const auto [B, T, C, NH, docs] = GetParam();
  const size_t nqkv = static_cast<size_t>(B) * T * 3 * C;
  const VecF qkv = uniform(nqkv, 91, -1.5f, 1.5f);
  const std::vector<int32_t> doc = make_docs(B, T);
  const int32_t* dp = docs ? doc.data() : nullptr;
  VecF out(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  k::attention_forward(out.data(), att.data(), qkv.data(), dp, B, T, C, NH);
  const VecF R = uniform(out.size(), 92);
  const VecF dqkv0 = uniform(nqkv, 93);
  VecF dqkv = dqkv0;
  k::attention_backward(dqkv.data(), R.data(), qkv.data(), att.data(), B, T, C, NH);
  VecD xd = to_double(qkv);
  auto loss = [&] { return dot_all(attention_ref(xd, dp, B, T, C, NH), R); };
  expect_close(added(dqkv, dqkv0), fd_grad(xd, loss), kGradAtol, kGradRtol, "attention dqkv");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(AttnCase{2, 7, 12, 3, false},   // HS = 4: scalar tails only
                      AttnCase{2, 7, 12, 3, true},
                      AttnCase{1, 9, 40, 2, false},   // HS = 20: one 16-lane chunk + tail
                      AttnCase{3, 8, 40, 2, true},    // batch 2: alternating documents
                      AttnCase{1, 1, 8, 2, false}));  // T = 1: att = 1, out = v

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
  k::position_embedding_forward(out.data(), wpe.data(), B, T, C);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++) {
        const int i = (b * T + t) * C + c;
        ASSERT_EQ(out[i], x0[i] + wpe[t * C + c]);
      }
  const VecF R = uniform(B * T * C, 123), dwpe0 = uniform(T * C, 124);
  VecF dwpe = dwpe0;
  k::position_embedding_backward(dwpe.data(), R.data(), B, T, C);
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

// ================================================================ cross-entropy
// N tokens, V real vocabulary entries padded to Vp columns; padding logits are set huge so
// that any leak of a padding column into the max or the sum shows in the loss.
struct XentData {
  int N = 6, V = 10, Vp = 12;
  VecF logits;
  std::vector<int32_t> targets;
  VecF dloss;
  XentData() {
    logits = uniform(N * Vp, 131, -4.0f, 4.0f);
    for (int n = 0; n < N; n++)
      for (int v = V; v < Vp; v++) logits[n * Vp + v] = 1e4f;
    // Includes the first and last real column, and 4, 6 and 8: the first column of a slice in
    // the 2-, 3- and 6-way splits below (off-by-one ownership checks would misplace them).
    targets = {0, 9, 3, 6, 4, 8};
    dloss = uniform(N, 132, 0.1f, 1.0f);
  }
};

TEST(CrossEntropy, FullVocabularyWithPadding) {
  XentData d;
  const int N = d.N, V = d.V, Vp = d.Vp;
  VecF losses(N), rowmax(N), sumexp(N);
  k::softmax_cross_entropy_forward(losses.data(), rowmax.data(), sumexp.data(), d.logits.data(),
                                   d.targets.data(), N, Vp, V);
  VecD ld = to_double(d.logits);
  expect_close(losses, xent_ref(ld, d.targets, N, Vp, V), 1e-5, 1e-5, "xent losses");
  for (int n = 0; n < N; n++) {
    double mx = -1e300, s = 0.0;
    for (int v = 0; v < V; v++) mx = std::max(mx, ld[n * Vp + v]);
    for (int v = 0; v < V; v++) s += std::exp(ld[n * Vp + v] - mx);
    EXPECT_EQ(rowmax[n], static_cast<float>(mx)) << n;
    EXPECT_NEAR(sumexp[n], s, 1e-5 * s) << n;
  }
  // The pieces on their own agree with the convenience function.
  VecF tl(N), losses2(N);
  k::xent_target_logit(tl.data(), d.logits.data(), d.targets.data(), N, Vp, 0, V);
  for (int n = 0; n < N; n++) EXPECT_EQ(tl[n], d.logits[n * Vp + d.targets[n]]);
  k::xent_loss(losses2.data(), rowmax.data(), sumexp.data(), tl.data(), N);
  EXPECT_EQ(losses2, losses);

  // Backward: L = sum_n dloss[n] * loss_n; overwrites (pre-filled with garbage).
  VecF dlogits(N * Vp, 77.0f);
  k::xent_backward(dlogits.data(), d.logits.data(), rowmax.data(), sumexp.data(), d.targets.data(),
                   d.dloss.data(), N, Vp, 0, V);
  auto loss = [&] {
    const VecD l = xent_ref(ld, d.targets, N, Vp, V);
    double L = 0.0;
    for (int n = 0; n < N; n++) L += d.dloss[n] * l[n];
    return L;
  };
  const VecD want = fd_grad(ld, loss);  // padding columns: exactly 0 in the reference too
  expect_close(dlogits, want, kGradAtol, kGradRtol, "xent dlogits");
  for (int n = 0; n < N; n++) {
    double row = 0.0;
    for (int v = 0; v < Vp; v++) row += dlogits[n * Vp + v];
    EXPECT_NEAR(row, 0.0, 1e-6) << "softmax - onehot sums to 0, n=" << n;
    for (int v = V; v < Vp; v++) EXPECT_EQ(dlogits[n * Vp + v], 0.0f) << "padding n=" << n;
  }
  // A uniform row: loss log(V) exactly as theory says.
  VecF flat(Vp, 0.5f), l1(1), m1(1), s1(1);
  const int32_t t1 = 2;
  k::softmax_cross_entropy_forward(l1.data(), m1.data(), s1.data(), flat.data(), &t1, 1, Vp, V);
  EXPECT_NEAR(l1[0], std::log(10.0), 1e-6);
}

// Vocab-parallel simulation: the padded vocabulary split into two slices of Vl = Vp / 2
// columns each (slice 1 holds the padding), combined as the all-reduces would (max, sum, sum).
void run_sliced(const XentData& d, int nslices, VecF& losses, VecF& dlogits_full) {
  const int N = d.N, Vp = d.Vp, Vl = Vp / nslices;
  std::vector<VecF> slice(nslices, VecF(N * Vl));
  std::vector<int> v_valid(nslices);
  for (int r = 0; r < nslices; r++) {
    v_valid[r] = std::clamp(d.V - r * Vl, 0, Vl);
    for (int n = 0; n < N; n++)
      for (int j = 0; j < Vl; j++) slice[r][n * Vl + j] = d.logits[n * Vp + r * Vl + j];
  }
  VecF gmax(N, -std::numeric_limits<float>::infinity()), gsum(N, 0.0f), gtl(N, 0.0f), tmp(N);
  for (int r = 0; r < nslices; r++) {  // all-reduce(max)
    k::xent_row_max(tmp.data(), slice[r].data(), N, Vl, v_valid[r]);
    for (int n = 0; n < N; n++) gmax[n] = std::max(gmax[n], tmp[n]);
  }
  for (int r = 0; r < nslices; r++) {  // all-reduce(sum)
    k::xent_sum_exp(tmp.data(), slice[r].data(), gmax.data(), N, Vl, v_valid[r]);
    for (int n = 0; n < N; n++) gsum[n] += tmp[n];
    k::xent_target_logit(tmp.data(), slice[r].data(), d.targets.data(), N, Vl, r * Vl, v_valid[r]);
    for (int n = 0; n < N; n++) gtl[n] += tmp[n];
  }
  losses.assign(N, 0.0f);
  k::xent_loss(losses.data(), gmax.data(), gsum.data(), gtl.data(), N);
  dlogits_full.assign(N * Vp, 99.0f);
  for (int r = 0; r < nslices; r++) {
    VecF dl(N * Vl, 55.0f);
    k::xent_backward(dl.data(), slice[r].data(), gmax.data(), gsum.data(), d.targets.data(),
                     d.dloss.data(), N, Vl, r * Vl, v_valid[r]);
    for (int n = 0; n < N; n++)
      for (int j = 0; j < Vl; j++) dlogits_full[n * Vp + r * Vl + j] = dl[n * Vl + j];
  }
}

TEST(CrossEntropy, VocabSlicesMatchSingleSlice) {
  XentData d;
  const int N = d.N, Vp = d.Vp;
  VecF losses(N), rowmax(N), sumexp(N), dlogits(N * Vp);
  k::softmax_cross_entropy_forward(losses.data(), rowmax.data(), sumexp.data(), d.logits.data(),
                                   d.targets.data(), N, Vp, d.V);
  k::xent_backward(dlogits.data(), d.logits.data(), rowmax.data(), sumexp.data(), d.targets.data(),
                   d.dloss.data(), N, Vp, 0, d.V);
  // 2 slices of 6 (second: 4 real + 2 padding); 3 slices of 4 (third: 2 real + 2 padding);
  // 6 slices of 2 (the last one holds only padding: v_valid = 0, its max is -inf).
  for (int nslices : {2, 3, 6}) {
    VecF l2, dl2;
    run_sliced(d, nslices, l2, dl2);
    const std::string tag = " slices=" + std::to_string(nslices);
    expect_close(l2, to_double(losses), 1e-6, 1e-6, "sliced losses" + tag);
    expect_close(dl2, to_double(dlogits), 1e-6, 1e-5, "sliced dlogits" + tag);
  }
  VecF empty_max(N);
  k::xent_row_max(empty_max.data(), d.logits.data(), N, Vp, 0);
  for (int n = 0; n < N; n++) EXPECT_EQ(empty_max[n], -std::numeric_limits<float>::infinity());
}

TEST(CrossEntropy, NullDlossMeansUnitWeights) {
  XentData d;
  const int N = d.N, Vp = d.Vp;
  VecF losses(N), rowmax(N), sumexp(N), a(N * Vp), b(N * Vp);
  k::softmax_cross_entropy_forward(losses.data(), rowmax.data(), sumexp.data(), d.logits.data(),
                                   d.targets.data(), N, Vp, d.V);
  const VecF ones(N, 1.0f);
  k::xent_backward(a.data(), d.logits.data(), rowmax.data(), sumexp.data(), d.targets.data(),
                   ones.data(), N, Vp, 0, d.V);
  k::xent_backward(b.data(), d.logits.data(), rowmax.data(), sumexp.data(), d.targets.data(),
                   nullptr, N, Vp, 0, d.V);
  EXPECT_EQ(a, b);
}

// ================================================================ optimizers
TEST(AdamW, HandComputedSteps) {
  // One parameter, two steps, worked out by hand (lr 0.1, betas 0.9/0.999, eps 1e-8, wd 0.01):
  // step 1, g = 0.5:   m = 0.05, v = 0.00025, mhat = 0.5, vhat = 0.25
  //                    p = 1 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.01 * 1) = 0.899
  // step 2, g = -0.25: m = 0.02, v = 0.00031225, mhat = 0.02 / 0.19, vhat = 0.00031225 / 0.001999
  //                    p = 0.8714672987
  float p = 1.0f, m = 0.0f, v = 0.0f;
  float g = 0.5f;
  k::adamw_update(&p, &g, &m, &v, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
  EXPECT_NEAR(m, 0.05f, 1e-7);  // fp32: 1 - 0.9f = 0.100000024
  EXPECT_NEAR(v, 0.00025f, 1e-8);
  EXPECT_NEAR(p, 0.899f, 1e-6);
  g = -0.25f;
  k::adamw_update(&p, &g, &m, &v, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 2);
  EXPECT_NEAR(m, 0.02f, 1e-7);
  EXPECT_NEAR(v, 0.00031225f, 1e-8);
  EXPECT_NEAR(p, 0.8714672987f, 2e-6);
}

TEST(AdamW, ManyElementsMatchDoubleReference) {
  const int64_t n = 40000;  // above the parallel threshold
  VecF p = uniform(n, 141), m(n, 0.0f), v(n, 0.0f);
  VecD pd = to_double(p), md(n, 0.0), vd(n, 0.0);
  const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  for (int t = 1; t <= 3; t++) {
    const VecF g = uniform(n, 150 + t);
    k::adamw_update(p.data(), g.data(), m.data(), v.data(), n, static_cast<float>(lr),
                    static_cast<float>(b1), static_cast<float>(b2), static_cast<float>(eps),
                    static_cast<float>(wd), t);
    for (int64_t i = 0; i < n; i++) {
      md[i] = b1 * md[i] + (1 - b1) * g[i];
      vd[i] = b2 * vd[i] + (1 - b2) * g[i] * g[i];
      const double mh = md[i] / (1 - std::pow(b1, t)), vh = vd[i] / (1 - std::pow(b2, t));
      pd[i] -= lr * (mh / (std::sqrt(vh) + eps) + wd * pd[i]);
    }
  }
  expect_close(p, pd, 1e-6, 1e-5, "adamw params");
  expect_close(m, md, 1e-7, 1e-5, "adamw m");
  expect_close(v, vd, 1e-9, 1e-5, "adamw v");
}

TEST(Sgd, HandComputedSteps) {
  // lr 0.1, momentum 0.9, wd 0.01, p = 2:
  // step 1, g = 1:  buf = 0 + (1 + 0.02) = 1.02;            p = 2 - 0.102 = 1.898
  // step 2, g = -1: buf = 0.918 + (-1 + 0.01898) = -0.06302; p = 1.898 + 0.006302 = 1.904302
  float p = 2.0f, buf = 0.0f, g = 1.0f;
  k::sgd_update(&p, &g, &buf, 1, 0.1f, 0.9f, 0.01f);
  EXPECT_NEAR(buf, 1.02f, 1e-7);
  EXPECT_NEAR(p, 1.898f, 1e-6);
  g = -1.0f;
  k::sgd_update(&p, &g, &buf, 1, 0.1f, 0.9f, 0.01f);
  EXPECT_NEAR(buf, -0.06302f, 1e-6);
  EXPECT_NEAR(p, 1.904302f, 1e-6);
  // Plain SGD (momentum 0, wd 0) on many elements: p -= lr * g.
  const int64_t n = 40000;
  VecF pv = uniform(n, 161), gv = uniform(n, 162), bv(n, 0.0f);
  const VecF p0 = pv;
  k::sgd_update(pv.data(), gv.data(), bv.data(), n, 0.5f, 0.0f, 0.0f);
  for (int64_t i = 0; i < n; i++) ASSERT_EQ(pv[i], p0[i] - 0.5f * gv[i]) << i;
}

// ================================================================ reductions
TEST(SumSquares, MatchesDoubleLoop) {
  for (int64_t n : {0, 1, 7, 4095, 4096, 4097, 12345, 100003}) {
    const VecF x = uniform(static_cast<size_t>(n), 171, -3.0f, 3.0f);
    double want = 0.0;
    for (float v : x) want += static_cast<double>(v) * v;
    const double got = k::sum_squares(x.data(), n);
    EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, want)) << "n=" << n;
  }
  const VecF three = {1.0f, -2.0f, 2.0f};
  EXPECT_EQ(k::sum_squares(three.data(), 3), 9.0);
}

TEST(ScaleInplace, Scales) {
  const int64_t n = 50000;
  const VecF x0 = uniform(n, 181);
  VecF x = x0;
  k::scale_inplace(x.data(), n, 0.25f);
  for (int64_t i = 0; i < n; i++) ASSERT_EQ(x[i], x0[i] * 0.25f) << i;
}

}  // namespace
