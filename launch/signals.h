// What: preemption and interruption signals. SIGTERM and SIGUSR1 (what Slurm sends before it
// preempts or reaches the time limit, e.g. `sbatch --signal=USR1@60`), SIGINT (Ctrl-C, alone
// or through mpirun) and SIGHUP (the terminal closed) set a flag; the trainer checks it after
// every step, agrees with all ranks (an all-reduce of the flag), writes a checkpoint and exits
// 0, so a requeued job resumes with resume=auto. A second signal exits at once (exit code
// 128 + signal): checkpoints are published by rename, so nothing is corrupted. SIGINT and
// SIGHUP that the parent set to be ignored (nohup; `cmd &` in a script) stay ignored.
// A job that is already ending because of an error (note_job_failing) takes a signal silently
// and exits at once: mpirun's SIGTERM to the ranks of a failed job is no preemption.
#pragma once

namespace mt::launch {

void install_preemption_handlers();
bool preemption_requested();
int preemption_signal();  // the first signal received, 0 if none
// This process is about to abort the job for an error: any signal from now on ends it at once
// and prints nothing (the error has been printed).
void note_job_failing();

}  // namespace mt::launch
