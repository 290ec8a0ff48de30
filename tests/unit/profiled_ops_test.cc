// What: kernels/profiled_ops: the timing decorator forwards every call unchanged (bitwise
// equal results), counts each kernel call once under its name, drops warm-up windows, and
// its CPU events measure the host clock; and the table bench step --profile prints.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "core/device.h"
#include "kernels/ops.h"
#include "kernels/profiled_ops.h"

namespace {

using mt::kernels::OpProfile;
using mt::kernels::OpTime;

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>((i * 7919) % 97) / 97.0f - 0.5f;
  return v;
}

TEST(ProfiledOps, ForwardsCallsUnchangedAndCountsThem) {
  mt::core::Device& cpu = mt::core::get_device("cpu");
  OpProfile profile(cpu);
  auto ops = mt::kernels::profile_ops(mt::kernels::make_ops(cpu), &profile);
  const int N = 33, C = 70, OC = 45;
  const auto inp = ramp(N * C, 1.0f), w = ramp(OC * C, 0.5f), b = ramp(OC, 0.1f);
  std::vector<float> ref(N * OC), out(N * OC, 7.0f);
  mt::kernels::cpu_ops().matmul_forward(ref.data(), inp.data(), w.data(), b.data(), N, C, OC);

  ops->matmul_forward(out.data(), inp.data(), w.data(), b.data(), N, C, OC);  // a warm-up window
  profile.collect(/*keep=*/false);
  EXPECT_TRUE(profile.totals().empty());

  for (int i = 0; i < 3; ++i) ops->matmul_forward(out.data(), inp.data(), w.data(), b.data(), N, C, OC);
  ops->gelu_forward(out.data(), ref.data(), static_cast<int64_t>(ref.size()));
  ops->matmul_forward(out.data(), inp.data(), w.data(), b.data(), N, C, OC);
  EXPECT_EQ(out, ref);  // bit for bit: the decorator only times
  EXPECT_EQ(ops->describe(), mt::kernels::cpu_ops().describe());
  profile.collect();
  const std::vector<OpTime> t = profile.totals();
  ASSERT_EQ(t.size(), 2u);
  int64_t matmul_calls = 0, gelu_calls = 0;
  for (const OpTime& o : t) {
    if (o.name == "matmul_forward") matmul_calls = o.calls;
    if (o.name == "gelu_forward") gelu_calls = o.calls;
    EXPECT_GE(o.ms, 0.0);
  }
  EXPECT_EQ(matmul_calls, 4);
  EXPECT_EQ(gelu_calls, 1);
  EXPECT_GE(t[0].ms, t[1].ms);  // largest first

  // totals accumulate over windows until reset()
  ops->gelu_forward(out.data(), ref.data(), static_cast<int64_t>(ref.size()));
  profile.collect();
  for (const OpTime& o : profile.totals())
    if (o.name == "gelu_forward") EXPECT_EQ(o.calls, 2);
  profile.reset();
  EXPECT_TRUE(profile.totals().empty());
}

TEST(ProfiledOps, CpuTimingEventsMeasureTheHostClock) {
  mt::core::Device& cpu = mt::core::get_device("cpu");
  auto start = cpu.create_timing_event(), stop = cpu.create_timing_event();
  start->record();
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  stop->record();
  EXPECT_GE(stop->elapsed_ms_since(*start), 29.9);
  EXPECT_LT(start->elapsed_ms_since(*stop), 0.0);  // the other way round: negative
}

TEST(ProfiledOps, TableHasEveryOpAndTheShares) {
  const std::vector<OpTime> ops{{"matmul_backward", 20, 30.0}, {"attention_forward", 10, 10.0}};
  const std::string s = mt::kernels::format_op_profile(ops, /*steps=*/10, /*step_ms=*/8.0);
  EXPECT_NE(s.find("matmul_backward"), std::string::npos) << s;
  EXPECT_NE(s.find("3.000"), std::string::npos) << s;   // 30 ms over 10 steps
  EXPECT_NE(s.find("75.0%"), std::string::npos) << s;   // of the op time
  EXPECT_NE(s.find("37.5%"), std::string::npos) << s;   // 3 ms of an 8 ms step
  EXPECT_NE(s.find("50.0%"), std::string::npos) << s;   // all kernels: 4 ms of 8
  EXPECT_NE(s.find("all kernels"), std::string::npos) << s;
}

}  // namespace
