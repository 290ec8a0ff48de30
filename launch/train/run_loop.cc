// What: Trainer::run(), the training run around the steps: resume, the run directory, the
// steps, and after each step the eval if due, early stopping, preemption and the checkpoint;
// then the final eval and summary.json. With train.stop_at_step the run pauses there instead
// (an eval and a checkpoint, no final eval or summary): resume=auto continues (meshtrain sweep).
// Why this shape: RunLoop's members are the run's state (where it started, what this process
// did, the last eval and checkpoint, the summary so far); each decision point is one small
// function. What the user sees is the Reporter's, the step is the Stepper's, checkpoints are
// the CheckpointManager's; TrainState is what a checkpoint carries on to a resumed run.
// Preemption: after every step (and before an eval, and between eval batches) every rank
// learns whether any rank has received SIGTERM/SIGUSR1; then all write a checkpoint and stop,
// recording an abandoned eval as due so that resume=auto redoes it first.
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "io/metrics.h"
#include "launch/train/checkpoint_manager.h"
#include "launch/signals.h"
#include "launch/train/reporter.h"
#include "launch/train/trainer.h"

namespace mt::launch {

namespace {
// Creates `dir` (and parents) and checks that this process may write into it; else an Error
// naming the config key, raised before the first step rather than at the first checkpoint.
void ensure_writable_dir(const std::string& dir, const char* key, const char* what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!ec && ::access(dir.c_str(), W_OK) != 0) ec = std::error_code(errno, std::generic_category());
  if (ec) {
    throw core::Error(fmt::format("cannot write {} into {}", what, dir)).with_file(dir).with_yaml(key)
        .with_library(ec.message())
        .with_hint(fmt::format("set {} to a writable directory (checked before the first step)", key));
  }
}
}  // namespace

class RunLoop {
 public:
  explicit RunLoop(Trainer& t)
      : t_(t), cfg_(t.cfg_), tc_(t.cfg_.train), leader_(t.world_.rank() == 0), state_(t.state_),
        reporter_(t.cfg_, leader_) {}

  TrainSummary run() {
    resume();
    if (ended_ && already_done()) return done_summary();
    if (!ended_ && pauses_at(start_) && !state_.eval_due) {  // its checkpoint is at train.stop_at_step already
      reporter_.paused(start_, /*already=*/true);
      return done_summary();
    }
    open_run();
    announce_signals();  // (a signal during the start-up is announced now, acted on after the first step)
    // a run preempted during an eval: that eval first (and what follows from it)
    bool stopped = false;
    if (!ended_ && state_.eval_due && start_ < tc_.steps) {
      stopped = after_steps(start_, /*eval_now=*/true, /*checkpoint_due=*/pauses_at(start_));
      if (!stopped && pauses_at(start_)) stopped = paused_ = true;
    }
    state_.eval_due = false;
    for (int64_t s = start_; !ended_ && !stopped && s < tc_.steps; ++s) {
      const StepStats st = t_.step(s);
      record_step(st);
      stop_if_diverged(st);
      stopped = after_step(s);
    }
    reporter_.end_progress_line();
    // a run of no steps with checkpointing on writes its initial state (e.g. model.init_from
    // converted to a meshtrain checkpoint)
    if (tc_.steps == 0 && start_ == 0 && cfg_.checkpoint.every > 0 && !sum_.preempted) checkpoint(0, false);
    if (paused_) {  // train.stop_at_step: evaluated and checkpointed there; no final eval, no summary
      reporter_.paused(sum_.steps_done, /*already=*/false);
      return sum_;
    }
    final_eval();
    if (sum_.preempted) {
      reporter_.stopped_for_preemption(sum_.steps_done, t_.checkpoint_dir());
      return sum_;
    }
    write_summary();
    return sum_;
  }

 private:
  // The step to start from (a checkpoint's under checkpoint.resume). A checkpoint at (or past)
  // train.steps, or of a run that early-stopped, ends the run: a requeued or repeated
  // `resume=auto` trains nothing more.
  void resume() {
    start_ = cfg_.checkpoint.resume.empty() ? 0 : t_.restore_checkpoint();
    t_.load_initial_weights();  // model.init_from, unless a checkpoint was restored
    stopped_early_ = state_.patience_exhausted(tc_.early_stop_patience);
    ended_ = start_ > 0 && (start_ >= tc_.steps || stopped_early_);
  }

  // A run that has ended: done if summary.json already records its last step (nothing is
  // rewritten); else (the job died after its last checkpoint) the final eval and the summary
  // are redone.
  bool already_done() {
    int32_t done = leader_ && reporter_.summary_records(start_) ? 1 : 0;
    if (t_.world_.size() > 1) t_.world_.all_reduce(&done, 1, parallel::DType::I32, parallel::ReduceOp::Max);
    reporter_.already_complete(start_, stopped_early_, done != 0);
    return done != 0;
  }

  TrainSummary done_summary() const {
    TrainSummary sum;
    sum.steps_done = start_;
    sum.final_loss = state_.last_loss;
    sum.early_stopped = stopped_early_;
    return sum;
  }

  // The run directory (rank 0), the records and the start-up lines.
  void open_run() {
    if (leader_) {
      // the run directory and the checkpoint directory (a preemption writes one even with
      // checkpoint.every = 0) must be writable now, not after hours of training
      ensure_writable_dir(cfg_.run.dir, "run.dir", "the run's records");
      ensure_writable_dir(t_.checkpoint_dir(), cfg_.checkpoint.dir.empty() ? "run.dir" : "checkpoint.dir",
                          "checkpoints");
      io::write_file_atomic(cfg_.run.dir + "/config.yaml", core::config_to_yaml(cfg_));
      if (t_.on_run_start) t_.on_run_start();
      t_.checkpoints_->supersede_after(start_);
    }
    reporter_.open(start_, ended_);
    const RunFacts facts = run_facts();
    reporter_.start(facts, t_.memory_report());
    sum_.data_entropy = facts.entropy_floor;
    sum_.steps_done = start_;
    sum_.final_loss = state_.last_loss;
    sum_.skipped_steps = state_.skipped_steps;  // (a resumed run counts those before its checkpoint too)
    sum_.early_stopped = ended_ && stopped_early_;
  }

  RunFacts run_facts() const {
    RunFacts f;
    f.world = t_.world_.size();
    f.dp = t_.mesh().dp();
    f.tp = t_.mesh().tp();
    f.pp = t_.mesh().pp();
    f.stage = t_.mesh().coords(t_.world_.rank()).pp;
    f.params = t_.model().num_full_params();
    if (leader_) f.peak_flops = t_.peak_gflops_per_rank() * 1e9 * t_.world_.size();  // (CPU: measures sgemm)
    f.flops_per_token = t_.model().flops_per_token(cfg_.model.seq_len);
    f.entropy_floor = t_.data_->entropy_floor(cfg_.model.seq_len);
    if (leader_) {  // (what the start-up lines describe)
      f.model = describe_model(cfg_, t_.model());
      f.loader = t_.loader_->options();
      f.compute = t_.ops().describe();
      f.device = t_.device().description();
      f.data = t_.data_->describe();
      f.faults = t_.faults_.describe();
    }
    return f;
  }

  // A step's accounting: this process's and the run's totals, the skip counts, the records.
  void record_step(const StepStats& st) {
    process_train_ms_ += st.ms;
    process_tokens_ += static_cast<double>(st.tokens);
    state_.totals.train_ms += st.ms;
    state_.totals.tokens += static_cast<double>(st.tokens);
    sum_.losses.push_back(st.loss);
    sum_.final_loss = state_.last_loss = st.loss;
    sum_.steps_done = st.step + 1;
    if (st.skipped) {
      sum_.skipped_steps = ++state_.skipped_steps;
      ++state_.skipped_in_row;
      reporter_.skipped(st.step + 1, sum_.skipped_steps);
    } else {
      state_.skipped_in_row = 0;
      if (!std::isfinite(st.loss)) {
        throw core::Error(fmt::format("non-finite loss at step {}", st.step)).with_hint("lower optim.lr");
      }
    }
    reporter_.step(st, process_train_ms_);
  }

  // A run that diverged skips every step: stop it as nonfinite=stop does, after this step's
  // record and before its checkpoint, so the last good one is kept (every rank stops here:
  // the gradient norm is the same on every rank).
  void stop_if_diverged(const StepStats& st) const {
    const int in_row = state_.skipped_in_row;
    if (!st.skipped || tc_.max_skips_in_row <= 0 || in_row < tc_.max_skips_in_row) return;
    reporter_.end_progress_line();
    throw core::Error(fmt::format("{} consecutive steps skipped for a non-finite gradient norm (steps {} to {}), "
                                  "train.max_skips_in_row = {}: the run has diverged; stopping with the last "
                                  "checkpoint kept",
                                  in_row, st.step + 1 - in_row, st.step, tc_.max_skips_in_row))
        .with_yaml("train.max_skips_in_row")
        .with_hint("lower optim.lr or check the data, then resume from the last checkpoint; "
                   "train.max_skips_in_row=0 skips without limit");
  }

  // The run pauses with `done` steps done: train.stop_at_step is set, reached and before train.steps.
  bool pauses_at(int64_t done) const {
    return tc_.stop_at_step > 0 && done >= tc_.stop_at_step && done < tc_.steps;
  }

  // After step s: the periodic eval (not after the last step: the final eval follows) and
  // checkpoint (every checkpoint.every steps and after the last); at train.stop_at_step both,
  // and the run pauses. True: the run stops.
  bool after_step(int64_t s) {
    const int64_t done = s + 1;
    const bool last = done == tc_.steps;
    const bool pause = pauses_at(done);
    const bool eval_now = !last && ((tc_.eval_every > 0 && done % tc_.eval_every == 0) || pause);
    const bool checkpoint_due = (cfg_.checkpoint.every > 0 && (done % cfg_.checkpoint.every == 0 || last)) || pause;
    const bool stop = after_steps(done, eval_now, checkpoint_due);
    if (pause && !stop) paused_ = true;  // (an early stop or a preemption there ends or stops it as usual)
    return stop || pause;
  }

  // After `at` steps: agree on preemption before the eval (a long eval must not outlast the
  // grace period), the eval if due (abandoned on a signal: the checkpoint records it as due,
  // and resume=auto redoes it first), early stopping, the checkpoint. True: the run stops.
  bool after_steps(int64_t at, bool eval_now, bool checkpoint_due) {
    bool preempt = t_.agree_preemption(), stop = false;
    if (eval_now && !preempt) {
      if (!eval(at)) {
        preempt = true;
      } else if (state_.patience_exhausted(tc_.early_stop_patience)) {
        sum_.early_stopped = stop = true;
        reporter_.early_stop(state_.evals_without_gain);
      }
    }
    if (preempt) {  // also after the last step: the final eval may outlast the grace period
      sum_.preempted = stop = true;
      reporter_.preempted(at, at >= tc_.steps);
    }
    if (checkpoint_due || (cfg_.checkpoint.every > 0 && stop) || preempt) {
      checkpoint(at, /*eval_due=*/eval_now && preempt);  // (an eval that did not happen)
    }
    return stop;
  }

  // The eval after `at` steps; false if a preemption signal abandoned it (nothing recorded).
  bool eval(int64_t at) {
    const std::optional<double> res = t_.evaluate_unless_preempted(/*interruptible=*/true);
    if (!res) {
      reporter_.eval_abandoned(at);
      return false;
    }
    const double ev = *res;
    sum_.final_eval_loss = ev;
    sum_.final_eval = t_.last_eval();
    last_eval_step_ = at;
    reporter_.eval(at, t_.last_eval());
    if (ev < state_.best_eval - tc_.early_stop_min_delta) {
      state_.best_eval = ev;
      state_.evals_without_gain = 0;
    } else {
      ++state_.evals_without_gain;
    }
    return true;
  }

  void checkpoint(int64_t at, bool eval_due) {
    state_.eval_due = eval_due;
    t_.save_checkpoint(at);
    state_.eval_due = false;
    last_checkpoint_step_ = at;
  }

  // The final eval (unless an early stop has just evaluated); a preemption signal abandons it,
  // after a checkpoint of the finished training, and resume=auto finishes the run.
  void final_eval() {
    if (sum_.preempted || last_eval_step_ == sum_.steps_done || eval(sum_.steps_done)) return;
    sum_.preempted = true;
    if (last_checkpoint_step_ != sum_.steps_done) checkpoint(sum_.steps_done, /*eval_due=*/false);
  }

  // summary.json: this process alone (from the trainer's construction, as the checkpoints
  // count it) and the whole run (every process that trained it, resumes included): equal for
  // a run of one start; and every rank's parameter checksum, so callers can verify that
  // replicas agree bit for bit.
  void write_summary() {
    ProcessFigures process;
    process.steps = sum_.steps_done - start_;
    process.wall_s = ms_between(t_.started_, Clock::now()) / 1000.0;
    process.tokens_per_s = process_train_ms_ > 0 ? process_tokens_ / (process_train_ms_ / 1000.0) : 0;
    sum_.wall_s = state_.totals.wall_s + process.wall_s;
    sum_.tokens_per_s =
        state_.totals.train_ms > 0 ? state_.totals.tokens / (state_.totals.train_ms / 1000.0) : 0;
    std::vector<int64_t> sums(t_.world_.size(), 0);
    const int64_t mine = static_cast<int64_t>(t_.param_checksum());
    t_.world_.all_gather(&mine, sums.data(), 1, parallel::DType::I64);
    // every rank's peak device memory (this process) with its breakdown
    const core::MemoryBreakdown peak = t_.device().memory_stats().peak;
    std::vector<int64_t> mine_mem(peak.bytes.begin(), peak.bytes.end());
    std::vector<int64_t> all_mem(mine_mem.size() * static_cast<size_t>(t_.world_.size()));
    t_.world_.all_gather(mine_mem.data(), all_mem.data(), mine_mem.size(), parallel::DType::I64);
    std::vector<core::MemoryBreakdown> mem(static_cast<size_t>(t_.world_.size()));
    for (size_t r = 0; r < mem.size(); ++r)
      for (size_t c = 0; c < mine_mem.size(); ++c) mem[r].bytes[c] = static_cast<size_t>(all_mem[r * mine_mem.size() + c]);
    reporter_.summary(sum_, sums, state_.totals, process, mem);
  }

  Trainer& t_;
  const core::Config& cfg_;
  const core::TrainConfig& tc_;
  const bool leader_;
  TrainState& state_;  // the trainer's: checkpoints carry it
  Reporter reporter_;
  int64_t start_ = 0;           // the step this process starts from (a checkpoint's, on resume)
  bool stopped_early_ = false;  // the checkpoint's run stopped early (its patience ran out)
  bool ended_ = false;          // the checkpoint ends the run: no steps, at most the final eval
  bool paused_ = false;         // stopped at train.stop_at_step (checkpointed; resume=auto goes on)
  double process_train_ms_ = 0, process_tokens_ = 0;  // this process's steps
  int64_t last_eval_step_ = -1, last_checkpoint_step_ = -1;
  TrainSummary sum_;
};

TrainSummary Trainer::run() { return RunLoop(*this).run(); }

}  // namespace mt::launch
