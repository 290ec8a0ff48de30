// What: preemption and interruption signals. SIGTERM and SIGUSR1 (what Slurm sends before it
// preempts or reaches the time limit, e.g. `sbatch --signal=USR1@60`), SIGINT (Ctrl-C, alone
// or through mpirun) and SIGHUP (the terminal closed) set a flag; the trainer checks it after
// every step, agrees with all ranks (an all-reduce of the flag), writes a checkpoint and exits
// 0, so a requeued job resumes with resume=auto. A second signal exits at once (exit code
// 128 + signal): checkpoints are published by rename, so nothing is corrupted. SIGINT and
// SIGHUP that the parent set to be ignored (nohup; `cmd &` in a script) stay ignored.
// A signal is announced on stderr at once only from the start of training (announce_signals);
// one during the start-up (config and data checks, model construction, resume) is announced
// when training starts. Why: a configuration error found by every rank aborts the job, and
// mpirun's SIGTERM to the ranks still unwinding must not read as "checkpointing". Likewise a
// process that is already ending for an error (note_job_failing) takes a signal silently and
// exits at once.
#pragma once

namespace mt::launch {

void install_preemption_handlers();
bool preemption_requested();
int preemption_signal();  // the first signal received, 0 if none
// This process is about to abort the job for an error: any signal from now on ends it at once
// and prints nothing (the error has been printed).
void note_job_failing();
// Training has started: announce a signal received so far and every later one at once.
void announce_signals();

}  // namespace mt::launch
