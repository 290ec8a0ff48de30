// What: how a pipeline splits the model's blocks into stages. split_layers() cuts the blocks
// into pp x virtual contiguous virtual stages, in pipeline order; rank s of the pp group runs
// virtual stages s, s + pp, s + 2 pp, ... (interleaved schedules; one each otherwise), so the
// first holds the embedding and the last the final norm and head (stage_layers()).
// Why: every stage owns only its parameters (Model built with its StageLayers), and the
// checkpoint manifest records the virtual stages so that any pp layout reshards from it.
#pragma once

#include <utility>
#include <vector>

#include "parallel/models/model.h"

namespace mt::parallel {

// The blocks [begin, end) of each of the pp * virtual_stages virtual stages, in pipeline
// order, covering 0 .. n_layer. pp_layers (parallel.pp_layers) non-empty: the layer count of
// each of the pp stages (virtual_stages must be 1), else balanced by the model's cost (the
// embedding counts on the first stage, the head on the last); interleaved (virtual_stages >
// 1): equal blocks per virtual stage. Throws core::Error naming the keys on bad input.
std::vector<std::pair<int, int>> split_layers(const Architecture& arch, int pp, int virtual_stages,
                                              const std::vector<int>& pp_layers);

// The StageLayers of pp rank `stage` given all virtual stages (split_layers' result).
StageLayers stage_layers(const std::vector<std::pair<int, int>>& vstages, int pp, int stage);

}  // namespace mt::parallel
