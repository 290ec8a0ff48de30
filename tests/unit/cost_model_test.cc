// The alpha-beta cost model of `meshtrain scale` (launch/cost_model.h): the fit recovers known
// parameters from synthetic ring timings, also when the table spans 4 KiB to 16 MiB (where a
// fit on absolute seconds loses alpha), and the ring formula matches its definition.
#include <gtest/gtest.h>


#include "core/error.h"
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

// Pipeline step (pipeline_time): numbers computed by hand from the formulas in cost_model.h.
TEST(CostModel, PipelineOneFOneB) {
  using mt::parallel::PipeSchedule;
  const AlphaBeta link{5e-6, 1.0 / 10e9};  // one 1 MB message: 5 us + 100 us = 105 us
  // pp 4, m 8: bubble 3 / 11, so 8 ms of stage work takes 8 x 11/8 = 11 ms
  const PipelineTime t = pipeline_time(8e-3, PipeSchedule::OneFOneB, 4, 1, 8, 1e6, link);
  EXPECT_NEAR(t.bubble, 3.0 / 11, 1e-12);
  EXPECT_NEAR(t.compute_s, 11e-3, 1e-12);
  // 2 messages x 8 micro-batches x 105 us, stretched by 11/8: 2.31 ms
  EXPECT_NEAR(t.p2p_s, 2.31e-3, 1e-12);
  EXPECT_NEAR(t.p2p_bytes, 2.0 * 8 * 3 * 1e6, 1e-3);  // forward + backward over 3 boundaries
  EXPECT_NEAR(t.step_s(), 13.31e-3, 1e-12);
  // gpipe has the same bubble
  EXPECT_NEAR(pipeline_time(8e-3, PipeSchedule::GPipe, 4, 1, 8, 1e6, link).compute_s, 11e-3, 1e-12);
}

TEST(CostModel, PipelineInterleavedAndNoPipeline) {
  using mt::parallel::PipeSchedule;
  const AlphaBeta link{5e-6, 1.0 / 10e9};
  // pp 2, v 2, m 4: bubble 1 / (2 x 4 + 1) = 1/9; compute 8 ms x 9/8 = 9 ms
  const PipelineTime t = pipeline_time(8e-3, PipeSchedule::Interleaved, 2, 2, 4, 1e6, link);
  EXPECT_NEAR(t.bubble, 1.0 / 9, 1e-12);
  EXPECT_NEAR(t.compute_s, 9e-3, 1e-12);
  EXPECT_NEAR(t.p2p_s, 2.0 * 4 * 2 * 105e-6 * 9 / 8, 1e-12);  // 1.89 ms
  EXPECT_NEAR(t.p2p_bytes, 2.0 * 4 * 3 * 1e6, 1e-3);         // 3 boundaries: 0>1, 1>0 (wrap), 0>1
  // pp 1: the stage is the whole replica, no bubble, no messages
  const PipelineTime one = pipeline_time(8e-3, PipeSchedule::OneFOneB, 1, 1, 3, 1e6, link);
  EXPECT_EQ(one.bubble, 0.0);
  EXPECT_EQ(one.compute_s, 8e-3);
  EXPECT_EQ(one.p2p_s, 0.0);
  // 1f1b with fewer micro-batches than stages is refused (check_pipeline)
  EXPECT_THROW(pipeline_time(8e-3, PipeSchedule::OneFOneB, 4, 1, 2, 1e6, link), mt::core::Error);
}
