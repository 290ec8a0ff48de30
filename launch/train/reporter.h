// What: everything a training run tells its user. Log lines: the start-up account (model,
// mesh and batch split, compute, data, loader, memory), the per-step line every
// train.log_every steps, the eval line, skips, early stopping, preemption, the closing "done"
// line. On a terminal, a live progress line with MFU and ETA (rewritten in place; cleared
// before any other line). In the run directory: metrics.jsonl (one record per step and per
// eval), TensorBoard scalars under tb/ (run.tensorboard) and summary.json.
// Why: tests, scripts and users parse these names and texts; they are kept in one place so
// that the run loop holds decisions only. Every method may be called on every rank: only
// rank 0 writes records and prints (the memory line is every rank's).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "io/loader.h"
#include "io/metrics.h"
#include "io/tb_writer.h"
#include "launch/train/stats.h"
#include "launch/train/train_state.h"

namespace mt::launch {

// What the start-up lines and the records say about the run, gathered once before the first step.
struct RunFacts {
  std::string model;     // describe_model()
  int64_t params = 0;    // the full model's parameter count
  int world = 1, dp = 1, tp = 1, pp = 1;
  int stage = 0;  // this rank's pipeline stage (the leader's: 0)
  io::LoaderOptions loader;
  std::string compute, device, data;    // as the kernels, the device and the data source describe themselves
  std::string faults;                   // FaultInjector::describe()
  std::optional<double> entropy_floor;  // nats/token at model.seq_len, where the data source knows it
  double peak_flops = 0;                // whole job, FLOP/s, for MFU (rank 0; 0: none)
  double flops_per_token = 0;           // forward + backward at model.seq_len
};

// This process alone (summary.json's "this_process"; the run totals count every process).
struct ProcessFigures {
  int64_t steps = 0;
  double tokens_per_s = 0, wall_s = 0;
};

class Reporter {
 public:
  Reporter(const core::Config& cfg, bool leader);

  // Rank 0: whether <run.dir>/summary.json records a run of `steps` steps (false if unreadable).
  bool summary_records(int64_t steps) const;
  // The checkpoint at `start` ends the run (`stopped_early`: by early stopping); `done`:
  // summary.json already has its result.
  void already_complete(int64_t start, bool stopped_early, bool done) const;
  // Rank 0: opens metrics.jsonl (a resume at `start` drops the records after it, and its eval
  // record unless the run `ended` there) and the TensorBoard writer.
  void open(int64_t start, bool ended);
  // The start-up lines (rank 0), then this rank's memory line.
  void start(const RunFacts& facts, const std::string& memory_report);

  // After a step: its record, scalars, log line (every train.log_every steps and the last)
  // and the progress line. process_train_ms: this process's step time so far (for the ETA).
  void step(const StepStats& st, double process_train_ms);
  void skipped(int64_t steps_done, int64_t skipped_so_far) const;
  void eval(int64_t steps_done, const EvalResult& ev);
  void eval_abandoned(int64_t steps_done) const;
  void early_stop(int evals_without_gain) const;
  void preempted(int64_t steps_done, bool last) const;
  void stopped_for_preemption(int64_t steps_done, const std::string& checkpoint_dir) const;
  // The run paused at train.stop_at_step (`already`: its checkpoint was there at the start).
  void paused(int64_t steps_done, bool already) const;
  // Clears the progress line (before an error or the end of training).
  void end_progress_line() const;
  // summary.json and the "done" line. checksums: every rank's param_checksum().
  // mem: every rank's peak device memory of this process, by category at that peak.
  void summary(const TrainSummary& sum, const std::vector<int64_t>& checksums, const RunTotals& totals,
               const ProcessFigures& process, const std::vector<core::MemoryBreakdown>& mem);

 private:
  nlohmann::json best_eval_acc() const;  // summary.json's best_eval_acc (metrics.jsonl's highest)
  const core::Config& cfg_;
  const bool leader_;
  const bool live_;  // the progress line with ETA (a terminal, not mpirun's pty; rank 0)
  int64_t start_ = 0;
  RunFacts facts_;
  io::MetricsWriter metrics_;
  io::TbWriter tb_;
};

}  // namespace mt::launch
