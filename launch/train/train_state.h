// What: the trainer's state that a checkpoint carries besides parameters, optimizer state and
// the loader's position: early stopping's best eval and patience count, the last step's loss,
// whether an eval was abandoned for preemption, the non-finite skip counts, and the whole
// run's totals. to_json / from_json are the manifest's "trainer" object.
// Why: one place for what a resumed run continues from. The JSON is read by every later
// version: keys are never renamed, and keys that older checkpoints lack get the defaults below.
#pragma once

#include <cmath>
#include <cstdint>

#include <nlohmann/json.hpp>

namespace mt::launch {

// The whole run's totals over every process that trained it (a resumed run continues the
// checkpoint's; work after the last checkpoint of a killed process is lost and not counted):
// summary.json's tokens_per_s and wall_s.
struct RunTotals {
  double train_ms = 0, tokens = 0, wall_s = 0;  // wall_s: of the processes before this one
  int64_t starts = 0;                           // processes before this one
};

struct TrainState {
  double best_eval = 1e300;
  int evals_without_gain = 0;
  double last_loss = NAN;  // loss of the last step done (summary.json of a run resumed at its end)
  bool eval_due = false;   // the eval at the checkpoint's step was abandoned for preemption
  int64_t skipped_steps = 0;  // updates dropped for a non-finite gradient norm, over the whole run
  int skipped_in_row = 0;     // ... of them the last consecutive ones (train.max_skips_in_row)
  RunTotals totals;

  // Whether early stopping's patience (train.early_stop_patience; 0 = off) has run out.
  bool patience_exhausted(int patience) const { return patience > 0 && evals_without_gain >= patience; }

  // The manifest's "trainer" object. process_wall_s: this process's wall time so far, added
  // to the totals (which then count this process as one more start).
  nlohmann::json to_json(double process_wall_s) const;
  // From a manifest's "trainer" object: best_eval and evals_without_gain are required (every
  // checkpoint has them); the others default as above when an older checkpoint lacks them
  // (last_loss null: NaN; no "totals": this process's figures only).
  static TrainState from_json(const nlohmann::json& j);
};

}  // namespace mt::launch
