// What: correctness tests for the CPU reference kernels of the loss and the update
// (kernels/cpu/kernels.h): the vocab-sliced cross-entropy (with padding, split into slices as
// the tensor-parallel all-reduces combine them), AdamW and SGD against hand-computed steps and
// a double reference, the sum of squares and the in-place scale. The method is that of
// kernels_test.cc (double references, central finite differences, odd sizes).
#include <gtest/gtest.h>

#include "unit/kernel_test_util.h"

using namespace mt::kernel_test;

namespace {

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
