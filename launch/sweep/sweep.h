// What: `meshtrain sweep SWEEP.yaml`, a hyper-parameter sweep: trials of a base config with
// swept keys (grid or random search), each an ordinary run directory <dir>/trial_NNN trained
// by `mpirun -np N meshtrain train ...` (or srun inside a Slurm allocation), optionally with
// successive halving (every trial trains to the first rung, where the better 1/eta of them go
// on to the next rung, and so on to train.steps); then <dir>/sweep.csv, one plot of eval
// loss per swept key and report.md naming the best trial.
// Why: picking a learning rate or batch size is a series of runs; doing it by hand loses the
// commands and the comparisons. Rerunning the same command resumes a killed sweep: finished
// and stopped trials are kept, an interrupted one resumes from its checkpoint (resume=auto).
#pragma once

#include <string>

#include "launch/sweep/spec.h"
#include "launch/sweep/state.h"

namespace mt::launch::sweep {

// Runs (or resumes) the sweep of `sweep_file`; `self` is the meshtrain binary the trials run.
// Returns 0 when the sweep is complete with at least one finished trial, 1 when every trial
// failed, and 128 + signal when a signal interrupted it (the state is saved: rerun to resume).
int run_sweep(const std::string& sweep_file, const std::string& self);

// The command that trains trial `t` to `stop_at` (0: to train.steps): `mpirun [--allow-run-as-root]
// ARGS -np N` or, inside a Slurm allocation (SLURM_JOB_ID) or with launch.launcher srun, `srun
// ARGS [--exclusive] --ntasks=N`; then `self train BASE overrides...` (words quoted as needed).
std::string trial_command(const Spec& spec, const std::string& self, const Trial& t, int64_t stop_at);

// <dir>/sweep.csv, <dir>/eval_loss_vs_<key>.svg per swept key, <dir>/report.md (report.cc).
void write_report(const Spec& spec, const State& state);

}  // namespace mt::launch::sweep
