// What: preemption signals. SIGTERM and SIGUSR1 (what Slurm sends before it preempts or
// reaches the time limit, e.g. `sbatch --signal=USR1@60`) set a flag; the trainer checks it
// after every step, agrees with all ranks (an all-reduce of the flag), writes a checkpoint
// and exits 0, so a requeued job resumes with resume=auto. A second signal exits at once
// (exit code 128 + signal): checkpoints are published by rename, so nothing is corrupted.
#pragma once

namespace mt::launch {

void install_preemption_handlers();
bool preemption_requested();
int preemption_signal();  // the first signal received, 0 if none

}  // namespace mt::launch
