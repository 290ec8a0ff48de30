// What: TrainState's manifest JSON (see train_state.h).
#include "launch/train/train_state.h"

namespace mt::launch {

nlohmann::json TrainState::to_json(double process_wall_s) const {
  return {{"best_eval", best_eval},
          {"evals_without_gain", evals_without_gain},
          {"last_loss", last_loss},  // (NaN is written as null)
          {"eval_due", eval_due},
          {"skipped_steps", skipped_steps},
          {"skipped_in_row", skipped_in_row},
          {"totals", {{"train_ms", totals.train_ms}, {"tokens", totals.tokens},
                      {"wall_s", totals.wall_s + process_wall_s}, {"starts", totals.starts + 1}}}};
}

TrainState TrainState::from_json(const nlohmann::json& j) {
  TrainState s;
  s.best_eval = j.at("best_eval").get<double>();
  s.evals_without_gain = j.at("evals_without_gain").get<int>();
  const auto& ll = j.value("last_loss", nlohmann::json());  // (null: NaN, or older checkpoints)
  s.last_loss = ll.is_number() ? ll.get<double>() : NAN;
  s.eval_due = j.value("eval_due", false);
  s.skipped_steps = j.value("skipped_steps", int64_t{0});
  s.skipped_in_row = j.value("skipped_in_row", 0);  // (older checkpoints: 0)
  if (j.contains("totals")) {  // (older checkpoints: this process's figures only)
    const auto& t = j.at("totals");
    s.totals = {t.at("train_ms").get<double>(), t.at("tokens").get<double>(), t.at("wall_s").get<double>(),
                t.at("starts").get<int64_t>()};
  }
  return s;
}

}  // namespace mt::launch
