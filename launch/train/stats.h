// What: what a training step and a whole run report: StepStats (one optimizer step, the same
// loss, lr and norm on every rank; timings this rank's) and TrainSummary (Trainer::run()).
// Why: shared by the step, the run loop, the reporter and `meshtrain bench step`.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "core/memory.h"

namespace mt::launch {

// One pipeline stage's step (parallel.pp > 1), as its dp 0 / tp 0 rank measured it.
struct PipeStageStats {
  double run_ms = 0;       // the schedule's forwards and backwards
  double idle_ms = 0;      // of which blocked waiting for a neighbour: bubble = idle_ms / run_ms
  int slots = 0;           // micro-batches in flight at most (activation slots)
  double act_bytes = 0;    // activations of all slots at the step's end
};

struct StepStats {
  int64_t step = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  // train.distill: the mean cross-entropy and KL(teacher || student) parts of `loss`, the
  // total optimized ((1 - alpha) ce_loss + alpha T^2 kd_loss); NaN without a teacher
  double ce_loss = std::numeric_limits<double>::quiet_NaN(), kd_loss = std::numeric_limits<double>::quiet_NaN();
  double ms = 0, tokens_per_s = 0;
  double comm_ms = 0, exposed_comm_ms = 0, data_ms = 0, compute_ms = 0;
  double imbalance = 1.0;  // max / mean compute time of the dp replicas
  std::vector<int64_t> replica_tokens;  // target tokens each dp replica trained on
  int64_t tokens = 0;      // target tokens of the global batch
  double pad_fraction = 0;  // positions without a target / all positions of the global batch (padding)
  bool skipped = false;  // non-finite gradient norm, update dropped (train.nonfinite=skip)
  // this rank's device memory at the highest total during the step, by category (what was
  // resident at the step's peak; core/memory.h)
  core::MemoryBreakdown mem;
  std::vector<PipeStageStats> pp;  // per pipeline stage (empty without a pipeline)
};

// One eval (Trainer::evaluate): the mean loss and the exact counts behind the accuracy
// (parallel/models/accuracy.h), identical on every rank.
struct EvalResult {
  double loss = 0;
  int64_t targets = 0, top1 = 0, top5 = 0;  // positions with a target; hits
  double acc() const { return targets > 0 ? static_cast<double>(top1) / static_cast<double>(targets) : 0.0; }
  double acc_top5() const { return targets > 0 ? static_cast<double>(top5) / static_cast<double>(targets) : 0.0; }
};

struct TrainSummary {
  int64_t steps_done = 0;
  double final_loss = 0;
  std::optional<double> final_eval_loss;
  std::optional<EvalResult> final_eval;
  std::optional<double> data_entropy;
  double tokens_per_s = 0, wall_s = 0;
  bool early_stopped = false;
  bool preempted = false;
  int64_t skipped_steps = 0;   // stopped by SIGTERM/SIGUSR1 after writing a checkpoint
  std::vector<double> losses;  // per step, identical on every rank
};

}  // namespace mt::launch
