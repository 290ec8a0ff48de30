// The charts' axes (launch/svg.h nice_axis): linear ticks step by 1, 2 or 5 x 10^k and cover
// the data; log axes tick at decades; labels carry no float noise.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "launch/svg.h"

namespace mt::launch {
namespace {

std::vector<std::string> labels(const NiceAxis& a) {
  std::vector<std::string> r;
  for (double v : a.ticks) r.push_back(tick_label(v));
  return r;
}

TEST(NiceAxis, LinearTicksAreRoundAndCoverTheData) {
  EXPECT_EQ(labels(nice_axis(0, 600)), (std::vector<std::string>{"0", "100", "200", "300", "400", "500", "600"}));
  EXPECT_EQ(labels(nice_axis(1.63, 2.81)), (std::vector<std::string>{"1.6", "1.8", "2", "2.2", "2.4", "2.6", "2.8", "3"}));
  EXPECT_EQ(labels(nice_axis(0.07, 0.39)),
            (std::vector<std::string>{"0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4"}));
  EXPECT_EQ(labels(nice_axis(1, 37)), (std::vector<std::string>{"0", "10", "20", "30", "40"}));
  EXPECT_EQ(labels(nice_axis(-3e-4, 2.2e-3)),
            (std::vector<std::string>{"-0.0005", "0", "0.0005", "0.001", "0.0015", "0.002", "0.0025"}));
  for (auto [lo, hi] : {std::pair{0.1234, 0.9876}, std::pair{13.0, 1717.0}, std::pair{-5.5, 7.25}, std::pair{1e-7, 3e-6}}) {
    const NiceAxis a = nice_axis(lo, hi);
    EXPECT_LE(a.lo, lo);
    EXPECT_GE(a.hi, hi);
    ASSERT_GE(a.ticks.size(), 3u);
    EXPECT_LE(a.ticks.size(), 12u);
    const double step = a.ticks[1] - a.ticks[0];
    const double m = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));  // mantissa
    EXPECT_TRUE(std::fabs(m - 1) < 1e-6 || std::fabs(m - 2) < 1e-6 || std::fabs(m - 5) < 1e-6) << lo << " " << m;
    for (size_t i = 1; i < a.ticks.size(); ++i) EXPECT_NEAR(a.ticks[i] - a.ticks[i - 1], step, step * 1e-9);
  }
}

TEST(NiceAxis, OneValueGetsARange) {
  const NiceAxis a = nice_axis(2.5, 2.5);
  EXPECT_LT(a.lo, 2.5);
  EXPECT_GT(a.hi, 2.5);
  EXPECT_GE(a.ticks.size(), 2u);
}

TEST(NiceAxis, LogTicksAtDecades) {
  EXPECT_EQ(labels(nice_axis(3e-6, 0.2, true)),
            (std::vector<std::string>{"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "1"}));
  EXPECT_EQ(labels(nice_axis(1e-4, 1e-2, true)), (std::vector<std::string>{"0.0001", "0.001", "0.01"}));
  EXPECT_EQ(labels(nice_axis(20, 30, true)), (std::vector<std::string>{"10", "100"}));
}

TEST(XYChart, TicksAndLegendInTheSvg) {
  XYSeries s{"run-a eval acc", {0, 10, 20}, {0.07, 0.2, 0.39}};
  const std::string svg = svg_xy_chart("acc", "steps", "accuracy", {s});
  EXPECT_NE(svg.find(">0.3</text>"), std::string::npos);
  EXPECT_NE(svg.find(">run-a eval acc</text>"), std::string::npos);
  XYOptions log_x;
  log_x.log_x = true;
  const std::string lg = svg_xy_chart("lr", "lr", "loss", {{"a<b", {1e-5, 1e-2}, {3, 2}}}, log_x);
  EXPECT_NE(lg.find(">1e-05</text>"), std::string::npos);
  EXPECT_NE(lg.find(">0.01</text>"), std::string::npos);
  EXPECT_NE(lg.find("a&lt;b"), std::string::npos);
}

}  // namespace
}  // namespace mt::launch
