// What: the async-signal-safe handlers behind launch/signals.h.
#include "launch/signals.h"

#include <unistd.h>

#include <atomic>
#include <csignal>

namespace mt::launch {

namespace {
std::atomic<int> g_signal{0};

void on_signal(int sig) {
  int expected = 0;
  if (!g_signal.compare_exchange_strong(expected, sig)) _exit(128 + sig);  // second signal
  // SIGTERM also comes from mpirun when another rank failed and the job is being aborted:
  // say both, so a log of a failed job does not read like a clean preemption
  static const char usr1[] = "meshtrain: SIGUSR1 received (preemption): checkpointing after this step\n";
  static const char term[] =
      "meshtrain: SIGTERM received (preemption, or the job is being aborted because a rank failed: "
      "see the first error above): checkpointing after this step\n";
  if (sig == SIGUSR1) {
    [[maybe_unused]] ssize_t n = write(STDERR_FILENO, usr1, sizeof(usr1) - 1);
  } else {
    [[maybe_unused]] ssize_t n = write(STDERR_FILENO, term, sizeof(term) - 1);
  }
}
}  // namespace

void install_preemption_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
}

bool preemption_requested() { return g_signal.load() != 0; }
int preemption_signal() { return g_signal.load(); }

}  // namespace mt::launch
