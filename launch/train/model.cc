// What: make_model and describe_model (see model.h).
#include "launch/train/model.h"

namespace mt::launch {

parallel::ModelContext model_context(const core::Config& cfg, int tp, int tp_rank, parallel::Communicator* tp_comm,
                                     int dp, kernels::Ops* ops, const parallel::StageLayers& stage) {
  parallel::ModelContext ctx;
  ctx.tp = tp;
  ctx.tp_rank = tp_rank;
  ctx.tp_comm = tp_comm;
  parallel::model_context_for_zero(ctx, cfg.parallel.zero, dp);
  ctx.ops = ops;
  ctx.recompute = parallel::parse_recompute(cfg.train.recompute);
  ctx.sp = cfg.parallel.sp;
  ctx.stage = stage;
  return ctx;
}

std::unique_ptr<TrainModel> make_model(const core::Config& cfg, const parallel::Architecture& arch, int tp, int tp_rank,
                                       parallel::Communicator* tp_comm, int dp, kernels::Ops* ops,
                                       const parallel::StageLayers& stage) {
  return arch.build(model_context(cfg, tp, tp_rank, tp_comm, dp, ops, stage));
}

std::string describe_model(const core::Config&, const TrainModel& model) {
  return model.arch().describe(model.tp().size());
}

}  // namespace mt::launch
