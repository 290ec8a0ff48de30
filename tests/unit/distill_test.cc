// What: the knowledge-distillation loss pieces (kernels/cpu/distill.cc): the mixed loss
// (1 - alpha) CE + alpha T^2 KL(softmax(t/T) || softmax(s/T)) against a direct double
// computation, its gradient against central finite differences of that double function, and
// the vocabulary split over 2 and 3 slices (as tp ranks combine them with all-reduces) equal
// to one slice. Padding columns carry huge logits: a leak into a max or a sum shows.
#include <gtest/gtest.h>

#include "unit/kernel_test_util.h"

using namespace mt::kernel_test;

namespace {

struct KdData {
  int N = 5, V = 12, Vp = 14;
  VecF s, t, dloss;
  std::vector<int32_t> targets{0, 11, 4, 6, 8};
  KdData() {
    s = uniform(N * Vp, 401, -3.0f, 3.0f);
    t = uniform(N * Vp, 402, -5.0f, 5.0f);
    for (int n = 0; n < N; n++)
      for (int v = V; v < Vp; v++) s[n * Vp + v] = t[n * Vp + v] = 1e4f;
    dloss = uniform(N, 403, 0.1f, 1.0f);
  }
};

// Per-token loss of row n in double, from the logits alone.
double kd_ref(const VecD& s, const VecF& t, int n, int y, int Vp, int V, double alpha, double T) {
  auto lse = [&](auto get, double scale) {
    double m = -1e300;
    for (int v = 0; v < V; v++) m = std::max(m, get(v) * scale);
    double z = 0;
    for (int v = 0; v < V; v++) z += std::exp(get(v) * scale - m);
    return m + std::log(z);
  };
  auto sv = [&](int v) { return s[static_cast<size_t>(n * Vp + v)]; };
  auto tv = [&](int v) { return static_cast<double>(t[static_cast<size_t>(n * Vp + v)]); };
  const double ce = lse(sv, 1.0) - sv(y);
  const double ls = lse(sv, 1.0 / T), lt = lse(tv, 1.0 / T);
  double kl = 0;
  for (int v = 0; v < V; v++) {
    const double p = std::exp(tv(v) / T - lt);
    kl += p * ((tv(v) / T - lt) - (sv(v) / T - ls));
  }
  return (1 - alpha) * ce + alpha * T * T * kl;
}

// The pieces over `slices` equal vocabulary slices of the padded Vp columns, combined as the
// tp all-reduces would (max, then sums); returns losses and fills dlogits (N, Vp).
VecF kd_sliced(const KdData& d, int slices, float alpha, float T, VecF* dlogits) {
  const int N = d.N, Vl = d.Vp / slices;
  std::vector<VecF> sl(slices), tl(slices);
  for (int r = 0; r < slices; r++) {
    sl[r].resize(static_cast<size_t>(N * Vl));
    tl[r].resize(static_cast<size_t>(N * Vl));
    for (int n = 0; n < N; n++)
      for (int v = 0; v < Vl; v++) {
        sl[r][n * Vl + v] = d.s[n * d.Vp + r * Vl + v];
        tl[r][n * Vl + v] = d.t[n * d.Vp + r * Vl + v];
      }
  }
  auto valid = [&](int r) { return std::max(0, std::min(Vl, d.V - r * Vl)); };
  VecF smax(N, -1e30f), tmax(N, -1e30f), sumexp(N, 0), tgt(N, 0), sums(3 * N, 0), part(3 * N), one(N);
  for (int r = 0; r < slices; r++) {
    k::xent_row_max(one.data(), sl[r].data(), N, Vl, valid(r));
    for (int n = 0; n < N; n++) smax[n] = std::max(smax[n], one[n]);
    k::xent_row_max(one.data(), tl[r].data(), N, Vl, valid(r));
    for (int n = 0; n < N; n++) tmax[n] = std::max(tmax[n], one[n]);
  }
  for (int r = 0; r < slices; r++) {
    k::xent_sum_exp(one.data(), sl[r].data(), smax.data(), N, Vl, valid(r));
    for (int n = 0; n < N; n++) sumexp[n] += one[n];
    k::xent_target_logit(one.data(), sl[r].data(), d.targets.data(), N, Vl, r * Vl, valid(r));
    for (int n = 0; n < N; n++) tgt[n] += one[n];
    k::kd_sums(part.data(), sl[r].data(), tl[r].data(), smax.data(), tmax.data(), N, Vl, valid(r), T);
    for (int i = 0; i < 3 * N; i++) sums[i] += part[i];
  }
  VecF ce(N), losses(N), kl(N);
  k::xent_loss(ce.data(), smax.data(), sumexp.data(), tgt.data(), N);
  k::kd_loss(losses.data(), kl.data(), ce.data(), sums.data(), smax.data(), tmax.data(), N, alpha, T);
  dlogits->assign(static_cast<size_t>(N * d.Vp), -7.0f);
  for (int r = 0; r < slices; r++) {
    VecF dl(static_cast<size_t>(N * Vl));
    k::xent_backward(dl.data(), sl[r].data(), smax.data(), sumexp.data(), d.targets.data(), d.dloss.data(), N, Vl,
                     r * Vl, valid(r));
    k::kd_backward(dl.data(), sl[r].data(), tl[r].data(), smax.data(), tmax.data(), sums.data(), d.dloss.data(), N,
                   Vl, valid(r), alpha, T);
    for (int n = 0; n < N; n++)
      for (int v = 0; v < Vl; v++) (*dlogits)[n * d.Vp + r * Vl + v] = dl[n * Vl + v];
  }
  return losses;
}

TEST(Distill, LossMatchesDirectDoubleComputation) {
  KdData d;
  for (const auto& [alpha, T] : std::vector<std::pair<float, float>>{{0.5f, 2.0f}, {1.0f, 1.0f}, {0.3f, 4.0f}}) {
    VecF dl;
    const VecF losses = kd_sliced(d, 1, alpha, T, &dl);
    const VecD s = to_double(d.s);
    VecD want(d.N);
    for (int n = 0; n < d.N; n++) want[n] = kd_ref(s, d.t, n, d.targets[n], d.Vp, d.V, alpha, T);
    expect_close(losses, want, 1e-5, 1e-5, "kd losses");
  }
}

TEST(Distill, AlphaZeroIsCrossEntropy) {
  KdData d;
  VecF dl;
  const VecF losses = kd_sliced(d, 1, 0.0f, 2.0f, &dl);
  VecD want(d.N);
  const VecD s = to_double(d.s);
  for (int n = 0; n < d.N; n++) want[n] = kd_ref(s, d.t, n, d.targets[n], d.Vp, d.V, 0.0, 2.0);
  expect_close(losses, want, 1e-6, 1e-6, "alpha 0");
}

TEST(Distill, GradientMatchesFiniteDifferences) {
  KdData d;
  const float alpha = 0.6f, T = 2.5f;
  VecF dl;
  kd_sliced(d, 1, alpha, T, &dl);
  VecD s = to_double(d.s);
  const double h = 1e-5;
  for (int n = 0; n < d.N; n++) {
    for (int v = 0; v < d.Vp; v++) {
      const size_t i = static_cast<size_t>(n * d.Vp + v);
      if (v >= d.V) {  // padding: exactly no gradient
        EXPECT_EQ(dl[i], 0.0f) << "padding column " << v;
        continue;
      }
      const double keep = s[i];
      s[i] = keep + h;
      const double up = kd_ref(s, d.t, n, d.targets[n], d.Vp, d.V, alpha, T);
      s[i] = keep - h;
      const double down = kd_ref(s, d.t, n, d.targets[n], d.Vp, d.V, alpha, T);
      s[i] = keep;
      const double want = (up - down) / (2 * h) * d.dloss[n];
      EXPECT_NEAR(dl[i], want, 2e-5 + 1e-4 * std::fabs(want)) << "row " << n << " column " << v;
    }
  }
}

TEST(Distill, VocabularySlicesMatchOneSlice) {
  KdData d;
  VecF d1, d2, d7;
  const VecF l1 = kd_sliced(d, 1, 0.5f, 2.0f, &d1);
  const VecF l2 = kd_sliced(d, 2, 0.5f, 2.0f, &d2);
  const VecF l7 = kd_sliced(d, 7, 0.5f, 2.0f, &d7);  // (slices of 2 columns; the last holds padding only)
  expect_close(l2, to_double(l1), 1e-6, 1e-6, "losses 2 slices");
  expect_close(l7, to_double(l1), 1e-6, 1e-6, "losses 7 slices");
  expect_close(d2, to_double(d1), 1e-7, 1e-6, "gradients 2 slices");
  expect_close(d7, to_double(d1), 1e-7, 1e-6, "gradients 7 slices");
}

}  // namespace
