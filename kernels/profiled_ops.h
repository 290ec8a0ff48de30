// What: OpProfile, a per-op time breakdown of the kernels a model runs, and profile_ops(),
// which wraps any Ops so that every kernel call is timed by a pair of device events.
// Why: "where does the step go" is the first question on a new device (GPU first light) and
// after every kernel change; nsys is not on every machine we are lent, and host timers around
// asynchronous CUDA launches measure the launch, not the kernel. Device events on the compute
// stream time the kernel itself on CUDA and are the host clock on the CPU, so one table reads
// the same on both. `meshtrain bench step --profile` prints it.
//
// Cost: two event records per kernel call (a few microseconds on CUDA); the events are pooled
// and read back only in collect(), after the device has synchronized. Off unless asked for.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "kernels/ops.h"

namespace mt::kernels {

struct OpTime {
  std::string name;   // the Ops method: "matmul_forward", "attention_backward", ...
  int64_t calls = 0;  // calls since the last reset
  double ms = 0;      // summed kernel time of those calls
};

class OpProfile {
 public:
  explicit OpProfile(core::Device& device) : device_(device) {}
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  // begin() records a start event and returns its slot; end(slot) records the stop event.
  size_t begin(const char* name);
  void end(size_t slot);
  // Reads back every recorded pair (synchronizes the device first) into the totals; with
  // `keep` false the pairs are dropped (warm-up steps), and the pool is reused either way.
  void collect(bool keep = true);
  void reset();                       // zero the totals
  std::vector<OpTime> totals() const;  // by time, largest first
  double total_ms() const;

 private:
  struct Slot {
    const char* name = nullptr;
    std::unique_ptr<core::Event> start, stop;
  };
  core::Device& device_;
  std::vector<Slot> slots_;  // the pool; [0, used_) hold this window's calls
  size_t used_ = 0;
  std::vector<OpTime> totals_;
};

// `inner` with every kernel call timed into `profile` (which must outlive the result).
std::unique_ptr<Ops> profile_ops(std::unique_ptr<Ops> inner, OpProfile* profile);

// The table bench step prints: op, calls per step, ms per step, share of the op time and of
// `step_ms` (0: leave that column out).
std::string format_op_profile(const std::vector<OpTime>& ops, int steps, double step_ms);

}  // namespace mt::kernels
