// What: AdamW (decoupled weight decay) and SGD with momentum over a range of the flat
// parameter buffer, the learning-rate schedule, and the optimizer-state bookkeeping.
// Why: with ZeRO-1 a data-parallel rank updates only its shard of the flat
// buffer and keeps optimizer state only for it; without ZeRO the range is the whole buffer.
// Weight decay applies per element according to the parameter it belongs to.
// Devices: the state lives on the Ops' device and the updates are Ops calls (fused AdamW/SGD
// kernels on CUDA that also write the bf16 working copy of the parameters).
#pragma once

#include <cstdint>
#include <vector>

#include "core/config.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "parallel/dp_sync.h"
#include "parallel/models/model.h"

namespace mt::parallel {

// Linear warmup to optim.lr, then cosine to lr * min_lr_ratio at train.steps (or constant).
double learning_rate(const core::OptimConfig& o, int64_t step, int64_t total_steps);

// The flat-buffer intervals whose optimizer state an Optimizer over `ranges` keeps, in the
// order of that state (each range's intersections with the parameters; padding has none).
std::vector<std::pair<int64_t, int64_t>> state_segments(const std::vector<ParamInfo>& params,
                                                        const std::vector<std::pair<int64_t, int64_t>>& ranges);

class Optimizer {
 public:
  // ranges: the [begin, end) element ranges of the flat buffer this rank updates (the whole
  // buffer without ZeRO; this rank's slice of every gradient bucket with ZeRO-1).
  // ops: where the state lives and the kernels run (null = the CPU reference kernels).
  Optimizer(const core::OptimConfig& cfg, const std::vector<ParamInfo>& params,
            const std::vector<std::pair<int64_t, int64_t>>& ranges, kernels::Ops* ops = nullptr);
  // params/grads point at the START of the flat buffers (device memory of the ops); only the
  // ranges are touched. t is the 1-based update count (AdamW bias correction). `working`, if
  // not null, is the start of the flat working copy (ops' working dtype), updated alongside.
  void step(float* params, void* working, const float* grads, float lr, int64_t t);
  // The same where each owned range's elements live elsewhere (DataParallelSync::owned_data:
  // ZeRO-2/3 shards), one RangeData per range given to the constructor.
  void step(const std::vector<RangeData>& data, float lr, int64_t t);
  void step(float* params, const float* grads, float lr, int64_t t) { step(params, nullptr, grads, lr, t); }
  size_t state_bytes() const { return m_.nbytes() + (has_v() ? v_.nbytes() : 0); }
  int64_t num_elements() const { return num_state_; }
  // Flat optimizer state (for checkpoints): AdamW m then v, or SGD momentum (no v). Device
  // memory of the ops, num_elements() floats each.
  bool has_v() const { return v_.defined(); }
  float* state_m() { return m_.f32(); }
  float* state_v() { return has_v() ? v_.f32() : nullptr; }
  // Host copies, and loading from host copies (sizes must be num_elements(); v ignored
  // without AdamW).
  std::vector<float> state_m_host() const;
  std::vector<float> state_v_host() const;
  void load_state(const std::vector<float>& m, const std::vector<float>& v);

 private:
  struct Segment {
    int64_t begin, end;  // absolute element range in the flat buffer
    int64_t state;       // offset of its state in m_ / v_
    bool decay;
    int range;           // the owned range it lies in
  };
  core::OptimConfig cfg_;
  kernels::Ops* ops_;
  std::vector<Segment> segments_;
  int64_t num_state_ = 0;
  core::Tensor m_, v_;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
};

}  // namespace mt::parallel
