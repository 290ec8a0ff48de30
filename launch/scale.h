// What: `meshtrain scale EXPERIMENT.yaml`: a scaling experiment. Each point (ranks and a
// dp x tp layout, x pp pipeline stages: parallel.pp, with the config's pp_schedule) runs `mpirun -np N meshtrain bench step ...` (repetitions times), and the
// tool writes <out>/results.csv (tokens/s, step time split into compute, exposed
// communication and data wait, efficiency against the 1-rank point), throughput.svg,
// breakdown.svg and report.md.
// Why: scaling numbers go into papers and capacity plans; they must come from real runs with
// the commands recorded, not from a spreadsheet.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "launch/cost_model.h"

namespace mt::launch {

struct ScalePoint {
  int np = 1, dp = 0, tp = 1, pp = 1;  // np = dp x tp x pp; dp 0 = np / (tp x pp)
};

struct ScaleSpec {
  std::string config;                 // base training config
  std::vector<std::string> overrides;
  std::string mode = "strong";        // strong: fixed global batch; weak: batch_size x dp
  int steps = 5, warmup = 2, repetitions = 1;
  std::vector<ScalePoint> points;
  std::string mpirun = "mpirun";
  std::vector<std::string> mpirun_args{"--oversubscribe", "--bind-to", "none"};
  // A two-level network (the experiment's `network:`, a mapping or the path of a
  // `meshtrain bench network --json` file): the cost model prices each point's all-reduces on
  // it (hosts spanned, intra- and inter-host alpha/beta) instead of a 2-rank all-reduce it
  // measures itself. network_source: where it came from, for the report.
  std::optional<Network> network;
  std::string network_source;
  // The hosts are simulated on this machine (tests/multihost/simhosts.sh) and share its cores:
  // a point's compute scales with min(ranks x threads, this machine's cores), whatever the
  // hosts; false (real hosts): with min(ranks per host x threads, cores) x hosts.
  bool hosts_share_cores = false;
};

ScaleSpec load_scale_spec(const std::string& path);
// The absolute path of the running executable (/proc/self/exe).
std::string self_path();
// Runs the experiment; `self` is the meshtrain binary to launch. Returns 0 on success.
int run_scale(const ScaleSpec& spec, const std::string& self, const std::string& out_dir);

}  // namespace mt::launch
