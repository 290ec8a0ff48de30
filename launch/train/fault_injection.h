// What: test-only fault injection in a training step, from the config's debug keys:
//  - data.debug_slow_rank / data.debug_slow_factor: that dp replica sleeps after its compute
//    so that it takes debug_slow_factor x as long (heterogeneous ranks for the dynamic schedule);
//  - train.debug_nan_step / train.debug_nan_steps: the gradients of that many steps from
//    debug_nan_step on are poisoned with a NaN on every rank (a consistent non-finite norm for
//    train.nonfinite and train.max_skips_in_row).
// Why: one seam. The step calls the two hooks unconditionally; what they do (usually nothing)
// is decided here, so the step holds no debug logic.
#pragma once

#include <cstdint>
#include <string>

#include "core/config.h"
#include "core/tensor.h"

namespace mt::launch {

class FaultInjector {
 public:
  explicit FaultInjector(const core::Config& cfg);

  // After the micro-batches' compute (the device synchronized): returns the compute time to
  // report, after sleeping on the slowed dp replica.
  double after_compute(int dp_rank, double compute_ms) const;
  // Before the gradient norm of step `step`: poisons `grads` (device memory) in the steps asked for.
  // grad: this rank's first owned gradient element (device memory of dev)
  void before_norm(int64_t step, core::Device& dev, float* grad) const;
  // The start-up log's note of an active slowdown ("; debug: dp replica 1 runs 3x slower"), or "".
  std::string describe() const;

 private:
  int slow_rank_ = -1;
  double slow_factor_ = 1.0;
  int64_t nan_step_ = -1, nan_steps_ = 0;
};

}  // namespace mt::launch
