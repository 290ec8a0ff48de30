// What: the data loader. A background thread plans each step's global batch (schedule.h),
// takes this dp replica's share, reads its samples from the DataSource and lays them out as
// ready micro-batches (inputs, targets; documents padded with target -1; packed rows with
// their documents' ids) in a bounded queue
// of `prefetch` batches whose buffers are reused, so memory does not grow with the dataset.
// The training thread takes batch s with next(s) and only waits if the thread is behind
// (that wait is the step's data_wait_ms).
//
// Determinism: a batch is a pure function of (seed, step, the planner state, the split
// weights), never of timing or thread count. The dynamic schedule's weights for step s are
// the throughput estimates after step s - 1 - prefetch (the thread runs `prefetch` steps
// ahead); the training thread exchanges measurements (a collective: this thread never calls
// MPI) and hands them in with report(). state() / restore() carry the planner position, the
// estimates and the weights already fixed for steps in flight, so a restored loader yields
// exactly the stream of an uninterrupted one.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "io/data_source.h"
#include "io/schedule.h"

namespace mt::io {

struct LoaderOptions {
  SampleMode mode = SampleMode::Concat;
  SchedulePolicy policy = SchedulePolicy::Balanced;
  int seq_len = 0;
  int micro_batch = 1;        // concat, packed: rows per micro-batch; documents: micro_batch x seq_len positions
  int64_t batch_samples = 0;  // concat: samples per global batch; packed: rows of seq_len per global batch
  int64_t batch_tokens = 0;   // documents: targets per global batch
  int eod_token = -1;         // the source's end-of-document token (part of the stream's identity in state())
  uint64_t seed = 0;          // shuffling
  int dp = 1, dp_rank = 0;    // data-parallel replicas and ours (tp ranks of a replica get the same)
  int prefetch = 2;           // batches prepared ahead (and the dynamic schedule's lag)
  CostModel cost;
  static LoaderOptions from_config(const core::Config& cfg, int dp, int dp_rank);
};

struct MicroBatch {
  int B = 0, T = 0;
  std::vector<int32_t> inputs, targets;  // (B, T); target -1: padding, no loss
  // packed: (B, T) per row 0, 1, 2, ... for its successive documents and the next id for the
  // padding at its end (attention stays within a document); empty in concat and documents modes
  std::vector<int32_t> doc_ids;
};

struct Batch {
  int64_t step = -1;
  int n_micro = 0;                  // micro[0 .. n_micro) are this step's (buffers are reused)
  std::vector<MicroBatch> micro;
  std::vector<SampleRef> samples;   // this replica's samples, in row order (packed: row by row)
  int64_t global_samples = 0;
  int64_t global_targets = 0;       // the step's loss normaliser (same on every rank)
  int64_t targets = 0;              // this replica's
  int64_t positions = 0;            // this replica's positions (B x T summed over its micro-batches)
  int64_t global_positions = 0;     // every replica's: pad fraction = 1 - global_targets / global_positions
  double cost = 0;                  // this replica's modelled cost (CostModel units)
  PlannerState after;               // the planner's position after this step
};

class Loader {
 public:
  // `src` must outlive the loader. Validates the data against the batch (a split smaller
  // than one global batch is an Error naming the dataset). The thread starts on first next().
  Loader(const DataSource& src, const LoaderOptions& o, const std::string& data_name = "");
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // This replica's batch of step `step` (valid until the next call). Sequential steps come
  // from the queue; any other step restarts the thread there. *wait_ms: time spent waiting.
  const Batch& next(int64_t step, double* wait_ms = nullptr);
  // After step `step`: every replica's modelled cost and compute milliseconds (identical on
  // every rank, e.g. all-gathered). Updates the throughput estimates and fixes the dynamic
  // weights of step + 1 + prefetch.
  void report(int64_t step, const std::vector<double>& cost, const std::vector<double>& ms);
  // The state after the steps consumed so far (JSON text), and its restoration (before the
  // next next(); `step` is the step to continue from).
  std::string state() const;
  void restore(const std::string& state_json, int64_t step);

  // The k-th batch of the eval set (the first eval batches of the eval split in epoch 0
  // order, split statically), read on the calling thread. Sequential k from 0 is O(1) each.
  void eval_batch(int64_t k, Batch& out);

  const LoaderOptions& options() const { return o_; }
  const std::vector<double>& estimates() const { return est_; }
  int64_t steps_per_epoch_hint() const;  // concat: samples per epoch / batch (0 if unbounded)

 private:
  struct Scratch {
    StepPlan plan;
    std::vector<std::vector<int32_t>> shares;
    std::vector<MicroShape> shapes;
    std::vector<int32_t> tokens;
    std::vector<int32_t> other;              // another replica's share (its positions)
    std::vector<MicroShape> other_shapes;
  };
  void fill(const StepPlan& plan, const std::vector<double>& weights, Split split, Scratch& sc, Batch& b) const;
  void thread_main();
  void stop_thread();
  void start_thread(int64_t step);
  std::vector<double> weights_for(int64_t step);  // under mu_

  const DataSource& src_;
  LoaderOptions o_;
  PlannerOptions popt_[2];  // train, eval
  std::unique_ptr<Planner> planner_, eval_planner_;
  Scratch sc_, eval_sc_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
  bool running_ = false, stop_ = false;
  std::exception_ptr error_;
  std::vector<std::unique_ptr<Batch>> slots_;
  std::vector<Batch*> free_;
  std::deque<Batch*> ready_;
  Batch* current_ = nullptr;
  int64_t expected_ = -1;   // the step next() expects when the queue is valid
  PlannerState anchor_;     // a known planner state (consumed or restored)
  std::vector<double> est_;                     // per replica, mean 1
  std::map<int64_t, std::vector<double>> weights_;  // dynamic: fixed weights per step
  int64_t reports_ = 0;
};

}  // namespace mt::io
