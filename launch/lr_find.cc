// What: cmd_lr_find and the range test's analysis (see lr_find.h).
#include "launch/lr_find.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "io/metrics.h"
#include "launch/svg.h"
#include "launch/train/trainer.h"

namespace mt::launch {

namespace {

std::vector<double> smooth(const std::vector<double>& losses) {
  std::vector<double> s;
  double avg = 0, corr = 1;
  for (double l : losses) {
    avg = kLrFindBeta * avg + (1 - kLrFindBeta) * l;
    corr *= kLrFindBeta;
    s.push_back(avg / (1 - corr));
  }
  return s;
}

// The first index whose smoothed loss is non-finite or > kLrFindDiverge x the lowest before it, or -1.
int64_t divergence(const std::vector<double>& s) {
  double best = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < s.size(); ++i) {
    if (!std::isfinite(s[i]) || s[i] > kLrFindDiverge * best) return static_cast<int64_t>(i);
    best = std::min(best, s[i]);
  }
  return -1;
}

// An error about a config key, naming the file (and the key's line when it is in the file).
core::Error key_error(const core::Config& cfg, const std::string& config, const std::string& key,
                      const std::string& msg, const std::string& hint) {
  core::Error e(msg);
  e.with_file(cfg.source_file.empty() ? config : cfg.source_file);
  const auto it = cfg.key_lines.find(key);
  e.with_yaml(key, it != cfg.key_lines.end() ? it->second : -1);
  e.with_hint(hint);
  return e;
}

}  // namespace

bool lr_find_diverged(const std::vector<double>& losses) { return divergence(smooth(losses)) >= 0; }

LrFindAnalysis analyse_lr_find(const std::vector<double>& lrs, const std::vector<double>& losses) {
  MT_CHECK(lrs.size() == losses.size(), "analyse_lr_find: {} lrs, {} losses", lrs.size(), losses.size());
  LrFindAnalysis a;
  a.smoothed = smooth(losses);
  a.diverged_at = divergence(a.smoothed);
  const int64_t n = a.diverged_at >= 0 ? a.diverged_at : static_cast<int64_t>(lrs.size());
  for (int64_t i = 0; i < n; ++i)
    if (a.smoothed[static_cast<size_t>(i)] < a.smoothed[static_cast<size_t>(a.min_index)]) a.min_index = i;
  const int64_t w = std::max<int64_t>(1, n / 20);
  double best = 0;
  for (int64_t i = w; i + w < n && i <= a.min_index; ++i) {
    const size_t lo = static_cast<size_t>(i - w), hi = static_cast<size_t>(i + w);
    const double slope = (a.smoothed[hi] - a.smoothed[lo]) / (std::log10(lrs[hi]) - std::log10(lrs[lo]));
    if (slope < best) best = slope, a.steepest = i;
  }
  a.rule = fmt::format("the lr of the lowest smoothed loss (moving average, beta {}) before divergence, divided by {}",
                       kLrFindBeta, kLrFindDivisor);
  if (n > 0) a.suggested_lr = lrs[static_cast<size_t>(a.min_index)] / kLrFindDivisor;
  return a;
}

int cmd_lr_find(const LrFindArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env) {
  int threads = 0;
  core::Device* device = nullptr;
  core::Config cfg = start_run(a.config, a.overrides, world, env, &threads, &device);
  const int64_t N = a.steps > 0 ? a.steps : std::min<int64_t>(100, cfg.train.steps);
  constexpr int64_t kMinSteps = 10;
  if (cfg.train.steps < kMinSteps) {
    throw AgreedError(key_error(cfg, a.config, "train.steps",
                    fmt::format("lr-find needs train.steps >= {} (it is {}): the range test runs up to train.steps "
                                "steps of the run it prepares, at least {} to see a trend",
                                kMinSteps, cfg.train.steps, kMinSteps),
                    fmt::format("set train.steps=100 (or more) for the test, e.g. `meshtrain lr-find {} train.steps=100`",
                                a.config)));
  }
  if (N < kMinSteps || N > cfg.train.steps) {
    throw AgreedError(key_error(cfg, a.config, "train.steps",
                    fmt::format("lr-find --steps {} is outside [{}, train.steps = {}]", N, kMinSteps, cfg.train.steps),
                    "pass --steps between 10 and train.steps, or raise train.steps"));
  }
  if (!(a.min_lr > 0) || !(a.max_lr > a.min_lr)) {
    throw AgreedError(core::Error(fmt::format("lr-find needs 0 < --min-lr < --max-lr (got {} and {})", a.min_lr, a.max_lr)));
  }
  // the range test's own schedule: no warm-up, no decay (the steps' lr is passed in); a
  // diverging lr is expected, so a non-finite gradient skips the update instead of stopping
  cfg.optim.warmup_steps = 0;
  cfg.optim.schedule = "constant";
  cfg.train.nonfinite = "skip";
  const std::string out = a.out.empty() ? cfg.run.dir : a.out;
  const bool leader = world.rank() == 0;
  Trainer trainer(cfg, world, device);
  trainer.load_initial_weights();
  if (leader) {
    core::log::info("lr-find: {} steps, lr from {:.3g} to {:.3g} (exponential), stop when the smoothed loss > {}x "
                    "its lowest",
                    N, a.min_lr, a.max_lr, kLrFindDiverge);
  }
  std::vector<double> lrs, losses;
  for (int64_t i = 0; i < N; ++i) {
    const double lr = a.min_lr * std::pow(a.max_lr / a.min_lr, static_cast<double>(i) / static_cast<double>(N - 1));
    const StepStats st = trainer.step(i, lr);  // the loss is the global batch's: the same on every rank
    lrs.push_back(lr);
    losses.push_back(st.loss);
    if (leader && (i % std::max<int64_t>(1, N / 10) == 0 || i + 1 == N))
      core::log::info("lr-find step {:>4}/{} | lr {:.3e} | loss {:.4f}", i + 1, N, lr, st.loss);
    if (lr_find_diverged(losses)) break;
  }
  const LrFindAnalysis an = analyse_lr_find(lrs, losses);
  if (an.diverged_at == 0)
    throw AgreedError(core::Error(fmt::format("lr-find: the loss is not finite at the first step (lr {:.3g})", a.min_lr))
                          .with_hint("lower --min-lr"));
  if (!leader) return 0;
  io::ensure_directory(out);
  std::ostringstream csv;
  csv << "step,lr,loss,smoothed_loss\n";
  for (size_t i = 0; i < lrs.size(); ++i) csv << fmt::format("{},{:.6e},{:.6f},{:.6f}\n", i, lrs[i], losses[i], an.smoothed[i]);
  io::write_file_atomic(out + "/lr_find.csv", csv.str());
  nlohmann::json j{{"suggested_lr", an.suggested_lr}, {"rule", an.rule}, {"steps", lrs.size()},
                   {"min_lr", a.min_lr}, {"max_lr", a.max_lr},
                   {"lowest_smoothed_loss", an.smoothed[static_cast<size_t>(an.min_index)]},
                   {"lowest_at_lr", lrs[static_cast<size_t>(an.min_index)]},
                   {"steepest_lr", an.steepest >= 0 ? nlohmann::json(lrs[static_cast<size_t>(an.steepest)]) : nlohmann::json()},
                   {"diverged_at_step", an.diverged_at >= 0 ? nlohmann::json(an.diverged_at) : nlohmann::json()}};
  io::write_file_atomic(out + "/lr_find.json", j.dump(2) + "\n");
  XYSeries raw{"loss", lrs, losses}, sm{"smoothed loss", lrs, an.smoothed}, mark{"suggested lr", {}, {}};
  const auto [lo, hi] = std::minmax_element(an.smoothed.begin(), an.smoothed.end());
  mark.x = {an.suggested_lr, an.suggested_lr};
  mark.y = {*lo, std::isfinite(*hi) ? *hi : *lo};
  mark.dashed = true;
  XYOptions log_lr;
  log_lr.log_x = true;
  io::write_file_atomic(out + "/lr_find.svg",
                        svg_xy_chart("lr range test: " + a.config, "learning rate (log scale)", "loss (nats/token)",
                                     {raw, sm, mark}, log_lr));
  std::printf("lr-find: %zu steps, lr %.3g .. %.3g%s; lowest smoothed loss %.4f at lr %.3g\n", lrs.size(), lrs.front(),
              lrs.back(),
              an.diverged_at >= 0 ? fmt::format(" (diverged at step {}: smoothed loss > {}x its lowest)", an.diverged_at,
                                                kLrFindDiverge).c_str()
                                  : " (no divergence)",
              an.smoothed[static_cast<size_t>(an.min_index)], lrs[static_cast<size_t>(an.min_index)]);
  std::printf("suggested optim.lr = %.3g\n  rule: %s%s\n  wrote %s/lr_find.csv, lr_find.json, lr_find.svg\n",
              an.suggested_lr, an.rule.c_str(),
              an.steepest >= 0 ? fmt::format("\n  (steepest descent of the smoothed loss vs log10(lr): lr {:.3g}, a "
                                             "more conservative choice)", lrs[static_cast<size_t>(an.steepest)]).c_str()
                               : "",
              out.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace mt::launch
