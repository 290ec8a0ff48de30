// What: resharding a checkpoint element by element: a checkpoint written under one dp x tp
// layout (with or without ZeRO-1) loads under any other valid layout. Each rank reads the old
// shards, maps every element of every old tp slice to its position in the full tensor
// (parallel/gpt.h: full_position) and keeps those that its new slice owns; the optimizer
// state is rebuilt the same way from the dp shards (all of them under ZeRO-1; one replica's
// otherwise, as each holds the whole state of its tp slice).
// Why isolated: this is the one place that knows how GPT's parameters are cut across tp
// ranks (make_gpt_dims, gpt_param_layout, full_position, TpSplit). A model-agnostic
// partition description will replace it; nothing else in the trainer depends on those.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "parallel/gpt.h"

namespace mt::launch {

// A checkpoint's parallel layout and shards, as its manifest records them.
struct CheckpointLayout {
  int world = 1, dp = 1, tp = 1, zero = 0;
  std::vector<std::string> files;    // per old world rank: the shard's path
  std::vector<uint64_t> checksums;   // ... and its checksum
  // From the manifest of checkpoint directory `dir`.
  static CheckpointLayout from_manifest(const std::string& dir, const nlohmann::json& manifest);
};

// This rank's share of a resharded checkpoint, ready to load.
struct ReshardedState {
  std::vector<float> params;  // the flat parameter buffer (model.num_local_params())
  std::vector<float> m, v;    // optimizer state over owned_ranges (Optimizer::load_state); v empty without adam
};

// Reads the old shards of `old` and cuts out the slice of `model` (the new layout: its tp rank
// and flat parameter layout) and the optimizer state of this rank's `owned_ranges` (num_state
// elements; adam: also the second moment). model_cfg: the model sizes (the same in both).
ReshardedState reshard_gpt_state(const CheckpointLayout& old, const core::ModelConfig& model_cfg,
                                 const parallel::Gpt& model,
                                 const std::vector<std::pair<int64_t, int64_t>>& owned_ranges, int64_t num_state,
                                 bool adam);

}  // namespace mt::launch
