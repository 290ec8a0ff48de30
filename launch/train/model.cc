// What: make_model and describe_model (see model.h).
#include "launch/train/model.h"

#include <fmt/format.h>

namespace mt::launch {

std::unique_ptr<TrainModel> make_model(const core::Config& cfg, int tp, int tp_rank, parallel::Communicator* tp_comm,
                                       int64_t flat_align, kernels::Ops* ops) {
  auto model = std::make_unique<parallel::Gpt>(cfg.model, tp, tp_rank, tp_comm, flat_align, ops);
  model->init_weights(cfg.train.seed);
  return model;
}

std::string describe_model(const core::Config& cfg, const TrainModel& model) {
  return fmt::format("{} parameters ({} layers, {} heads, width {}, vocab {} padded to {}), seq_len {}",
                     model.num_full_params(), cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd,
                     cfg.model.vocab_size, model.dims().Vp, cfg.model.seq_len);
}

}  // namespace mt::launch
