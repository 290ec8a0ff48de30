// The loader's arithmetic without files or processes: the per-epoch permutation is a
// bijection (also past 2^32 samples), the planner's global batches, the split across ranks
// and the micro-batches. Coverage: for dp = 1..4, every policy and both modes, one epoch
// visits every sample exactly once (from the ids each rank received), and every step's
// global batch is the same set whatever dp and policy.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "model_util.h"
#include "io/schedule.h"

using namespace mt::io;

namespace {

TEST(EpochPermutation, IsABijectionKeyedBySeedAndEpoch) {
  for (uint64_t n : {1ull, 2ull, 3ull, 7ull, 64ull, 1000ull, 4097ull}) {
    EpochPermutation p(n, 42, 0);
    std::vector<uint64_t> v(n);
    for (uint64_t i = 0; i < n; ++i) v[i] = p(i);
    std::vector<uint64_t> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i) << "n = " << n;
    if (n >= 64) {
      EpochPermutation q(n, 42, 1), r(n, 43, 0), again(n, 42, 0);
      int same_q = 0, same_r = 0;
      for (uint64_t i = 0; i < n; ++i) {
        same_q += q(i) == v[i];
        same_r += r(i) == v[i];
        ASSERT_EQ(again(i), v[i]);
      }
      EXPECT_LT(same_q, static_cast<int>(n / 8)) << "epochs must shuffle differently";
      EXPECT_LT(same_r, static_cast<int>(n / 8)) << "seeds must shuffle differently";
      // a shuffle, not a stride: neighbours land far apart
      int close = 0;
      for (uint64_t i = 0; i + 1 < n; ++i) close += (v[i + 1] > v[i] ? v[i + 1] - v[i] : v[i] - v[i + 1]) < 3;
      EXPECT_LT(close, static_cast<int>(n / 10) + 5);
    }
  }
}

TEST(EpochPermutation, WorksPast2To32) {
  const uint64_t n = 6'000'000'123ull;  // windows of a dataset past 2^32 tokens, no file needed
  EpochPermutation p(n, 7, 3);
  std::set<uint64_t> seen;
  bool high = false;
  for (uint64_t i = 0; i < 20000; ++i) {
    const uint64_t x = i * 299'993ull + (i % 2 ? (1ull << 32) : 0);  // inputs below and above 2^32
    const uint64_t y = p(x % n);
    ASSERT_LT(y, n);
    high |= y >= (1ull << 32);
    seen.insert(y);
  }
  EXPECT_TRUE(high);
  EXPECT_EQ(seen.size(), 20000u);  // distinct inputs, distinct outputs
}

TEST(Planner, ConcatPositionsAre64BitAndClosedForm) {
  PlannerOptions o;
  o.num_samples = 6'000'000'000ull;
  o.seq_len = 128;
  o.batch_samples = 1000;
  o.seed = 1;
  Planner pl(o);
  // step 7,000,000 starts at sample 7e9: epoch 1, position 1e9
  const PlannerState s = pl.state_at(7'000'000);
  EXPECT_EQ(s.epoch, 1u);
  EXPECT_EQ(s.pos, 1'000'000'000u);
  pl.set_state(pl.state_at(5'999'999));  // the last batch of epoch 0 ends exactly at 6e9
  StepPlan plan;
  pl.plan(plan);
  EXPECT_EQ(plan.samples.size(), 1000u);
  EXPECT_EQ(plan.samples.back().epoch, 0u);
  EXPECT_EQ(pl.state().epoch, 1u);
  EXPECT_EQ(pl.state().pos, 0u);
  EXPECT_EQ(plan.targets, 1000 * 128);
  for (const auto& r : plan.samples) ASSERT_LT(r.id, o.num_samples);
}

std::vector<int32_t> skewed_lengths(int n, int seq_len, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) {
    const double u = std::uniform_real_distribution<double>(0, 1)(g);
    x = std::min(seq_len + 1, 1 + static_cast<int32_t>(u * u * u * 3 * seq_len));  // some of 1 token: skipped
  }
  return v;
}

TEST(Planner, DocumentsFillTheTokenBudgetGreedily) {
  const auto len = skewed_lengths(300, 64, 5);
  PlannerOptions o;
  o.mode = SampleMode::Documents;
  o.num_samples = len.size();
  o.sample_tokens = &len;
  o.seq_len = 64;
  o.batch_tokens = 500;
  o.seed = 9;
  Planner pl(o), replay(o);
  StepPlan a, b, c;
  for (int s = 0; s < 40; ++s) {
    const PlannerState before = pl.state();
    pl.plan(a);
    ASSERT_LE(a.targets, 500);
    int64_t t = 0;
    for (const auto& r : a.samples) {
      ASSERT_GE(r.tokens, 2);
      t += r.tokens - 1;
    }
    ASSERT_EQ(t, a.targets);
    // maximal: the next document would not have fit
    Planner peek(o);
    peek.set_state(pl.state());
    peek.plan(c);
    ASSERT_GT(a.targets + c.samples.front().tokens - 1, 500);
    // any state can be reached directly
    EXPECT_EQ(replay.state_at(s), before);
  }
  replay.set_state(replay.state_at(39));
  replay.plan(b);
  ASSERT_EQ(a.samples.size(), b.samples.size());
  for (size_t i = 0; i < a.samples.size(); ++i) EXPECT_EQ(a.samples[i].id, b.samples[i].id);
}

TEST(Apportion, LargestRemainder) {
  EXPECT_EQ(apportion(16, {1, 1, 1}), (std::vector<int64_t>{6, 5, 5}));
  EXPECT_EQ(apportion(16, {2, 1}), (std::vector<int64_t>{11, 5}));
  EXPECT_EQ(apportion(3, {1, 1, 1, 1}), (std::vector<int64_t>{1, 1, 1, 0}));
  EXPECT_EQ(apportion(10, {0, 0}), (std::vector<int64_t>{5, 5}));
  const auto a = apportion(1000, {0.3, 1.7, 1.0});
  EXPECT_EQ(std::accumulate(a.begin(), a.end(), int64_t{0}), 1000);
  EXPECT_EQ(a, (std::vector<int64_t>{100, 567, 333}));
}

// One epoch of each mode under each policy and dp: every sample exactly once; every step's
// sample set is the dp = 1 set; each rank's micro-batches hold exactly its share.
TEST(Schedule, EveryPolicyAndDpCoversEachSampleOncePerEpoch) {
  const int T = 32;
  const auto len = skewed_lengths(211, T, 11);
  const CostModel cost = mt::test_gpt2_cost(2, 64, 256);
  for (SampleMode mode : {SampleMode::Concat, SampleMode::Documents}) {
    PlannerOptions o;
    o.mode = mode;
    o.num_samples = mode == SampleMode::Concat ? 203 : len.size();
    o.sample_tokens = mode == SampleMode::Documents ? &len : nullptr;
    o.seq_len = T;
    o.batch_samples = 12;
    o.batch_tokens = 300;
    o.seed = 77;
    std::vector<std::vector<uint64_t>> reference;  // per step, sorted ids (dp 1, static)
    for (SchedulePolicy policy : {SchedulePolicy::Static, SchedulePolicy::RoundRobin, SchedulePolicy::Balanced,
                                  SchedulePolicy::Dynamic}) {
      for (int dp = 1; dp <= 4; ++dp) {
        Planner pl(o);
        std::map<uint64_t, int> epoch0;  // id -> times seen in epoch 0
        StepPlan plan;
        std::vector<std::vector<int32_t>> shares;
        std::vector<MicroShape> micro;
        std::mt19937 g(static_cast<uint32_t>(dp));
        for (int64_t s = 0; pl.state().epoch == 0; ++s) {
          pl.plan(plan);
          std::vector<double> speeds;
          for (int r = 0; r < dp; ++r) speeds.push_back(0.2 + (g() % 100) / 25.0);
          assign_samples(plan, mode, policy, dp, speeds, cost, shares);
          ASSERT_EQ(static_cast<int>(shares.size()), dp);
          std::vector<uint64_t> ids;
          std::vector<int> hits(plan.samples.size(), 0);
          for (int r = 0; r < dp; ++r) {
            std::vector<int32_t> mine = shares[static_cast<size_t>(r)];
            plan_micro_batches(plan, mode, 4, T, mine, micro);
            int32_t rows = 0;
            for (const auto& m : micro) {
              ASSERT_EQ(m.first, rows);
              ASSERT_LE(static_cast<int64_t>(m.rows) * m.T, mode == SampleMode::Concat ? 4 * T : std::max(4 * T, m.T));
              for (int32_t k = 0; k < m.rows; ++k)
                ASSERT_LE(plan.samples[static_cast<size_t>(mine[static_cast<size_t>(m.first + k)])].tokens - 1, m.T);
              rows += m.rows;
            }
            ASSERT_EQ(rows, static_cast<int32_t>(mine.size()));
            for (int32_t p : mine) {
              ++hits[static_cast<size_t>(p)];
              const SampleRef& ref = plan.samples[static_cast<size_t>(p)];
              ids.push_back(ref.id);
              if (ref.epoch == 0) ++epoch0[ref.id];
            }
          }
          for (int h : hits) ASSERT_EQ(h, 1) << "a sample of the step went to " << h << " ranks";
          std::sort(ids.begin(), ids.end());
          if (policy == SchedulePolicy::Static && dp == 1) {
            reference.push_back(ids);
          } else {
            ASSERT_LT(static_cast<size_t>(s), reference.size());
            ASSERT_EQ(ids, reference[static_cast<size_t>(s)]) << "step " << s << ": another sample set";
          }
        }
        ASSERT_GE(reference.size(), 10u);
        uint64_t expected = 0;
        for (uint64_t id = 0; id < o.num_samples; ++id) {
          const bool usable = mode == SampleMode::Concat || len[id] >= 2;
          expected += usable;
          ASSERT_EQ(epoch0.count(id) ? epoch0[id] : 0, usable ? 1 : 0)
              << "sample " << id << ", policy " << policy_name(policy) << ", dp " << dp;
        }
        EXPECT_EQ(epoch0.size(), expected);
      }
    }
  }
}

double max_over_mean(const std::vector<double>& v) {
  double mx = 0, mean = 0;
  for (double x : v) mx = std::max(mx, x), mean += x / static_cast<double>(v.size());
  return mx / mean;
}

TEST(Schedule, BalancedAndDynamicEvenOutModelledTime) {
  const int T = 256;
  const auto len = skewed_lengths(2000, T, 3);
  PlannerOptions o;
  o.mode = SampleMode::Documents;
  o.num_samples = len.size();
  o.sample_tokens = &len;
  o.seq_len = T;
  o.batch_tokens = 8192;
  Planner pl(o);
  const CostModel cost = mt::test_gpt2_cost(2, 64, 256);
  StepPlan plan;
  std::vector<std::vector<int32_t>> shares;
  double rr = 0, bal = 0, st = 0, dyn = 0;
  for (int s = 0; s < 20; ++s) {
    pl.plan(plan);
    auto loads = [&](SchedulePolicy p, std::vector<double> speeds) {
      assign_samples(plan, SampleMode::Documents, p, 2, speeds, cost, shares);
      std::vector<double> t(2, 0.0);
      for (int r = 0; r < 2; ++r)
        for (int32_t i : shares[static_cast<size_t>(r)]) t[static_cast<size_t>(r)] += cost(plan.samples[static_cast<size_t>(i)].tokens);
      for (int r = 0; r < 2; ++r) t[static_cast<size_t>(r)] /= speeds[static_cast<size_t>(r)];  // time at that speed
      return max_over_mean(t);
    };
    rr += loads(SchedulePolicy::RoundRobin, {1, 1}) / 20;
    bal += loads(SchedulePolicy::Balanced, {1, 1}) / 20;
    st += loads(SchedulePolicy::Static, {1, 0.5}) / 20;   // rank 1 at half speed
    dyn += loads(SchedulePolicy::Dynamic, {1, 0.5}) / 20;
  }
  EXPECT_LT(bal, 1.02);
  EXPECT_LT(bal, rr);
  EXPECT_LT(dyn, 1.05);
  EXPECT_GT(st, 1.25);
}

}  // namespace
