// What: resharding a checkpoint element by element: a checkpoint written under one dp x tp
// layout (with or without ZeRO-1) loads under any other valid layout. Each rank reads the old
// shards, maps every element of every old tp slice to its position in the full tensor
// and keeps those that its new slice owns, through each parameter's Partition
// (parallel/models/partition.h: copy_shared_elements); the old layout is the model's own
// parameter specs at the old tp size (layout_params), so any architecture reshards. The
// optimizer state is rebuilt the same way from the dp shards (all of them under ZeRO-1; one
// replica's otherwise, as each holds the whole state of its tp slice).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "io/checkpoint_pipeline.h"
#include "parallel/models/model.h"

namespace mt::launch {

// A checkpoint's parallel layout and shards, as its manifest records them.
struct CheckpointLayout {
  int world = 1, dp = 1, tp = 1, zero = 0;
  // the pipeline (pp, virtual stages and their layers; pp 1 for checkpoints without one);
  // world = dp x pipeline.pp x tp, shard r's stage is pipeline.stage_of_rank(r, tp)
  io::CheckpointPipeline pipeline;
  int pp() const { return pipeline.pp; }
  // ZeRO-2/3 at dp > 1: the flat layout aligns each layer (layout_params align_units)
  bool units_aligned() const { return zero >= 2 && dp > 1; }
  std::vector<std::string> files;    // per old world rank: the shard's path
  std::vector<uint64_t> checksums;   // ... and its checksum
  // From the manifest of checkpoint directory `dir`; n_layer: the model's (< 0: the
  // manifest's), to check the pipeline's stages against.
  static CheckpointLayout from_manifest(const std::string& dir, const nlohmann::json& manifest, int n_layer = -1);
};

// This rank's share of a resharded checkpoint, ready to load.
struct ReshardedState {
  std::vector<float> params;  // the flat parameter buffer (model.num_local_params())
  std::vector<float> m, v;    // optimizer state over owned_ranges (Optimizer::load_state); v empty without adam
};

// Reads the old shards of `old` and cuts out the slice of `model` (the new layout: its tp rank,
// its pipeline stage's parameters (model.stage()) and their flat layout) and the optimizer
// state of this rank's `owned_ranges` (num_state elements; adam: also the second moment). The
// checkpoint holds the same architecture and shapes (the caller checked its manifest).
ReshardedState reshard_state(const CheckpointLayout& old, const parallel::Model& model,
                                 const std::vector<std::pair<int64_t, int64_t>>& owned_ranges, int64_t num_state,
                                 bool adam);

}  // namespace mt::launch
