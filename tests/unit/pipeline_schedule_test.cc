// What: the pipeline schedules as action lists (parallel/pipeline/schedule.h): every action
// once per rank, the documented orders written out, no deadlock when every rank replays its
// list, the simulated bubble equal to the theory, 1F1B keeping at most pp - stage
// micro-batches in flight (GPipe m), and the bad inputs naming their keys.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "parallel/pipeline/schedule.h"

using mt::core::Error;
using mt::parallel::PipeAction;
using mt::parallel::PipeSchedule;
using namespace mt::parallel;

namespace {

std::string str(const std::vector<PipeAction>& a) {
  std::string s;
  for (const auto& x : a) {
    if (!s.empty()) s += ' ';
    s += (x.kind == PipeAction::Kind::Forward ? "F" : "B") + std::to_string(x.micro);
    if (x.chunk) s += "." + std::to_string(x.chunk);
  }
  return s;
}

std::string error_of(PipeSchedule s, int pp, int v, int m) {
  try {
    check_pipeline(s, pp, v, m);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Case {
  PipeSchedule s;
  int v;
};
const Case kCases[] = {{PipeSchedule::GPipe, 1}, {PipeSchedule::OneFOneB, 1}, {PipeSchedule::Interleaved, 2}};

}  // namespace

TEST(PipeSchedule, DocumentedOrders) {
  EXPECT_EQ(str(pipeline_actions(PipeSchedule::OneFOneB, 4, 1, 8, 0)),
            "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7");
  EXPECT_EQ(str(pipeline_actions(PipeSchedule::OneFOneB, 4, 1, 8, 3)),
            "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7");
  EXPECT_EQ(str(pipeline_actions(PipeSchedule::OneFOneB, 4, 1, 4, 1)), "F0 F1 F2 B0 F3 B1 B2 B3");
  EXPECT_EQ(str(pipeline_actions(PipeSchedule::GPipe, 2, 1, 3, 1)), "F0 F1 F2 B0 B1 B2");
  // interleaved pp 2 v 2 m 4, stage 0: warmup (2-0-1)*2 + (2-1)*2 = 4 forwards in Megatron's
  // table order (micro-batches 0,1 on chunk 0, then on chunk 1, then 2,3 ...); backwards in the
  // same order with the chunks reversed
  EXPECT_EQ(str(pipeline_actions(PipeSchedule::Interleaved, 2, 2, 4, 0)),
            "F0 F1 F0.1 F1.1 F2 B0.1 F3 B1.1 F2.1 B0 F3.1 B1 B2.1 B3.1 B2 B3");
  EXPECT_EQ(str(pipeline_actions(PipeSchedule::Interleaved, 2, 2, 4, 1)),
            "F0 F1 F0.1 B0.1 F1.1 B1.1 F2 B0 F3 B1 F2.1 B2.1 F3.1 B3.1 B2 B3");
}

TEST(PipeSchedule, EveryActionOnceAndNoDeadlockAndBubbleIsTheory) {
  for (const auto& c : kCases)
    for (int pp : {1, 2, 4})
      for (int m : {4, 8, 16}) {
        const std::string at = std::string(pipe_schedule_name(c.s)) + " pp " + std::to_string(pp) + " m " +
                               std::to_string(m);
        for (int st = 0; st < pp; ++st) {
          const auto a = pipeline_actions(c.s, pp, c.v, m, st);
          std::set<std::tuple<int, int, int>> seen;
          std::map<std::pair<int, int>, int> forwarded;
          for (size_t i = 0; i < a.size(); ++i) {
            const auto& x = a[i];
            ASSERT_TRUE(x.micro >= 0 && x.micro < m && x.chunk >= 0 && x.chunk < c.v) << at;
            ASSERT_TRUE(seen.insert({static_cast<int>(x.kind), x.micro, x.chunk}).second) << at << " twice";
            if (x.kind == PipeAction::Kind::Forward) forwarded[{x.micro, x.chunk}] = 1;
            else ASSERT_TRUE(forwarded.count({x.micro, x.chunk})) << at << ": backward before its forward";
          }
          ASSERT_EQ(static_cast<int>(a.size()), 2 * m * c.v) << at;
          // activation slots: 1f1b min(pp - stage, m); gpipe m
          if (c.s == PipeSchedule::OneFOneB) {
            EXPECT_EQ(max_in_flight(a), std::min(pp - st, m)) << at;
          }
          if (c.s == PipeSchedule::GPipe) {
            EXPECT_EQ(max_in_flight(a), m) << at;
          }
          if (c.s == PipeSchedule::Interleaved) {
            EXPECT_LE(max_in_flight(a), m * c.v) << at;
          }
        }
        const auto sim = simulate_pipeline(c.s, pp, c.v, m, 1.0, 2.0);
        ASSERT_FALSE(sim.deadlock) << at;
        ASSERT_EQ(static_cast<int>(sim.idle_fraction.size()), pp);
        const double theory = theoretical_bubble(c.s, pp, c.v, m);
        // every rank works m v (f + b) = 3 m v; the makespan is (m v + p - 1)(f + b)
        EXPECT_NEAR(sim.makespan, 3.0 * (m * c.v + pp - 1), 1e-9) << at;
        for (int r = 0; r < pp; ++r) EXPECT_NEAR(sim.idle_fraction[static_cast<size_t>(r)], theory, 1e-9) << at << " rank " << r;
      }
}

TEST(PipeSchedule, SimulationFindsDeadlock) {
  using K = PipeAction::Kind;
  // stage 1 wants micro-batch 1's forward before micro-batch 0's backward, stage 0 waits for
  // that backward before sending micro-batch 1 forward: the schedule can never finish
  const std::vector<std::vector<PipeAction>> bad = {{{K::Forward, 0, 0}, {K::Backward, 0, 0}, {K::Forward, 1, 0}, {K::Backward, 1, 0}},
                                                    {{K::Forward, 0, 0}, {K::Forward, 1, 0}, {K::Backward, 0, 0}, {K::Backward, 1, 0}}};
  EXPECT_TRUE(simulate_actions(bad, 1, 2, 1.0, 2.0).deadlock);
  std::vector<std::vector<PipeAction>> good = bad;
  good[1] = {{K::Forward, 0, 0}, {K::Backward, 0, 0}, {K::Forward, 1, 0}, {K::Backward, 1, 0}};
  const auto sim = simulate_actions(good, 1, 2, 1.0, 2.0);
  EXPECT_FALSE(sim.deadlock);
  EXPECT_NEAR(sim.makespan, 12.0, 1e-12);  // no overlap at all: 2 x (1 + 1 + 2 + 2)
}

TEST(PipeSchedule, BubbleWithOtherTimes) {
  // uniform stage times: every rank idles exactly the theory's fraction for any f, b (interleaved:
  // (p - 1) / (v m + p - 1) at v = 2, 3, 4, m a multiple of p)
  for (double b : {1.0, 3.0})
    for (int pp : {2, 4})
      for (int m : {4, 8, 16}) {
        for (auto s : {PipeSchedule::GPipe, PipeSchedule::OneFOneB}) {
          const auto sim = simulate_pipeline(s, pp, 1, m, 1.0, b);
          for (double idle : sim.idle_fraction) EXPECT_NEAR(idle, theoretical_bubble(s, pp, 1, m), 1e-9);
        }
        for (int v : {2, 3, 4}) {
          const auto sim = simulate_pipeline(PipeSchedule::Interleaved, pp, v, m, 1.0, b);
          ASSERT_FALSE(sim.deadlock);
          EXPECT_NEAR(sim.makespan, (1.0 + b) * (m * v + pp - 1), 1e-9) << pp << " " << m << " " << v << " " << b;
          for (double idle : sim.idle_fraction)
            EXPECT_NEAR(idle, theoretical_bubble(PipeSchedule::Interleaved, pp, v, m), 1e-9) << pp << " " << m << " " << v;
        }
      }
}

TEST(PipeSchedule, TheoryValues) {
  EXPECT_DOUBLE_EQ(theoretical_bubble(PipeSchedule::OneFOneB, 4, 1, 8), 3.0 / 11.0);
  EXPECT_DOUBLE_EQ(theoretical_bubble(PipeSchedule::GPipe, 2, 1, 4), 1.0 / 5.0);
  EXPECT_DOUBLE_EQ(theoretical_bubble(PipeSchedule::Interleaved, 4, 2, 8), 3.0 / 19.0);
  EXPECT_DOUBLE_EQ(theoretical_bubble(PipeSchedule::OneFOneB, 1, 1, 4), 0.0);
}

TEST(PipeSchedule, SimulationTimesByHand) {
  // pp 2 gpipe m 1, f 1 b 2, worked out by hand
  const auto sim = simulate_pipeline(PipeSchedule::GPipe, 2, 1, 1, 1.0, 2.0);
  EXPECT_FALSE(sim.deadlock);
  EXPECT_NEAR(sim.makespan, 6.0, 1e-12);  // F0 s0 [0,1], F0 s1 [1,2], B0 s1 [2,4], B0 s0 [4,6]
  EXPECT_NEAR(sim.idle_fraction[0], 0.5, 1e-12);
}

TEST(PipeSchedule, BadInputNamesTheKeys) {
  std::string e = error_of(PipeSchedule::OneFOneB, 4, 1, 3);
  EXPECT_NE(e.find("1f1b needs at least parallel.pp = 4 micro-batches per step, but a step has 3"), std::string::npos) << e;
  EXPECT_NE(e.find("train.batch_size / (train.micro_batch x dp)"), std::string::npos) << e;
  EXPECT_NE(e.find("hint"), std::string::npos) << e;
  e = error_of(PipeSchedule::Interleaved, 4, 2, 6);
  EXPECT_NE(e.find("multiple of parallel.pp = 4, but a step has 6"), std::string::npos) << e;
  EXPECT_NE(e.find("train.micro_batch"), std::string::npos) << e;
  e = error_of(PipeSchedule::Interleaved, 2, 1, 4);
  EXPECT_NE(e.find("parallel.pp_virtual >= 2"), std::string::npos) << e;
  e = error_of(PipeSchedule::OneFOneB, 2, 2, 4);
  EXPECT_NE(e.find("parallel.pp_virtual = 2 needs parallel.pp_schedule = interleaved (it is 1f1b)"), std::string::npos) << e;
  EXPECT_NE(error_of(PipeSchedule::GPipe, 0, 1, 4).find("parallel.pp"), std::string::npos);
  EXPECT_EQ(error_of(PipeSchedule::GPipe, 4, 1, 2), "");  // gpipe runs any m (a bigger bubble)
  EXPECT_THROW(parse_pipe_schedule("zb-h1"), Error);
  try {
    parse_pipe_schedule("zb-h1");
  } catch (const Error& x) {
    EXPECT_NE(std::string(x.what()).find("parallel.pp_schedule"), std::string::npos);
  }
  EXPECT_EQ(parse_pipe_schedule("interleaved"), PipeSchedule::Interleaved);
}
