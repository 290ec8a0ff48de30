// What: the async-signal-safe handlers behind launch/signals.h.
#include "launch/signals.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <initializer_list>

namespace mt::launch {

namespace {
std::atomic<int> g_signal{0};
std::atomic<bool> g_failing{false};
std::atomic<bool> g_announce{false};  // training has started: say what a signal does at once

void say(const char* s) { [[maybe_unused]] ssize_t n = write(STDERR_FILENO, s, std::strlen(s)); }

// The line that says what the run does about signal `sig` (async-signal-safe).
void announce(int sig) {
  // SIGTERM also comes from mpirun when another rank failed and the job is being aborted:
  // say both, so a log of a failed job does not read like a clean preemption
  switch (sig) {
    case SIGUSR1: say("meshtrain: SIGUSR1 received (preemption): checkpointing after this step\n"); break;
    case SIGINT: say("meshtrain: SIGINT received (interrupted): checkpointing after this step; a second signal "
                     "exits at once\n"); break;
    case SIGHUP: say("meshtrain: SIGHUP received (the terminal closed?): checkpointing after this step\n"); break;
    default:
      say("meshtrain: SIGTERM received (preemption, or the job is being aborted because a rank failed: see the "
          "first error above): checkpointing after this step\n");
  }
}

void on_signal(int sig) {
  if (g_failing.load()) _exit(128 + sig);  // the job is aborting for an error already printed
  int expected = 0;
  if (!g_signal.compare_exchange_strong(expected, sig)) {  // second signal
    say("meshtrain: second signal: exiting now without a checkpoint (the last complete one stays valid)\n");
    _exit(128 + sig);
  }
  if (g_announce.load()) announce(sig);
}
}  // namespace

void install_preemption_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGUSR1, SIGINT, SIGHUP}) {
    // SIGINT and SIGHUP ignored by whoever started us (`nohup`, a shell's `cmd &` without job
    // control) stay ignored: that process asked not to be stopped by them
    struct sigaction old {};
    if ((sig == SIGINT || sig == SIGHUP) && sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
    sigaction(sig, &sa, nullptr);
  }
}

bool preemption_requested() { return g_signal.load() != 0; }
int preemption_signal() { return g_signal.load(); }
void note_job_failing() { g_failing.store(true); }

void announce_signals() {
  if (g_announce.exchange(true)) return;
  if (const int sig = g_signal.load()) announce(sig);  // one that came during the start-up
}

}  // namespace mt::launch
