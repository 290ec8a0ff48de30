// What: the sweep runner (see sweep.h): the sweep directory and its state, the levels of
// successive halving (each rung, then train.steps), the trials of a level launched up to
// launch.parallel_trials at a time, and what each trial's run directory says afterwards.
// Why this shape: a trial is judged by its run directory (the eval at the rung step in
// metrics.jsonl, summary.json at the end), never by the launcher's exit code alone (mpirun
// exits 1 after passing a SIGTERM on to ranks that then checkpointed cleanly). Trials run in
// their own process group with stdin from /dev/null; a signal to the sweep (Ctrl-C, a kill
// of its process group, Slurm's) is passed on once per signal as SIGUSR1 to each running
// launcher, so the ranks checkpoint and exit; a sweep killed outright (SIGKILL) makes the
// kernel send that SIGUSR1 (PR_SET_PDEATHSIG). Either way rerunning the command resumes.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "core/log.h"
#include "io/dir_lock.h"
#include "io/metrics.h"
#include "launch/sweep/sweep.h"

namespace mt::launch::sweep {

namespace log = core::log;

namespace {

std::atomic<int> g_signals{0}, g_last_signal{0};
void on_signal(int sig) {
  g_last_signal.store(sig);
  g_signals.fetch_add(1);
}
void install_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP}) sigaction(sig, &sa, nullptr);
}

// `s` as one shell word: as it is when that is safe (the report's command stays readable), else quoted
std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./=:,+-@%") ==
                        std::string::npos) {
    return s;
  }
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

bool use_srun(const Launch& l) {
  const char* job = std::getenv("SLURM_JOB_ID");
  return l.launcher == "srun" || (l.launcher == "auto" && job && *job);
}

// Starts `cmd` in its own process group, output appended to `log_path`; returns its pid.
pid_t spawn(const std::string& cmd, const std::string& log_path) {
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw core::Error("cannot start a trial (fork failed)").with_library(std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGUSR1);  // the sweep killed outright: the trial checkpoints and exits
    if (getppid() != parent) _exit(1);
    for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP}) std::signal(sig, SIG_DFL);
    const int in = open("/dev/null", O_RDONLY);
    const int out = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || out < 0) _exit(127);
    dup2(in, 0), dup2(out, 1), dup2(out, 2);
    const std::string line = "exec " + cmd;
    execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// A run of the trial from a killed sweep may still be winding down (checkpointing after the
// SIGUSR1 it got): wait until its run directory's lock is free, however long a large
// checkpoint takes (launching now would fail on the lock and mark the trial failed for good).
// A signal to the sweep ends the wait.
void wait_for_previous_run(const std::string& run_dir, const std::string& name) {
  for (int i = 0; g_signals.load() == 0; ++i) {
    std::string holder;
    if (io::DirLock::try_acquire(run_dir, &holder).held()) return;
    if (i % 300 == 0) log::info("sweep: {}: waiting for its previous run ({}) to end", name, holder);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// The first error line of a failed trial's log ("" if none).
std::string first_error(const std::string& log_path) {
  try {
    std::istringstream in(io::read_file(log_path));
    std::string line;
    while (std::getline(in, line)) {
      const auto at = line.find("error: ");  // a meshtrain error line: the message without its prefix
      if (at != std::string::npos) return line.substr(at + 7);
      if (line.find("rror") != std::string::npos) return line;
    }
  } catch (const std::exception&) {
  }
  return "";
}

class Runner {
 public:
  Runner(const Spec& spec, State& st, const std::string& self) : spec_(spec), st_(st), self_(self) {}

  void save() const { io::write_file_atomic(spec_.dir + "/sweep.json", to_json(st_)); }

  // Trains every live trial to `target` (a rung, or train.steps); false if a signal interrupted.
  bool level(int64_t target) {
    std::vector<size_t> todo;
    for (size_t i = 0; i < st_.trials.size(); ++i) {
      const TrialRecord& r = st_.trials[i];
      // (a trial interrupted on its way to a later target has passed this one: reached >= target)
      const bool live = r.status == Status::Pending || r.status == Status::Running || r.status == Status::Paused;
      if (live && r.reached < target) todo.push_back(i);
    }
    if (todo.empty()) return true;
    log::info("sweep: {} trial(s) to step {}{}", todo.size(), target, target < st_.steps ? " (a rung)" : "");
    struct Child {
      pid_t pid;
      size_t idx;
    };
    std::vector<Child> running;
    size_t next = 0;
    int forwarded = 0;
    while (next < todo.size() || !running.empty()) {
      while (g_signals.load() == 0 && running.size() < static_cast<size_t>(spec_.launch.parallel_trials) &&
             next < todo.size()) {
        const size_t idx = todo[next++];
        running.push_back({launch(idx, target), idx});
      }
      for (const int n = g_signals.load(); forwarded < n; ++forwarded) {  // each signal passed on once
        if (forwarded == 0) log::warn("sweep: signal {} received: the running trial(s) checkpoint and stop; rerun "
                                      "the same command to resume", g_last_signal.load());
        for (const auto& c : running) kill(c.pid, SIGUSR1);
      }
      if (running.empty()) break;  // interrupted before the next launch
      int status = 0;
      const pid_t p = waitpid(-1, &status, WNOHANG);
      if (p <= 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      const auto it = std::find_if(running.begin(), running.end(), [&](const Child& c) { return c.pid == p; });
      if (it == running.end()) continue;
      const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      finish(it->idx, target, rc);
      running.erase(it);
    }
    return g_signals.load() == 0;
  }

  // After the rung at `step`: keep the best 1/eta of the trials evaluated there.
  void decide(int64_t step) {
    if (st_.decision_at(step)) return;  // decided before the sweep was interrupted
    std::map<int, double> losses;
    for (const auto& r : st_.trials)
      if (r.status == Status::Paused && r.reached == step) losses[r.trial.id] = r.rung_loss.at(step);
    const RungDecision d = decide_rung(step, losses, spec_.halving.eta);
    for (int id : d.stopped) st_.trials[static_cast<size_t>(id)].status = Status::Stopped;
    st_.decisions.push_back(d);
    save();
    log::info("sweep: rung at step {}: kept {} ({}), stopped {} ({})", step, d.kept.size(), fmt::join(d.kept, ", "),
              d.stopped.size(), fmt::join(d.stopped, ", "));
  }

 private:
  std::string log_path(const Trial& t) const { return spec_.dir + "/logs/" + t.name() + ".log"; }

  pid_t launch(size_t idx, int64_t target) {
    TrialRecord& r = st_.trials[idx];
    const std::string run_dir = spec_.dir + "/" + r.trial.name();
    wait_for_previous_run(run_dir, r.trial.name());
    r.command = trial_command(spec_, self_, r.trial, target < st_.steps ? target : 0);
    r.status = Status::Running;
    ++r.starts;
    save();
    log::info("sweep: {} ({}): to step {}{}", r.trial.name(), r.trial.describe(), target,
              r.starts > 1 ? " (resume=auto: from its newest checkpoint)" : "");
    io::write_file_atomic(spec_.dir + "/logs/" + r.trial.name() + ".cmd", r.command + "\n");  // (to rerun it by hand)
    return spawn(r.command, log_path(r.trial));
  }

  // What the trial's run directory says after its launcher exited with `rc`.
  void finish(size_t idx, int64_t target, int rc) {
    TrialRecord& r = st_.trials[idx];
    const RunRecords rec = read_run(spec_.dir + "/" + r.trial.name());
    for (const auto& [step, loss] : rec.evals)
      if (!r.best_eval_loss || loss < *r.best_eval_loss) r.best_eval_loss = loss;
    r.tokens_per_s = rec.summary_steps ? rec.summary_tokens_per_s
                                       : rec.train_ms > 0 ? rec.tokens / (rec.train_ms / 1000.0) : 0.0;
    const bool interrupted = g_signals.load() > 0;
    if (rec.summary_steps) {  // the run ended: train.steps reached (or early stopping)
      r.status = Status::Finished;
      r.reached = *rec.summary_steps;
      r.final_eval_loss = rec.summary_eval;
      log::info("sweep: {} finished at step {}: eval loss {:.4f}", r.trial.name(), r.reached,
                rec.summary_eval.value_or(NAN));
    } else if (target < st_.steps && rec.evals.count(target)) {
      r.status = Status::Paused;
      r.reached = target;
      r.rung_loss[target] = rec.evals.at(target);
      log::info("sweep: {} at rung step {}: eval loss {:.4f}", r.trial.name(), target, rec.evals.at(target));
    } else if (interrupted) {
      r.status = Status::Pending;  // resumed from its checkpoint by the next run of the sweep
      log::info("sweep: {} interrupted (exit {}); it resumes from its checkpoint", r.trial.name(), rc);
    } else {
      r.status = Status::Failed;
      const std::string why = first_error(log_path(r.trial));
      r.error = fmt::format("exit {} before step {}{}", rc, target, why.empty() ? "" : ": " + why);
      log::warn("sweep: {} failed ({}); the sweep goes on without it (log: {})", r.trial.name(), r.error,
                log_path(r.trial));
    }
    save();
  }

  const Spec& spec_;
  State& st_;
  const std::string self_;
};

// sweep.json of this sweep, a new state for an empty (or new) directory, or an error.
State open_state(const Spec& spec, const std::vector<Trial>& trials, const std::string& id) {
  const std::string path = spec.dir + "/sweep.json";
  if (std::filesystem::exists(path)) {
    State st = state_from_json(io::read_file(path), path);
    if (st.identity != id) {
      throw core::Error(fmt::format("the sweep directory {} holds another sweep's trials (made from {}; its "
                                    "identity {} differs from {}'s {}: base config, overrides, params, search or "
                                    "halving changed)", spec.dir, st.sweep_file, st.identity, spec.file, id))
          .with_file(path).with_yaml("dir")
          .with_hint(fmt::format("set dir: in {} to a new directory, or move {} aside to start this sweep over",
                                 spec.file, spec.dir));
    }
    return st;
  }
  for (const auto& e : std::filesystem::directory_iterator(spec.dir)) {
    if (e.path().filename() != io::DirLock::kFileName) {
      throw core::Error(fmt::format("the sweep directory {} is not empty and has no sweep.json (it holds {}): it is "
                                    "not this sweep's", spec.dir, e.path().filename().string()))
          .with_file(spec.file).with_yaml("dir")
          .with_hint(fmt::format("set dir: in {} to a new or empty directory", spec.file));
    }
  }
  return new_state(spec, trials, id);
}

}  // namespace

std::string trial_command(const Spec& s, const std::string& self, const Trial& t, int64_t stop_at) {
  std::string cmd;
  if (use_srun(s.launch)) {
    cmd = "srun";
    for (const auto& a : s.launch.srun_args) cmd += " " + shell_quote(a);
    if (s.launch.parallel_trials > 1) cmd += " --exclusive";  // concurrent steps on disjoint CPUs
    cmd += fmt::format(" --ntasks={}", s.launch.np);
  } else {
    cmd = shell_quote(s.launch.mpirun);
    if (geteuid() == 0) cmd += " --allow-run-as-root";
    for (const auto& a : s.launch.mpirun_args) cmd += " " + shell_quote(a);
    cmd += fmt::format(" -np {}", s.launch.np);
  }
  cmd += fmt::format(" {} train {}", shell_quote(self), shell_quote(s.base));
  for (const auto& o : trial_overrides(s, t, stop_at)) cmd += " " + shell_quote(o);
  return cmd;
}

int run_sweep(const std::string& sweep_file, const std::string& self) {
  const Spec spec = load_spec(sweep_file);
  const std::vector<Trial> trials = make_trials(spec);
  check_trials(spec, trials);
  const std::string id = identity(spec);
  std::string holder;
  const io::DirLock lock = io::DirLock::try_acquire(spec.dir, &holder);
  if (!lock.held()) {
    throw core::Error(fmt::format("the sweep directory {} is in use by another meshtrain sweep ({})", spec.dir, holder))
        .with_file(spec.dir + "/" + io::DirLock::kFileName)
        .with_hint("wait for that sweep to end (or stop it); the lock goes with its process");
  }
  State st = open_state(spec, trials, id);
  io::ensure_directory(spec.dir + "/logs");
  int done = 0;
  for (const auto& r : st.trials) done += r.status == Status::Finished || r.status == Status::Stopped || r.status == Status::Failed;
  log::info("sweep: {} trial(s) of {} ({} search over {}), {}; {} ({} already done)", st.trials.size(), spec.base,
            spec.search, spec.params.size() == 1 ? spec.params[0].key : fmt::format("{} keys", spec.params.size()),
            spec.halving.on ? fmt::format("successive halving at steps {} (eta {})", fmt::join(st.rungs, ", "),
                                          spec.halving.eta)
                            : fmt::format("{} steps each", st.steps),
            spec.dir, done);
  install_handlers();
  Runner runner(spec, st, self);
  runner.save();
  std::vector<int64_t> targets = st.rungs;
  targets.push_back(st.steps);
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!runner.level(targets[i])) {
      write_report(spec, st);
      log::warn("sweep: interrupted; state saved in {}/sweep.json: rerun `meshtrain sweep {}` to resume", spec.dir,
                spec.file);
      return 128 + g_last_signal.load();
    }
    if (i + 1 < targets.size()) runner.decide(targets[i]);
  }
  write_report(spec, st);
  const TrialRecord* best = best_trial(st);
  if (!best) {
    log::error("sweep: no trial finished (see the trials' logs under {}/logs)", spec.dir);
    return 1;
  }
  log::info("sweep: best {} ({}): eval loss {:.4f}; {}/report.md", best->trial.name(), best->trial.describe(),
            *best->final_eval_loss, spec.dir);
  return 0;
}

}  // namespace mt::launch::sweep
