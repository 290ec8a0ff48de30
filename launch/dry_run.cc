// What: the memory plan of `bench step --dry-run` (see dry_run.h).
#include "launch/dry_run.h"

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "core/config.h"
#include "core/error.h"
#include "launch/plan.h"
#include "parallel/models/registry.h"

namespace mt::launch {

namespace {

struct Plan {
  int dp = 1, tp = 1;
  double params = 0, working = 0, grads = 0, optim = 0, acts = 0;
  double total() const { return params + working + grads + optim + acts; }
};

// the configured zero level and recomputation at dp x tp, by the planner's memory model
// (plan.h; the communication buffers and workspaces are not shown here)
Plan plan(const core::Config& cfg, const parallel::Architecture& arch, int dp, int tp, int pp) {
  Layout l;
  l.dp = dp;
  l.tp = tp;
  l.pp = pp;
  l.zero = cfg.parallel.zero;
  l.recompute = parse_plan_recompute(cfg.train.recompute);
  l.micro_batch = cfg.train.micro_batch;
  l.sp = cfg.parallel.sp && tp > 1;
  const MemoryPrediction m = predict_memory(cfg, arch, l);
  return {dp, tp, m.master, m.working, m.grads, m.optimizer, m.activations};
}

std::string gib(double b) { return fmt::format("{:.2f}", b / (1024.0 * 1024.0 * 1024.0)); }

}  // namespace

int cmd_bench_dry_run(const DryRunArgs& a) {
  core::Config cfg = core::load_config(a.config, a.overrides);
  const auto arch = parallel::make_architecture(cfg.model);
  const int tp = cfg.parallel.tp, pp = std::max(1, cfg.parallel.pp);
  const int world = a.world > 0 ? a.world : std::max(1, cfg.parallel.dp) * tp * pp;
  if (world % (tp * pp) != 0) {
    if (pp == 1) {
      throw core::Error(fmt::format("--world {} is not a multiple of parallel.tp = {}", world, tp))
          .with_yaml("parallel.tp")
          .with_hint("plan for a world of dp x tp ranks");
    }
    throw core::Error(fmt::format("--world {} is not a multiple of parallel.tp x parallel.pp = {} x {}", world, tp, pp))
        .with_yaml("parallel.pp")
        .with_hint("plan for a world of dp x tp x pp ranks");
  }
  if (const std::string bad = arch->tp_violation(tp); !bad.empty()) {
    throw core::Error(bad).with_yaml("parallel.tp").with_hint(fmt::format("valid sizes follow {}", arch->tp_constraint()));
  }
  if (cfg.train.micro_batch == core::kAutoMicroBatch)  // at the dp of this world
    cfg.train.micro_batch = core::auto_micro_batch(cfg, world / (tp * pp), pp);
  const bool cuda = cfg.train.device != "cpu";
  const bool bf16 = cfg.train.precision == "bf16" || (cfg.train.precision == "auto" && cuda);
  std::printf("bench step --dry-run: %s\n  model       %s\n", a.config.c_str(), arch->describe(tp).c_str());
  std::printf("  layout      world %d = dp %d x tp %d%s, ZeRO-%d, %s, micro_batch %d x seq_len %d, %s working copy, "
              "%s kernels, recompute %s\n",
              world, world / (tp * pp), tp, pp > 1 ? fmt::format(" x pp {} ({})", pp, cfg.parallel.pp_schedule).c_str() : "",
              cfg.parallel.zero, cfg.optim.name.c_str(), cfg.train.micro_batch,
              cfg.model.seq_len, bf16 ? "bf16" : "fp32 (no separate)", cuda ? "CUDA" : "CPU",
              cfg.train.recompute.c_str());
  if (pp > 1)  // the largest stage's parameters, the first stage's activations (plan.h)
    std::printf("  pipeline    the largest stage's parameters, gradients and optimizer state; the first stage's "
                "activations (%d micro-batch chunk(s) in flight)\n",
                plan_pipeline_slots(cfg, configured_layout(cfg, world)));
  std::printf("  memory per rank in GiB (nothing allocated; not counted: library workspaces, communication buckets,\n"
              "  data prefetch, fragmentation)\n");
  std::printf(pp > 1 ? "  %-20s %8s %8s %8s %8s %10s %12s %8s\n" : "  %-12s %8s %8s %8s %8s %10s %12s %8s\n", "layout", "params", "working", "grads", "optim",
              "activ.", "", "total");
  for (int t = 1; t <= world; ++t) {
    if (world % (t * pp) != 0 || !arch->tp_violation(t).empty() || (t > 64 && t != tp)) continue;
    const Plan p = plan(cfg, *arch, world / (t * pp), t, pp);
    std::printf(pp > 1 ? "  %-20s %8s %8s %8s %8s %10s %12s %8s%s\n" : "  %-12s %8s %8s %8s %8s %10s %12s %8s%s\n",
                (pp > 1 ? fmt::format("dp {} x tp {} x pp {}", p.dp, p.tp, pp) : fmt::format("dp {} x tp {}", p.dp, p.tp))
                    .c_str(),
                gib(p.params).c_str(), gib(p.working).c_str(), gib(p.grads).c_str(), gib(p.optim).c_str(),
                gib(p.acts).c_str(), "", gib(p.total()).c_str(), t == tp ? "   <- configured" : "");
  }
  return 0;
}

}  // namespace mt::launch
