// What: a hyper-parameter sweep's specification (`meshtrain sweep SWEEP.yaml`): the base
// config and the overrides common to every trial, the swept keys (grid lists, or
// distributions for random search), successive halving's rungs, and how a trial is launched.
// Parsing validates every swept key against the config schema (an unknown key names the key,
// the nearest valid one and the sweep file) and every trial's config as `train` would load it,
// so a bad sweep fails before the first trial runs. The trials themselves are made here
// (grid: the cartesian product; random: a seeded sampler of our own, the same on every
// machine), as is the sweep's identity (a hash of everything that decides the trials and
// their results), which sweep.json records so that a directory is never shared by two sweeps.
// Why a separate file: the runner (runner.cc) and the unit tests use the same pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mt::launch::sweep {

// One swept key: a list of values (grid, or a uniform choice in random search) or a
// distribution (random search only).
struct Param {
  std::string key;                  // "optim.lr"
  std::vector<std::string> values;  // as written (YAML scalars); empty for a distribution
  std::string dist;                 // "" (a list) | uniform | log_uniform | int_uniform
  double lo = 0, hi = 0;            // the distribution's bounds
  int line = -1;                    // line in the sweep file
  // Plots use a log axis: log_uniform, or a list of positive numbers spanning a factor >= 10.
  bool log_scale() const;
};

struct Halving {
  bool on = false;
  std::vector<int64_t> rungs;  // steps at which the trials are compared (ascending, < train.steps)
  double eta = 2;              // keep the best 1/eta at each rung (at least one)
};

struct Launch {
  std::string launcher = "auto";  // auto (srun inside a Slurm allocation, else mpirun) | mpirun | srun
  int np = 1;                     // ranks per trial
  std::string mpirun = "mpirun";
  std::vector<std::string> mpirun_args{"--oversubscribe", "--bind-to", "none"};
  std::vector<std::string> srun_args;  // (parallel_trials > 1 adds --exclusive: disjoint CPUs per trial)
  int parallel_trials = 1;             // trials run at once
};

struct Spec {
  std::string file;                    // the sweep YAML, as given
  std::string base;                    // the base config (absolute; relative to the sweep file as written)
  std::string dir;                     // the sweep directory (relative to the working directory)
  std::vector<std::string> overrides;  // common to every trial
  std::string search = "grid";         // grid | random
  int trials = 0;                      // random: how many
  uint64_t seed = 0;                   // random: the sampler's seed
  std::vector<Param> params;
  Halving halving;
  std::string metric = "eval_loss";
  Launch launch;
  int64_t steps = 0;                   // the base's train.steps (every trial's, unless swept)
};

// One trial: its swept keys' values, as `section.key=value` overrides, in the params' order.
struct Trial {
  int id = 0;
  std::vector<std::pair<std::string, std::string>> params;  // key, value text
  std::string name() const;           // "trial_003"
  std::string describe() const;       // "optim.lr=0.001 train.batch_size=8"
};

// Reads and checks a sweep file (throws core::Error naming the file, the key and its line).
Spec load_spec(const std::string& path);
// The same from YAML text; `origin` names it in messages, paths in it are relative to `base_dir`.
Spec parse_spec(const std::string& yaml_text, const std::string& origin, const std::string& base_dir);
// The trials: grid = the cartesian product of the lists (the first key varies slowest);
// random = `trials` draws from the seeded sampler.
std::vector<Trial> make_trials(const Spec& spec);
// Every trial's config loads as `train` would load it (the overrides the sweep adds
// included); an error names the trial, the key and the sweep file.
void check_trials(const Spec& spec, const std::vector<Trial>& trials);
// The overrides of one trial's run: the spec's, the trial's, and the sweep's own (run.dir,
// resume=auto, train.stop_at_step = stop_at, 0 = run to train.steps).
std::vector<std::string> trial_overrides(const Spec& spec, const Trial& t, int64_t stop_at);
// The sweep's identity: a hex hash of the resolved base config, the overrides, the params,
// the search and the halving rungs (not the launch settings: a sweep may be resumed under
// another launcher or rank count).
std::string identity(const Spec& spec);
// How many trials of n survive a rung: the best n / eta (rounded down), at least 1.
int survivors(int n, double eta);

}  // namespace mt::launch::sweep
