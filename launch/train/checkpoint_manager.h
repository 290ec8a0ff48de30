// What: the trainer's checkpoints (see io/checkpoint.h for the on-disk protocol). save: every
// rank writes its own shard (parameters, optimizer state over its ranges, the loader's
// position); rank 0 gathers the checksums, writes the manifest (layout, model sizes, the
// TrainState, the resolved config) and publishes the checkpoint by rename. restore: picks
// checkpoint.resume ("auto": the newest checkpoint whose shards all verify, falling back to
// older ones and naming what was wrong with each), checks the model sizes, and loads this
// rank's shard, or reshards (reshard.h) when the layout (dp, pp and the stages' layers, tp,
// ZeRO) or the optimizer state's cut differ.
// Pipelines: every rank writes its own stage's flat parameters and optimizer state (shards
// stay one per world rank, rank = (dp_index * pp + stage) * tp + tp_index); the manifest's
// "pipeline" records pp, the virtual stages and their layers (io/checkpoint_pipeline.h).
// Devices: parameters and optimizer state live on the trainer's device; they are read and
// written here through host copies (on the CPU the buffers are used in place).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/device.h"
#include "io/checkpoint_pipeline.h"
#include "io/loader.h"
#include "launch/train/model.h"
#include "launch/train/train_state.h"
#include "launch/train/train_util.h"
#include "parallel/communicator.h"
#include "parallel/grad_sync.h"
#include "parallel/mesh.h"
#include "parallel/optimizer.h"

namespace mt::launch {

class CheckpointManager {
 public:
  // All references are the Trainer's and outlive this. process_start: this process's start,
  // counted into the run totals' wall time. pipeline: the run's pp, virtual stages and their
  // layers (split_layers; io::CheckpointPipeline::none(n_layer) without a pipeline); `model`
  // must hold this rank's stage of it (checked), world = mesh.dp() x pipeline.pp x mesh.tp().
  CheckpointManager(const core::Config& cfg, parallel::Communicator& world, const parallel::Mesh& mesh,
                    core::Device& device, TrainModel& model, parallel::Optimizer& optim,
                    parallel::DataParallelSync& sync, io::Loader& loader, Clock::time_point process_start,
                    io::CheckpointPipeline pipeline);

  // checkpoint.dir, or <run.dir>/checkpoints.
  std::string dir() const;
  // Collective: the checkpoint after `steps_done` steps, with `state` in its manifest.
  void save(int64_t steps_done, const TrainState& state);
  // Collective: loads cfg.checkpoint.resume into the model, optimizer, loader and *state;
  // returns the step to continue from (0 if "auto" found none).
  int64_t restore(TrainState* state);
  // Rank 0, once the run is committed to: moves checkpoints newer than `step` aside (they
  // belong to a run this one replaces), with a warning.
  void supersede_after(int64_t step) const;
  // Whether restore() loaded a checkpoint (a checkpoint of step 0 included).
  bool restored() const { return restored_; }

 private:
  // Collective: if `err` is non-empty on any rank (on rank 0 alone: root_only), rank 0 removes
  // `tmp_dir` and every rank throws AgreedError with the first failing rank's message.
  void fail_together(const std::string& err, const std::string& tmp_dir, bool root_only = false) const;
  // The checkpoint to resume from ("" when resume=auto finds none); throws when an explicit
  // checkpoint.resume is not a valid checkpoint.
  std::string choose() const;
  // Throws unless the checkpoint's model sizes are this run's.
  void check_model(const std::string& chosen, const nlohmann::json& manifest) const;
  // Rank 0: warns when the learning-rate schedule's settings differ from the checkpoint's.
  void warn_schedule_change(const std::string& chosen, const nlohmann::json& manifest) const;
  // Loads this rank's own shard (same layout); false if its optimizer state is cut
  // differently (then the caller reshards).
  bool load_own_shard(const std::string& chosen, const nlohmann::json& manifest);
  void load_resharded(const std::string& chosen, const nlohmann::json& manifest);

  const core::Config& cfg_;
  parallel::Communicator& world_;
  const parallel::Mesh& mesh_;
  core::Device& device_;
  TrainModel& model_;
  parallel::Optimizer& optim_;
  parallel::DataParallelSync& sync_;
  io::Loader& loader_;
  Clock::time_point process_start_;
  io::CheckpointPipeline pipeline_;
  bool restored_ = false;
};

}  // namespace mt::launch
