// What: `meshtrain lr-find CONFIG [key=value ...] [--steps N] [--min-lr A] [--max-lr B] [--out DIR]`,
// the learning-rate range test: from the config's initial model, step i of N trains at
//   lr_i = A * (B / A)^(i / (N - 1))
// (no warm-up or decay), records the loss and its smoothed value (a bias-corrected moving
// average), stops early once the smoothed loss passes 4x its lowest (divergence), writes
// lr_find.csv, lr_find.json and lr_find.svg (loss vs lr, log lr axis) and suggests optim.lr by
// the rule analyse_lr_find states (printed with it). Runs under mpirun like train, on any mesh; every rank sees
// the same global losses, so every rank stops at the same step.
// Why: a first learning rate for a new model or recipe in one short run instead of a sweep.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launch/commands.h"

namespace mt::launch {

struct LrFindArgs {
  std::string config;
  std::vector<std::string> overrides;
  int64_t steps = 0;  // 0: min(100, train.steps)
  double min_lr = 1e-6, max_lr = 1.0;
  std::string out;  // default: run.dir
};
int cmd_lr_find(const LrFindArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env);

// The analysis of a range test (pure; unit-tested).
constexpr double kLrFindBeta = 0.9;     // smoothing: avg = beta avg + (1 - beta) loss, / (1 - beta^(i+1))
constexpr double kLrFindDiverge = 4.0;  // stop once smoothed > 4 x the lowest smoothed loss
constexpr double kLrFindDivisor = 3.0;  // suggestion = the lowest smoothed point's lr / this
struct LrFindAnalysis {
  std::vector<double> smoothed;  // per recorded step
  int64_t diverged_at = -1;      // the step where the smoothed loss passed 4x its lowest, or -1
  int64_t min_index = 0;         // the lowest smoothed loss (before divergence)
  int64_t steepest = -1;         // the point of steepest descent, -1 if none (too few points)
  double suggested_lr = 0;       // lrs[min_index] / kLrFindDivisor
  std::string rule;              // the rule in words (printed and written)
};
// lrs, losses: the steps taken so far (a non-finite loss counts as divergence). The
// suggestion: the lr of the lowest smoothed loss before divergence, divided by 3 (the moving
// average lags ~beta / (1 - beta) = 9 steps, so its lowest point sits past the raw loss's;
// a third of it is where the loss still falls fast, and leaves room below where it turns).
// Also reported: the steepest descent, the most negative slope of the smoothed loss against
// log10(lr) by central differences over +-w points (w = max(1, n / 20)), before the lowest
// point (typically a conservative choice for short runs).
LrFindAnalysis analyse_lr_find(const std::vector<double>& lrs, const std::vector<double>& losses);
// Whether the run should stop after the last loss: non-finite, or the smoothed loss > 4x its lowest.
bool lr_find_diverged(const std::vector<double>& losses);

}  // namespace mt::launch
