// What: the Trainer, one per rank: it builds the dp x tp mesh and its sub-communicators, the
// model slice (make_model), the gradient buckets (GradSync), the optimizer (sharded with
// ZeRO-1), the data source and its loader, and owns the pieces that use them:
//   step.h              Stepper: one optimizer step (forward/backward, sync, norm, update)
//   run_loop.cc         run(): resume, steps, evals, early stopping, preemption, checkpoints
//   reporter.h          what the user sees: log lines, progress line, metrics.jsonl, tb/, summary.json
//   checkpoint_manager.h save / restore (reshard.h: the element-wise resharding)
//   train_state.h       the state a checkpoint carries besides the tensors
//   fault_injection.h   the test-only faults of the config's debug keys
//   model.h, stats.h, train_util.h: the model type, StepStats / TrainSummary, free helpers
// Why: the global batch of step s is a fixed set of samples whatever dp is (io/loader.h plans
// it and gives each dp replica its share, prefetched by a background thread); each token's
// loss is weighted by 1 / (the step's global count of target tokens), so the gradients summed
// over ranks are exactly the full-batch gradient. After each step the ranks exchange their
// compute times (the dynamic schedule's throughput and the `imbalance` metric).
// Devices: the model, gradients and optimizer state live on one core::Device (train.device)
// and run through its kernels::Ops. On a GPU the dp and tp collectives on device buffers go
// through parallel::make_device_communicator (NCCL or host staging); host scalars (loss sums,
// flags, checksums) keep using the MPI communicators.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/device.h"
#include "io/data_source.h"
#include "io/loader.h"
#include "kernels/ops.h"
#include "kernels/profiled_ops.h"
#include "launch/train/fault_injection.h"
#include "launch/train/model.h"
#include "launch/train/stats.h"
#include "launch/train/train_state.h"
#include "launch/train/train_util.h"
#include "parallel/communicator.h"
#include "parallel/grad_sync.h"
#include "parallel/mesh.h"
#include "parallel/pipeline/runner.h"
#include "parallel/optimizer.h"

namespace mt::launch {

class CheckpointManager;
class Stepper;
class Teacher;

class Trainer {
 public:
  // device: where the model lives; null = core::get_device(cfg.train.device). Launchers pass
  // core::select_device(...) so that each rank of a node gets its own GPU.
  // profile: when set, every kernel call is timed into it (kernels/profiled_ops.h; bench step
  // --profile); it must outlive the trainer.
  Trainer(const core::Config& cfg, parallel::Communicator& world, core::Device* device = nullptr,
          kernels::OpProfile* profile = nullptr);
  ~Trainer();

  // Runs cfg.train.steps steps with eval, logging and the run directory.
  TrainSummary run();
  // Called on rank 0 by run() once the run directory is committed to (after a resume was
  // accepted, when config.yaml is written); cmd_train records the launch there.
  std::function<void()> on_run_start;
  // One optimizer step (no logging); `step` selects the global batch; lr: instead of the
  // schedule's (lr-find).
  StepStats step(int64_t step, std::optional<double> lr = std::nullopt);
  // Mean loss over the eval set (identical on every rank).
  double evaluate();
  // The same, or nullopt (on every rank) once any rank has a preemption signal pending and
  // `interruptible` is set (checked before each eval batch: a collective).
  std::optional<double> evaluate_unless_preempted(bool interruptible);
  // The last completed eval's loss and accuracy counts (eval_acc, eval_acc_top5).
  const EvalResult& last_eval() const { return last_eval_; }

  // Checkpoints (checkpoint_manager.h). save: every rank writes its shard of the
  // state after `steps_done` steps. restore: loads cfg.checkpoint.resume ("auto" = newest
  // valid checkpoint, falling back to older ones) and returns the step to continue from
  // (0 if "auto" found none). Both are collective over the world.
  void save_checkpoint(int64_t steps_done);
  int64_t restore_checkpoint();
  // model.init_from = hf:DIR: loads the Hugging Face weights (io/hf/hf_import.h) unless a
  // checkpoint was restored. Collective (every dp replica must load the same parameters).
  void load_initial_weights();
  std::string checkpoint_dir() const;

  core::Device& device() const { return *device_; }
  const kernels::Ops& ops() const { return *ops_; }
  // Per-rank peak GFLOP/s for MFU: run.peak_gflops, else default_peak_gflops (CUDA: H100
  // dense bf16 989e3, fp32 67e3), else (CPU) the measured sgemm rate.
  double peak_gflops_per_rank() const;
  const TrainModel& model() const { return *model_; }
  TrainModel& model() { return *model_; }
  const parallel::Mesh& mesh() const { return *mesh_; }
  int64_t tokens_per_step() const;  // nominal (documents mode: data.batch_tokens; packed: positions)
  io::Loader& loader() { return *loader_; }
  // An FNV-1a hash of this rank's parameter bytes.
  uint64_t param_checksum() const;
  std::string memory_report() const;

 private:
  friend class RunLoop;  // run() (run_loop.cc): the run's state and decisions around the steps
  void verify_identical_init();
  // Whether any rank has received SIGTERM/SIGUSR1 (an all-reduce of the flag).
  bool agree_preemption();

  core::Config cfg_;
  parallel::Communicator& world_;
  core::Device* device_;
  std::unique_ptr<kernels::Ops> ops_;  // declared before everything that uses it
  std::unique_ptr<parallel::Mesh> mesh_;
  parallel::MeshComms comms_;
  // Collectives on device buffers (null on the CPU: the MPI groups in comms_ serve).
  std::unique_ptr<parallel::Communicator> dp_dev_, tp_dev_, pp_dev_, pp_bwd_;
  std::unique_ptr<TrainModel> model_;  // make_model (model.h)
  // parallel.pp > 1: the virtual stages' blocks (split_layers) and this rank's runner
  std::vector<std::pair<int, int>> vstages_;
  std::unique_ptr<parallel::PipelineRunner> pipe_;
  std::unique_ptr<parallel::DataParallelSync> sync_;
  std::unique_ptr<parallel::Optimizer> optim_;
  std::unique_ptr<io::DataSource> data_;
  std::unique_ptr<io::Loader> loader_;  // after data_: it reads from it
  io::Batch eval_batch_;
  int dp_ = 1, dp_rank_ = 0, tp_ = 1, tp_rank_ = 0, pp_ = 1, pp_rank_ = 0;
  FaultInjector faults_;  // test-only (the config's debug keys)
  std::unique_ptr<Teacher> teacher_;  // train.distill.teacher (distill.h), null without
  std::unique_ptr<Stepper> stepper_;  // after everything it works on
  std::unique_ptr<CheckpointManager> checkpoints_;  // (likewise)
  TrainState state_;  // carried by checkpoints
  EvalResult last_eval_;
  // this process's start (the trainer's construction), for the run totals' wall time
  Clock::time_point started_ = Clock::now();
};

}  // namespace mt::launch
