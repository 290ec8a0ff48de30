// The lr range test's analysis (launch/lr_find.h): divergence at 4x the lowest smoothed loss
// (or a non-finite loss), the suggestion a third of the lowest smoothed point's lr, the
// steepest descent before it.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "launch/lr_find.h"

namespace mt::launch {
namespace {

// N lrs from 1e-6 to 1 and a loss that falls from 3 to 1 around lr0 (steepest there) and
// explodes past lr_blow
void curve(int N, double lr0, double lr_blow, std::vector<double>* lrs, std::vector<double>* losses) {
  for (int i = 0; i < N; ++i) {
    const double lr = 1e-6 * std::pow(1e6, i / double(N - 1));
    const double z = std::log10(lr / lr0) * 3;
    double l = 1 + 2 / (1 + std::exp(z));
    if (lr > lr_blow) l += 100 * std::log10(lr / lr_blow);
    lrs->push_back(lr), losses->push_back(l);
  }
}

TEST(LrFind, ThirdOfTheLowestPointAndTheSteepestDescent) {
  std::vector<double> lrs, losses;
  curve(100, 1e-3, 1e-1, &lrs, &losses);
  const LrFindAnalysis a = analyse_lr_find(lrs, losses);
  EXPECT_GE(a.diverged_at, 0);  // the explosion
  EXPECT_GT(lrs[static_cast<size_t>(a.diverged_at)], 1e-1);
  // the lowest point: just before the explosion (the moving average lags a few steps)
  EXPECT_GT(lrs[static_cast<size_t>(a.min_index)], 3e-2);
  EXPECT_LT(lrs[static_cast<size_t>(a.min_index)], 3e-1);
  for (int64_t i = 0; i < a.diverged_at; ++i) EXPECT_GE(a.smoothed[static_cast<size_t>(i)], a.smoothed[static_cast<size_t>(a.min_index)]);
  EXPECT_DOUBLE_EQ(a.suggested_lr, lrs[static_cast<size_t>(a.min_index)] / 3);
  // the steepest descent: within a decade above the true one (the moving average's lag)
  ASSERT_GE(a.steepest, 0);
  EXPECT_LE(a.steepest, a.min_index);
  EXPECT_GT(lrs[static_cast<size_t>(a.steepest)], 1e-3 / 1.5);
  EXPECT_LT(lrs[static_cast<size_t>(a.steepest)], 1e-2);
  EXPECT_NE(a.rule.find("lowest smoothed loss"), std::string::npos);
  EXPECT_NE(a.rule.find("divided by 3"), std::string::npos);
}

TEST(LrFind, DivergenceAtFourTimesTheLowest) {
  std::vector<double> l = {2, 1.5, 1.0, 1.0, 1.2};
  EXPECT_FALSE(lr_find_diverged(l));
  for (int i = 0; i < 30 && !lr_find_diverged(l); ++i) l.push_back(50);
  EXPECT_TRUE(lr_find_diverged(l));
  EXPECT_LT(l.size(), 15u);
  EXPECT_TRUE(lr_find_diverged({2.0, 1.0, NAN}));
}

TEST(LrFind, NoDescentStillSuggests) {
  const std::vector<double> lrs = {1e-4, 1e-3, 1e-2}, losses = {1.0, 1.1, 1.2};
  const LrFindAnalysis a = analyse_lr_find(lrs, losses);
  EXPECT_EQ(a.steepest, -1);
  EXPECT_EQ(a.min_index, 0);
  EXPECT_DOUBLE_EQ(a.suggested_lr, 1e-4 / 3);
}

}  // namespace
}  // namespace mt::launch
