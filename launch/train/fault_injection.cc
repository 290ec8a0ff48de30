// What: FaultInjector (see fault_injection.h).
#include "launch/train/fault_injection.h"

#include <chrono>
#include <cmath>
#include <thread>

#include <fmt/format.h>

#include "launch/train/train_util.h"

namespace mt::launch {

FaultInjector::FaultInjector(const core::Config& cfg)
    : slow_rank_(cfg.data.debug_slow_rank),
      slow_factor_(cfg.data.debug_slow_factor),
      nan_step_(cfg.train.debug_nan_step),
      nan_steps_(cfg.train.debug_nan_steps) {}

double FaultInjector::after_compute(int dp_rank, double compute_ms) const {
  if (dp_rank != slow_rank_ || slow_factor_ <= 1.0) return compute_ms;
  // testing heterogeneous ranks: this replica takes debug_slow_factor x its compute time
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double, std::milli>((slow_factor_ - 1.0) * compute_ms));
  return compute_ms + ms_between(t0, Clock::now());
}

void FaultInjector::before_norm(int64_t step, core::Device& dev, float* grad) const {
  if (nan_step_ >= 0 && step >= nan_step_ && step - nan_step_ < nan_steps_) {  // on every rank: a consistent fault
    const float nan = NAN;
    dev.copy(grad, &nan, sizeof(nan));
  }
}

std::string FaultInjector::describe() const {
  return slow_rank_ >= 0 ? fmt::format("; debug: dp replica {} runs {}x slower", slow_rank_, slow_factor_) : "";
}

}  // namespace mt::launch
