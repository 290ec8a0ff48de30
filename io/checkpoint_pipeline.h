// What: the pipeline a checkpoint was written with, as its manifest records it:
//   "pipeline": {"pp": P, "virtual": V, "schedule": "1f1b", "vstages": [[b, e], ...]}
// (the block ranges [b, e) of the P x V virtual stages in pipeline order, split_layers'
// result). Checkpoints from before pipelines have no "pipeline": pp 1, one virtual stage of
// every layer. Shards stay one per world rank; world rank = (dp_index * pp + stage) * tp +
// tp_index (tp innermost, then pp, then dp), so a shard's stage follows from its rank, and
// its flat layout is layout_params(stage_specs(param_specs, stage's StageLayers), tp, ...).
// A tied embedding (GPT-2's wte, Llama with tie_embeddings) is held by the first and the
// last stage with equal values; the FIRST stage holding a parameter is authoritative
// (holder()), so resharding and export read each parameter from exactly one stage.
// Why: resharding (launch/train/reshard.h), `meshtrain export` (io/hf/hf_export.h) and
// `inspect` need the same reading of a checkpoint's pipeline; io cannot depend on launch.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "parallel/models/model.h"

namespace mt::io {

struct CheckpointPipeline {
  int pp = 1;              // pipeline stages (parallel.pp)
  int virtual_stages = 1;  // virtual stages per rank (parallel.pp_virtual)
  std::string schedule;    // parallel.pp_schedule ("" at pp 1 / old checkpoints)
  // blocks [begin, end) of each virtual stage, pipeline order; pp * virtual_stages entries
  std::vector<std::pair<int, int>> vstages;

  // No pipeline: pp 1, one virtual stage of all n_layer blocks.
  static CheckpointPipeline none(int n_layer);
  // The manifest's "pipeline" (validated: the vstages tile 0 .. n_layer, pp x virtual of
  // them), or none(n_layer) when absent. n_layer: the model's; < 0: the manifest's
  // model.n_layer (absent: not checked, and an old checkpoint's vstages stay empty, which
  // also means the whole model). Throws Error naming the file.
  static CheckpointPipeline from_manifest(const nlohmann::json& manifest, int n_layer, const std::string& file = "");
  nlohmann::json to_json() const;

  // The layers pp rank `stage` holds (parallel::stage_layers).
  parallel::StageLayers stage(int stage) const;
  // The first stage holding parameter `spec` (the authoritative copy of a tied embedding).
  int holder(const parallel::ParamSpec& spec, int n_layer) const;
  // World rank of (dp index, stage, tp index) in a mesh of this pp and `tp`.
  int rank_of(int dp_index, int stage, int tp_index, int tp) const { return (dp_index * pp + stage) * tp + tp_index; }
  // The stage of world rank `rank` in a mesh of this pp and `tp`.
  int stage_of_rank(int rank, int tp) const { return (rank / tp) % pp; }
  // "pp 2 (layers 0-3 | 4-7)": as log lines and `inspect` name it; equal strings, same pipeline.
  std::string describe() const;
  bool operator==(const CheckpointPipeline& o) const { return pp == o.pp && vstages == o.vstages; }
  bool operator!=(const CheckpointPipeline& o) const { return !(*this == o); }
};

// Whether two StageLayers hold the same layers (a model built for a stage vs. the manifest's).
bool same_stage(const parallel::StageLayers& a, const parallel::StageLayers& b, int n_layer);

}  // namespace mt::io
