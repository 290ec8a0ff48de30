// What: Stepper, one optimizer step: this dp replica's share of the step's global batch from
// the loader, forward and backward over its micro-batches (the bucketed gradient all-reduce or
// reduce-scatter overlapping the last backward), the exchange of the replicas' compute times,
// the global gradient norm, the non-finite policy (train.nonfinite), clipping, the learning
// rate and the update (with ZeRO-1 the updated slices all-gathered).
// Why: each token's loss is weighted by 1 / (the step's global count of target tokens), so
// the gradients summed over ranks are exactly the full-batch gradient, whatever dp is. The
// gradient norm adds per-range device sums in a fixed order on the host, so it is the same on
// every rank and every run. Test-only faults enter through the FaultInjector's two hooks.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "core/config.h"
#include "core/device.h"
#include "core/tensor.h"
#include "io/loader.h"
#include "kernels/ops.h"
#include "launch/train/distill.h"
#include "launch/train/fault_injection.h"
#include "launch/train/model.h"
#include "launch/train/stats.h"
#include "parallel/communicator.h"
#include "parallel/grad_sync.h"
#include "parallel/mesh.h"
#include "parallel/optimizer.h"
#include "parallel/pipeline/runner.h"

namespace mt::launch {

// What a step works on; all owned by the Trainer, which outlives its Stepper.
struct StepParts {
  const core::Config& cfg;
  parallel::Communicator& world;
  const parallel::Mesh& mesh;
  const parallel::MeshComms& comms;  // the dp and tp groups for host scalars (MPI)
  core::Device& device;
  kernels::Ops& ops;
  TrainModel& model;
  parallel::DataParallelSync& sync;
  parallel::Optimizer& optim;
  io::Loader& loader;
  const FaultInjector& faults;
  // parallel.pp > 1: runs the micro-batches through the stages (null without a pipeline), and
  // the pp group on device buffers (the tied embedding's gradient exchange)
  parallel::PipelineRunner* pipe = nullptr;
  parallel::Communicator* pp_dev = nullptr;
  // train.distill.teacher: runs forward on each micro-batch before the student (null: plain
  // cross-entropy)
  Teacher* teacher = nullptr;
};

class Stepper {
 public:
  explicit Stepper(const StepParts& parts);

  // One optimizer step (no logging); `step` selects the global batch. Throws on a non-finite
  // gradient norm under train.nonfinite=stop; under skip the update is dropped and reported.
  // lr: this step's learning rate instead of the schedule's (meshtrain lr-find).
  StepStats step(int64_t step, std::optional<double> lr = std::nullopt);

 private:
  // Forward and backward over this replica's micro-batches; the gradient sync starts on the
  // last backward. Returns the share's sum of token losses; *compute_ms: the time it took.
  // With a teacher, kd[0], kd[1] get the share's sums of the cross-entropy and KL parts.
  double forward_backward(const io::Batch& batch, double* compute_ms, double* kd);
  // The same through the pipeline's stages (parallel.pp > 1).
  double pipeline_forward_backward(const io::Batch& batch);
  // A head tied to the embedding: the first and the last stage each hold a copy whose
  // gradients are summed between them (then both see the same update).
  void sum_tied_grads();
  // Every stage's schedule timing and activation slots of the last step (collective).
  std::vector<PipeStageStats> pipeline_stats();
  // After the micro-batches: all-gathers the replicas' cost, compute time and tokens; returns
  // the imbalance (max / mean compute time).
  double exchange_work(int64_t step, const io::Batch& batch, double compute_ms, std::vector<int64_t>* tokens);
  // Sum of squared gradients over the whole model (identical on every rank).
  double grad_sumsq();
  // Clips to optim.grad_clip, updates this rank's ranges with learning rate `lr`, and
  // brings every replica's parameters (and working copy) up to date.
  void update(int64_t step, double grad_norm, double lr);
  double tp_blocked_s() const;  // host time blocked in the model's tensor-parallel collectives so far

  StepParts p_;
  int dp_ = 1, dp_rank_ = 0, tp_ = 1, tp_rank_ = 0, pp_ = 1, pp_rank_ = 0;
  int tied_ = -1;          // local index of the tied embedding held by the first and last stage, or -1
  core::Tensor tied_recv_;  // its peer's gradient
  // gradient norm: the flat ranges summed (in this order), one device double each
  std::vector<std::pair<int64_t, int64_t>> norm_ranges_;
  std::vector<const float*> norm_ptrs_;  // where each norm range's gradients live
  // where the owned ranges' elements live (the sync's buffers never move: asked once, not per step)
  std::vector<parallel::RangeData> owned_;
  core::Tensor norm_partials_;
  std::vector<double> norm_host_;  // their host copy (allocated once, not per step)
};

}  // namespace mt::launch
