// `meshtrain plan`'s model (launch/plan.h) against hand-computed numbers: a GPT-2 of width 64,
// 2 layers, vocabulary 64, seq_len 32 has 12 C^2 + 13 C = 49984 parameters per block and
// 64 x 64 (wte) + 32 x 64 (wpe) + 2 x 64 (final norm) = 6272 outside them: P = 106240 at tp 1
// (a multiple of 64 x dp for dp 1, 2, 4, so no padding). Every ZeRO level's formula, the
// activations (the architectures' model), the layout enumeration (counted by hand), the time model's
// ordering, the memory accounting by category (core/memory.h) and the command's errors.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "core/config.h"
#include "core/device.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/tensor.h"
#include "launch/plan.h"
#include "parallel/models/registry.h"

using namespace mt;
using namespace mt::launch;

namespace {

core::Config small(std::vector<std::string> extra = {}) {
  std::vector<std::string> o{"model.n_layer=2", "model.n_embd=64", "model.n_head=4", "model.vocab_size=64",
                             "model.seq_len=32", "train.batch_size=8", "train.micro_batch=2", "optim.name=adamw"};
  o.insert(o.end(), extra.begin(), extra.end());
  return core::load_config(std::string(MT_SOURCE_DIR) + "/examples/tiny.yaml", o);
}

constexpr double kBlock = 12 * 64 * 64 + 13 * 64;  // 49984
constexpr double kOuter = 64 * 64 + 32 * 64 + 2 * 64;  // 6272
constexpr double kP = kOuter + 2 * kBlock;           // 106240
// ZeRO-2/3 align every layer's unit to 64 x dp: at dp 2 (128) wte+wpe 6144 | block 49984 ->
// 50048 | block 50048 | lnf 128; at dp 4 (256): 6144 | 50176 | 50176 | lnf 128 -> 256
constexpr double kP2 = 106368, kBlock2 = 50048, kOuter2 = 6272;
constexpr double kP4 = 106752, kBlock4 = 50176, kOuter4 = 6400;

}  // namespace

TEST(Plan, ParamUnitsByHand) {
  const auto cfg = small();
  const auto arch = parallel::make_architecture(cfg.model);
  for (int dp : {1, 2, 4}) {
    const ParamUnits u = param_units(*arch, 1, dp);
    EXPECT_EQ(u.flat, static_cast<int64_t>(kP)) << "dp " << dp;
    EXPECT_EQ(u.blk_max, static_cast<int64_t>(kBlock));
    EXPECT_EQ(u.outer, static_cast<int64_t>(kOuter));
  }
  // dp 3: padded to a multiple of 192
  EXPECT_EQ(param_units(*arch, 1, 3).flat, 106368);
  for (int zero : {2, 3}) {  // units aligned (ZeRO-2/3)
    const ParamUnits u2 = param_units(*arch, 1, 2, zero), u4 = param_units(*arch, 1, 4, zero);
    EXPECT_EQ(u2.flat, static_cast<int64_t>(kP2));
    EXPECT_EQ(u2.blk_max, static_cast<int64_t>(kBlock2));
    EXPECT_EQ(u2.outer, static_cast<int64_t>(kOuter2));
    EXPECT_EQ(u4.flat, static_cast<int64_t>(kP4));
    EXPECT_EQ(u4.blk_max, static_cast<int64_t>(kBlock4));
    EXPECT_EQ(u4.outer, static_cast<int64_t>(kOuter4));
  }
}

TEST(Plan, MemoryFormulasPerZeroLevel) {
  const auto cfg = small();  // CPU, fp32, AdamW
  const auto arch = parallel::make_architecture(cfg.model);
  const double acts = arch->activation_bytes(2, 32, 1, 4, 32) + 5 * 4 * 2 * 32;
  Layout l{1, 1, 0, false, PlanRecompute::None, 2};
  MemoryPrediction m = predict_memory(cfg, *arch, l);
  EXPECT_EQ(m.master, 4 * kP);
  EXPECT_EQ(m.working, 0);
  EXPECT_EQ(m.grads, 4 * kP);
  EXPECT_EQ(m.optimizer, 8 * kP);
  EXPECT_EQ(m.comm, 0);
  EXPECT_EQ(m.other, 0);
  EXPECT_DOUBLE_EQ(m.activations, acts);
  EXPECT_DOUBLE_EQ(m.total(), 16 * kP + acts);

  l.dp = 2, l.zero = 1;
  m = predict_memory(cfg, *arch, l);
  EXPECT_EQ(m.master, 4 * kP);
  EXPECT_EQ(m.grads, 4 * kP);
  EXPECT_EQ(m.optimizer, 4 * kP);  // 8P / 2
  EXPECT_EQ(m.comm, 2 * kP);       // the reduce-scatter shard 4P / 2

  l.zero = 2;  // + the outer units and two block slots, and their reductions' 1/dp landing buffers
  m = predict_memory(cfg, *arch, l);
  EXPECT_EQ(m.master, 4 * kP2);
  EXPECT_EQ(m.grads, 2 * kP2 + 4 * (kOuter2 + 2 * kBlock2) * 1.5);
  EXPECT_EQ(m.optimizer, 4 * kP2);
  EXPECT_EQ(m.comm, 0);

  l.zero = 3, l.dp = 4;
  m = predict_memory(cfg, *arch, l);
  EXPECT_EQ(m.master, kP4);                                // 4P / 4
  EXPECT_EQ(m.working, 4 * (kOuter4 + 2 * kBlock4));       // fp32 gathered: outer + two block slots
  EXPECT_EQ(m.grads, kP4 + 4 * (kOuter4 + 2 * kBlock4) * 1.25);
  EXPECT_EQ(m.optimizer, 2 * kP4);

  // zero > 0 at dp 1 shards nothing
  l = {1, 1, 3, false, PlanRecompute::None, 2};
  EXPECT_EQ(predict_memory(cfg, *arch, l).total(), 16 * kP + acts);

  // SGD with momentum: 4 bytes of state per parameter; without: none
  const auto sgd = small({"optim.name=sgd", "optim.momentum=0.9"});
  EXPECT_EQ(predict_memory(sgd, *arch, {1, 1, 0, false, PlanRecompute::None, 2}).optimizer, 4 * kP);
  const auto plain = small({"optim.name=sgd", "optim.momentum=0"});
  EXPECT_EQ(predict_memory(plain, *arch, {1, 1, 0, false, PlanRecompute::None, 2}).optimizer, 0);
}

TEST(Plan, Bf16WorkingCopyAndCudaAttentionState) {
  const auto cfg = small({"train.device=cuda", "train.precision=bf16"});
  const auto arch = parallel::make_architecture(cfg.model);
  const MemoryPrediction m = predict_memory(cfg, *arch, {2, 1, 1, false, PlanRecompute::None, 2});
  EXPECT_EQ(m.working, 2 * kP);
  EXPECT_EQ(m.other, 32.0 * 1048576);
  EXPECT_DOUBLE_EQ(m.activations, arch->activation_bytes(2, 32, 1, 2, 1) + 5 * 4 * 64);
  const MemoryPrediction z3 = predict_memory(cfg, *arch, {2, 1, 3, false, PlanRecompute::None, 2});
  EXPECT_EQ(z3.working, 2 * (kOuter2 + 2 * kBlock2) + kP2);  // bf16 slots + the bf16 pieces 2P/2
  EXPECT_EQ(z3.master, 2 * kP2);
}

TEST(Plan, ActivationsAreTheArchitecturesModel) {
  const auto cfg = small();
  const auto arch = parallel::make_architecture(cfg.model);
  using parallel::Recompute;
  const double none = arch->activation_bytes(2, 32, 2, 4, 32);
  const double sel = plan_activation_bytes(*arch, 2, 32, 2, 4, 32, PlanRecompute::Selective, false);
  const double full = plan_activation_bytes(*arch, 2, 32, 2, 4, 32, PlanRecompute::Full, false);
  const double sp = plan_activation_bytes(*arch, 2, 32, 2, 4, 32, PlanRecompute::None, true);
  EXPECT_DOUBLE_EQ(plan_activation_bytes(*arch, 2, 32, 2, 4, 32, PlanRecompute::None, false), none);
  EXPECT_DOUBLE_EQ(sel, arch->activation_bytes(2, 32, 2, 4, 32, Recompute::Selective));
  EXPECT_DOUBLE_EQ(full, arch->activation_bytes(2, 32, 2, 4, 32, Recompute::Full));
  EXPECT_DOUBLE_EQ(sp, arch->activation_bytes(2, 32, 2, 4, 32, Recompute::None, true));
  EXPECT_LT(full, sel);
  EXPECT_LT(sel, none);
  EXPECT_LT(sp, none);
  // sp is meaningless at tp 1
  EXPECT_DOUBLE_EQ(plan_activation_bytes(*arch, 2, 32, 1, 4, 32, PlanRecompute::None, true),
                   arch->activation_bytes(2, 32, 1, 4, 32));
}

TEST(Plan, EnumerationCountedByHand) {
  const auto cfg = small();  // 4 heads: tp 1, 2, 4; batch 8
  const auto arch = parallel::make_architecture(cfg.model);
  // 4 GPUs in one node: dp4 tp1: zero 4 x rc 3 x mb {1,2} = 24; dp2 tp2: 4 x sp 2 x 3 x mb
  // {1,2,4} = 72; dp1 tp4: zero 0 only x 2 x 3 x mb {1,2,4,8} = 24
  EXPECT_EQ(enumerate_layouts(cfg, *arch, 4, 4).size(), 120u);
  // two nodes of 2: tp 4 would cross nodes
  const auto two = enumerate_layouts(cfg, *arch, 4, 2);
  EXPECT_EQ(two.size(), 96u);
  for (const Layout& l : two) {
    EXPECT_LE(l.tp, 2);
    EXPECT_TRUE(!l.sp || l.tp > 1);
    EXPECT_EQ(cfg.train.batch_size % (l.dp * l.micro_batch), 0);
  }
  // 3 GPUs: tp 3 does not divide 4 heads, dp 3 does not divide batch 8
  EXPECT_EQ(enumerate_layouts(cfg, *arch, 3, 3).size(), 0u);
  EXPECT_NE(layout_violation(cfg, *arch, {1, 4, 0, false, PlanRecompute::None, 8}, 4, 2).find("node"), std::string::npos);
  EXPECT_NE(layout_violation(cfg, *arch, {4, 1, 0, true, PlanRecompute::None, 2}, 4, 4).find("parallel.sp"),
            std::string::npos);
  EXPECT_NE(layout_violation(cfg, *arch, {4, 1, 0, false, PlanRecompute::None, 4}, 4, 4).find("train.micro_batch"),
            std::string::npos);
}

TEST(Plan, TimeModelOrdering) {
  const auto cfg = small({"train.device=cuda", "train.precision=bf16"});
  const auto arch = parallel::make_architecture(cfg.model);
  const auto c = h100_cluster();
  const TimePrediction none = predict_time(cfg, *arch, {4, 1, 0, false, PlanRecompute::None, 2}, c, 8);
  const TimePrediction full = predict_time(cfg, *arch, {4, 1, 0, false, PlanRecompute::Full, 2}, c, 8);
  EXPECT_NEAR(full.compute_s / none.compute_s, 4.0 / 3, 1e-12);
  const double flops = arch->flops_per_token(32) * 8 * 32;
  EXPECT_NEAR(none.compute_s, flops / 4 / (c.gpu_peak_flops * c.mfu), 1e-15);
  EXPECT_EQ(none.tp_comm_s, 0);
  // ZeRO-3 moves more bytes than ZeRO-1; across nodes is slower than inside one
  const TimePrediction z1 = predict_time(cfg, *arch, {4, 1, 1, false, PlanRecompute::None, 2}, c, 8);
  const TimePrediction z3 = predict_time(cfg, *arch, {4, 1, 3, false, PlanRecompute::None, 2}, c, 8);
  EXPECT_GT(z3.dp_comm_s, z1.dp_comm_s);
  const TimePrediction z1x = predict_time(cfg, *arch, {4, 1, 1, false, PlanRecompute::None, 2}, c, 1);
  EXPECT_GT(z1x.dp_comm_s, z1.dp_comm_s);
  const TimePrediction tp = predict_time(cfg, *arch, {2, 2, 0, false, PlanRecompute::None, 2}, c, 8);
  EXPECT_GT(tp.tp_comm_s, 0);
  EXPECT_GE(none.dp_exposed_s, 0);
  EXPECT_LE(none.dp_exposed_s, none.dp_comm_s * 1.5);
}

TEST(Plan, CommandErrorsNameTheFlag) {
  const std::string cfgp = std::string(MT_SOURCE_DIR) + "/examples/tiny.yaml";
  const auto msg = [&](PlanArgs a) {
    try {
      cmd_plan(a);
    } catch (const core::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg({cfgp, {}, 0, "80GiB"}).find("--gpus"), std::string::npos);
  EXPECT_NE(msg({cfgp, {}, 4, "lots"}).find("--gpu-mem"), std::string::npos);
  EXPECT_NE(msg({cfgp, {}, 4, "80GiB", 3}).find("--nodes"), std::string::npos);
  EXPECT_NE(msg({cfgp, {"parallel.zero=7"}, 4, "80GiB"}).find("parallel.zero"), std::string::npos);
  // nothing fits in 1 KB: exit code 2; everything fits in 80 GiB: 0
  EXPECT_EQ(cmd_plan({cfgp, {}, 2, "1KB"}), 2);
  EXPECT_EQ(cmd_plan({cfgp, {}, 2, "80GiB"}), 0);
}

TEST(MemoryAccounting, CategoriesAndPeaks) {
  core::Device& dev = core::cpu_device();
  const core::MemoryStats s0 = dev.memory_stats();
  dev.reset_memory_window();
  {
    core::MemoryScope g(core::MemCat::Grads);
    core::Tensor a = core::Tensor::empty({1000}, core::DType::F32, dev);  // 4000 -> 4032 rounded to 64
    {
      core::MemoryScope c(core::MemCat::Comm);
      core::Tensor b = core::Tensor::empty({16}, core::DType::F32, dev);  // 64
      const core::MemoryStats s = dev.memory_stats();
      EXPECT_EQ(s.now[core::MemCat::Grads] - s0.now[core::MemCat::Grads], 4032u);
      EXPECT_EQ(s.now[core::MemCat::Comm] - s0.now[core::MemCat::Comm], 64u);
      EXPECT_EQ(s.window_peak.total(), s0.now.total() + 4096);
      // another thread books under its own (default) category
      std::thread([&] {
        core::Tensor t = core::Tensor::empty({16}, core::DType::F32, dev);
        EXPECT_EQ(core::current_memcat(), core::MemCat::Other);
      }).join();
    }
    EXPECT_EQ(core::current_memcat(), core::MemCat::Grads);
  }
  const core::MemoryStats s1 = dev.memory_stats();
  EXPECT_EQ(s1.now.total(), s0.now.total());
  // the window's peak: the grads tensor, then the comm one, then the other thread's (freed by then? no:
  // the other thread's 64 bytes came on top of both)
  EXPECT_EQ(s1.window_peak.total(), s0.now.total() + 4096 + 64);
  EXPECT_EQ(s1.window_peak[core::MemCat::Comm] - s0.now[core::MemCat::Comm], 64u);
  EXPECT_EQ(s1.window_peak.total(), s1.window_peak.bytes[0] + s1.window_peak.bytes[1] + s1.window_peak.bytes[2] +
                                        s1.window_peak.bytes[3] + s1.window_peak.bytes[4] + s1.window_peak.bytes[5]);
  EXPECT_GE(dev.peak_bytes_in_use(), s1.window_peak.total());
  dev.reset_memory_window();
  EXPECT_EQ(dev.memory_stats().window_peak.total(), s1.now.total());
  EXPECT_EQ(dev.bytes_in_use(), s1.now.total());
}

// Pipeline layouts (pp > 1): 4 blocks of kBlock split 2 + 2; the first stage holds wte + wpe
// (6144), the last the final norm (128): the largest stage is the first, 6144 + 2 kBlock.
// Activations at (B 2, T 32, fp32, CPU probabilities): a GPT-2 block's bytes by hand (ln =
// N C W + 2 N 4 = 16896; qkv 49152, att 2 x 4 x 32 x 32 x 4 = 32768, att out, res2, ln2, fc
// 2 x 64 x 256 x 4 = 131072, res3): d = 295936 per block and micro-batch.
TEST(Plan, PipelineStageMemoryAndTime) {
  constexpr double kStage0 = 6144 + 2 * kBlock;  // 106112, a multiple of 64
  constexpr double d = 295936;
  for (const char* sched : {"1f1b", "gpipe"}) {
    const auto cfg = small({"model.n_layer=4", "parallel.pp=2", std::string("parallel.pp_schedule=") + sched});
    const auto arch = parallel::make_architecture(cfg.model);
    Layout l{1, 1, 0, false, PlanRecompute::None, 2, 2};  // m = 8 / 2 = 4 micro-batches
    EXPECT_EQ(layout_violation(cfg, *arch, l, 2, 8), "");
    EXPECT_EQ(plan_stage_units(cfg, *arch, l).flat, static_cast<int64_t>(kStage0));
    const MemoryPrediction m = predict_memory(cfg, *arch, l);
    EXPECT_EQ(m.master, 4 * kStage0);
    EXPECT_EQ(m.grads, 4 * kStage0);
    EXPECT_EQ(m.optimizer, 8 * kStage0);
    // 1f1b: min(pp, m) = 2 micro-batches of the stage's 2 blocks in flight; gpipe: all 4
    const int slots = std::string(sched) == "1f1b" ? 2 : 4;
    EXPECT_EQ(plan_pipeline_slots(cfg, l), slots);
    // per slot the stage's 2 blocks and the model's non-block buffers (the whole model's less 4 d)
    const double whole = arch->activation_bytes(2, 32, 1, 4, 32);
    EXPECT_DOUBLE_EQ(m.activations, slots * (2 * d + whole - 4 * d) + 5 * 4 * 2 * 32) << sched;
    // time: half the work per rank, stretched by 1 / (1 - 1/5); 2 x 4 messages of 2 x 32 x 64 x 4
    // bytes over NVLink (tp x pp = 2 GPUs of a node of 8), stretched likewise
    const ClusterAssumption c = h100_cluster();
    Layout one = l;
    one.pp = 1;
    const TimePrediction t1 = predict_time(cfg, *arch, one, c, 8), t2 = predict_time(cfg, *arch, l, c, 8);
    EXPECT_DOUBLE_EQ(t2.bubble, 0.2);
    EXPECT_NEAR(t2.compute_s, t1.compute_s / 2 / 0.8, 1e-15);
    EXPECT_NEAR(t2.pp_comm_s, 2 * 4 * (c.intra.alpha_s + 16384 * c.intra.beta_s) / 0.8, 1e-15);
    EXPECT_DOUBLE_EQ(t2.step_s(), t2.compute_s + t2.pp_comm_s);
  }
}

TEST(Plan, PipelineLayoutsAndViolations) {
  const auto cfg = small({"model.n_layer=4", "parallel.pp=2"});
  const auto arch = parallel::make_architecture(cfg.model);
  // 1f1b needs m >= pp: pp 4 at micro_batch 4 has m = 2
  Layout l{1, 1, 0, false, PlanRecompute::None, 4, 4};
  EXPECT_NE(layout_violation(cfg, *arch, l, 4, 8).find("parallel"), std::string::npos);
  l.dp = 2, l.pp = 2, l.zero = 2, l.micro_batch = 2;  // ZeRO-2 with a pipeline: refused
  EXPECT_NE(layout_violation(cfg, *arch, l, 4, 8).find("parallel.zero = 2"), std::string::npos);
  l.dp = 1;  // 1 x 1 x 2 is not 4 GPUs
  EXPECT_NE(layout_violation(cfg, *arch, l, 4, 8).find("parallel.pp = 2 is not --gpus 4"), std::string::npos);
  // parallel.pp > 1 enumerates pp 1, 2, 4 (dividing 4 GPUs and 4 layers), each valid
  const auto all = enumerate_layouts(cfg, *arch, 4, 4);
  std::set<int> pps;
  for (const Layout& x : all) {
    pps.insert(x.pp);
    EXPECT_EQ(layout_violation(cfg, *arch, x, 4, 4), "") << x.describe();
    EXPECT_EQ(x.dp * x.tp * x.pp, 4);
  }
  EXPECT_EQ(pps, (std::set<int>{1, 2, 4}));
  // without parallel.pp the enumeration has no pipelines
  for (const Layout& x : enumerate_layouts(small({"model.n_layer=4"}), *arch, 4, 4)) EXPECT_EQ(x.pp, 1);
  EXPECT_EQ(configured_layout(cfg, 8).dp, 4);  // 8 / (tp 1 x pp 2)
}
