// What: AdamW (decoupled weight decay) and SGD with momentum over a range of the flat
// parameter buffer, the learning-rate schedule, and the optimizer-state bookkeeping.
// Why: with ZeRO-1 a data-parallel rank updates only its shard of the flat
// buffer and keeps optimizer state only for it; without ZeRO the range is the whole buffer.
// Weight decay applies per element according to the parameter it belongs to.
#pragma once

#include <cstdint>
#include <vector>

#include "core/config.h"
#include "parallel/gpt.h"

namespace mt::parallel {

// Linear warmup to optim.lr, then cosine to lr * min_lr_ratio at train.steps (or constant).
double learning_rate(const core::OptimConfig& o, int64_t step, int64_t total_steps);

class Optimizer {
 public:
  // ranges: the [begin, end) element ranges of the flat buffer this rank updates (the whole
  // buffer without ZeRO; this rank's slice of every gradient bucket with ZeRO-1).
  Optimizer(const core::OptimConfig& cfg, const std::vector<ParamInfo>& params,
            const std::vector<std::pair<int64_t, int64_t>>& ranges);
  // params/grads point at the START of the flat buffers; only the ranges are touched.
  // t is the 1-based update count (AdamW bias correction).
  void step(float* params, const float* grads, float lr, int64_t t);
  size_t state_bytes() const { return (m_.size() + v_.size()) * sizeof(float); }
  int64_t num_elements() const { return static_cast<int64_t>(m_.size()); }
  // Flat optimizer state (for checkpoints): AdamW m then v, or SGD momentum.
  std::vector<float>& state_m() { return m_; }
  std::vector<float>& state_v() { return v_; }

 private:
  struct Segment {
    int64_t begin, end;  // absolute element range in the flat buffer
    int64_t state;       // offset of its state in m_ / v_
    bool decay;
  };
  core::OptimConfig cfg_;
  std::vector<Segment> segments_;
  std::vector<float> m_, v_;
};

}  // namespace mt::parallel
