// What: the model the trainer trains: its type and the one function that builds it.
// Why: the trainer reaches the model through its public training methods only (forward,
// backward, zero_grads, params, grads, working_copy, refresh_working_params, params_info,
// num_local_params, num_full_params, flops_per_token, activation_bytes, working_copy_bytes,
// loss_tokens) and its Architecture (parallel/models/model.h); model.arch picks it from the
// registry (parallel/models/registry.h), so nothing here knows which architecture it is.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/config.h"
#include "kernels/ops.h"
#include "parallel/communicator.h"
#include "parallel/dp_sync.h"
#include "parallel/models/registry.h"

namespace mt::launch {

using TrainModel = parallel::Model;

// This rank's slice of `arch` (which must be held by a shared_ptr, as make_architecture
// gives it; the model keeps it alive) for tp rank `tp_rank` of `tp`, with zero parameters: the
// caller builds its data-parallel sync (parallel::make_dp_sync, which holds ZeRO-3's parameters),
// then calls init_weights(train.seed) (the same parameters whatever the layout). tp_comm: the tp
// group on device buffers, null at tp = 1; dp: the data-parallel size (the flat buffers' padding,
// and with parallel.zero 2/3 the unit alignment). ops must outlive it.
// stage: the layers this rank holds (parallel.pp > 1; default: all).
parallel::ModelContext model_context(const core::Config& cfg, int tp, int tp_rank, parallel::Communicator* tp_comm,
                                     int dp, kernels::Ops* ops, const parallel::StageLayers& stage = {});
std::unique_ptr<TrainModel> make_model(const core::Config& cfg, const parallel::Architecture& arch, int tp, int tp_rank,
                                       parallel::Communicator* tp_comm, int dp, kernels::Ops* ops,
                                       const parallel::StageLayers& stage = {});

// The start-up log's description of the model, after "model: ".
std::string describe_model(const core::Config& cfg, const TrainModel& model);

}  // namespace mt::launch
