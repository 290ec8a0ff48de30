// The alpha-beta cost model of `meshtrain scale` (launch/cost_model.h): the fit recovers known
// parameters from synthetic ring timings, also when the table spans 4 KiB to 16 MiB (where a
// fit on absolute seconds loses alpha), and the ring formula matches its definition.
#include <gtest/gtest.h>


#include "launch/cost_model.h"

using namespace mt::launch;

TEST(CostModel, RingFormula) {
  const AlphaBeta ab{5e-6, 1.0 / 10e9};
  EXPECT_EQ(ring_allreduce_s(ab, 1e6, 1), 0.0);
  // 2(n-1) alpha + 2(n-1)/n B beta for n = 4, B = 1 MB: 6 x 5 us + 1.5 x 100 us
  EXPECT_NEAR(ring_allreduce_s(ab, 1e6, 4), 30e-6 + 150e-6, 1e-12);
}

TEST(CostModel, FitRecoversAlphaAndBetaAcrossSizes) {
  const AlphaBeta truth{3e-6, 1.0 / 6e9};
  for (int n : {2, 4, 8}) {
    std::vector<std::pair<double, double>> pts;
    int i = 0;
    for (double b = 4096; b <= 16 << 20; b *= 2, ++i) {
      const double noise = 1.0 + 0.03 * ((i % 3) - 1);  // +-3%, deterministic
      pts.emplace_back(b, ring_allreduce_s(truth, b, n) * noise);
    }
    const AlphaBeta fit = fit_alpha_beta(pts, n);
    EXPECT_NEAR(fit.alpha_s, truth.alpha_s, 0.15 * truth.alpha_s) << "n " << n;
    EXPECT_NEAR(fit.beta_s, truth.beta_s, 0.05 * truth.beta_s) << "n " << n;
    // and so the smallest message is predicted within a few percent, not 100% off
    const double t0 = pts.front().second;
    EXPECT_NEAR(ring_allreduce_s(fit, pts.front().first, n), t0, 0.1 * t0);
  }
}

TEST(CostModel, ExtrapolationTableHasTheScales) {
  const std::string md = extrapolation_table(h100_cluster(), 1e15, 500e6);
  for (const char* n : {"| 8 |", "| 64 |", "| 256 |", "| 1024 |"}) EXPECT_NE(md.find(n), std::string::npos) << n;
}
