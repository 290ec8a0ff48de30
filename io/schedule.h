// What: the pure arithmetic of the data loader, no I/O and no threads:
//   EpochPermutation  a keyed pseudo-random permutation of [0, n) (Feistel network with cycle
//                     walking), a pure function of (seed, epoch): O(1) memory for any n < 2^63;
//   Planner           the global batch of each step: the next samples of the stream
//                     epoch 0 permuted, epoch 1 permuted, ...; `concat` takes a fixed number of
//                     windows, `documents` takes documents until a token budget is reached,
//                     `packed` lays documents end to end into a fixed number of rows of seq_len
//                     positions (first fit in stream order: a document that does not fit the
//                     rest of a row starts the next one; never reordered, never split);
//   assign_samples    the split of a step's global batch across dp replicas by policy
//                     (static: contiguous, round_robin: interleaved, balanced: greedy LPT on a
//                     cost model, dynamic: in proportion to measured throughput); packed mode
//                     splits whole rows;
//   plan_micro_batches  a rank's share cut into micro-batches (documents: one document per row,
//                     rows of similar length together, padded with target -1; packed: rows of
//                     seq_len, padded at their ends).
// Why: the global batch of every step is the same set of samples whatever dp and whatever the
// policy (only its split differs), and every random choice depends only on (seed, epoch), so
// losses agree across layouts, runs reproduce, and the planner state is three integers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mt::io {

enum class SampleMode { Concat, Documents, Packed };
enum class SchedulePolicy { Static, RoundRobin, Balanced, Dynamic };
SampleMode parse_sample_mode(const std::string& s);          // "concat" | "documents" | "packed"
const char* mode_name(SampleMode m);
SchedulePolicy parse_schedule_policy(const std::string& s);  // "static" | "round_robin" | ...
const char* policy_name(SchedulePolicy p);

// A bijection of [0, n) keyed by (seed, epoch). n >= 1.
class EpochPermutation {
 public:
  EpochPermutation(uint64_t n, uint64_t seed, uint64_t epoch);
  uint64_t operator()(uint64_t i) const;
  uint64_t size() const { return n_; }

 private:
  uint64_t feistel(uint64_t x) const;
  uint64_t n_;
  int half_bits_;
  uint64_t half_mask_;
  uint64_t keys_[6];
};

// One sample of a step's global batch.
struct SampleRef {
  uint64_t id = 0;      // concat: window index; documents, packed: document index (in the split)
  uint64_t epoch = 0;   // the epoch of the stream it was drawn in
  int32_t tokens = 0;   // tokens read: inputs = tokens - 1 positions, targets = tokens - 1
};

struct StepPlan {
  int64_t step = 0;
  std::vector<SampleRef> samples;  // in stream order
  int64_t targets = 0;             // sum of (tokens - 1): the loss normaliser of the step
  // packed: row k holds samples [row_starts[k], row_starts[k + 1]) end to end, in T positions
  // (rows + 1 entries); empty in the other modes
  std::vector<int32_t> row_starts;
  int32_t T = 0;  // packed: positions per row (seq_len)
  int32_t rows() const { return row_starts.empty() ? 0 : static_cast<int32_t>(row_starts.size()) - 1; }
  // packed: the target positions of row k (the rest of its T positions is padding)
  int32_t row_targets(int32_t k) const;
};

// The position of the stream before a step: all the planner needs to continue.
struct PlannerState {
  int64_t step = 0;
  uint64_t epoch = 0;
  uint64_t pos = 0;  // next position in epoch `epoch`'s permutation
  bool operator==(const PlannerState& o) const { return step == o.step && epoch == o.epoch && pos == o.pos; }
};

struct PlannerOptions {
  SampleMode mode = SampleMode::Concat;
  uint64_t num_samples = 0;  // samples in one epoch; 0 = an unbounded stream (id = position)
  // documents, packed: tokens of each sample (<= seq_len + 1; samples with < 2 tokens are
  // skipped); null in concat mode (every sample has seq_len + 1 tokens)
  const std::vector<int32_t>* sample_tokens = nullptr;
  int seq_len = 0;
  int64_t batch_samples = 0;  // concat: samples per step; packed: rows of seq_len positions per step
  int64_t batch_tokens = 0;   // documents: targets per step (documents are added while they fit)
  uint64_t seed = 0;
};

class Planner {
 public:
  explicit Planner(const PlannerOptions& o);
  // Plans step state().step into `out` (its vector is reused) and advances.
  void plan(StepPlan& out);
  const PlannerState& state() const { return st_; }
  void set_state(const PlannerState& s) { st_ = s; }
  // The state before step `step` in concat mode (a closed form: step * batch_samples); in
  // documents and packed modes plans steps [from.step, step) from `from`.
  PlannerState state_at(int64_t step, PlannerState from = {});

 private:
  // The sample at the stream position `s` and the position after it (skipping samples with
  // fewer than 2 tokens).
  SampleRef peek(PlannerState& s);
  const EpochPermutation& perm(uint64_t epoch);
  PlannerOptions o_;
  PlannerState st_;
  EpochPermutation perm_{1, 0, 0};
  uint64_t perm_epoch_ = ~0ull;
};

// Modelled forward+backward cost of a sample of `tokens` tokens: linear layers grow with the
// length, attention with its square. The coefficients are the model's
// (parallel::Architecture::sample_cost; LoaderOptions::from_config takes them from model.arch).
struct CostModel {
  double per_token = 1.0;
  double per_token_sq = 0.0;
  double operator()(int32_t tokens) const {
    const double t = tokens > 1 ? tokens - 1 : 0;  // positions that run through the model
    return per_token * t + per_token_sq * t * t;
  }
};

// Splits `count` items in proportion to `weights` (largest remainder; ties to the lower index).
std::vector<int64_t> apportion(int64_t count, const std::vector<double>& weights);

// The split of a step's global batch across `dp` replicas: out[r] lists positions in
// plan.samples (packed: row indices), in the order replica r processes them. `speeds` (dp
// entries, relative throughput) is used by Dynamic only. Deterministic given its arguments.
// balanced / dynamic run LPT on the cost model in documents and packed modes (a packed row
// costs what its documents cost, plus its padding: row_cost); concat splits contiguously.
void assign_samples(const StepPlan& plan, SampleMode mode, SchedulePolicy policy, int dp,
                    const std::vector<double>& speeds, const CostModel& cost,
                    std::vector<std::vector<int32_t>>& out);

// Modelled cost of packed row k of `plan`: its documents and its padding, each a separate
// causal segment (the attention of a position spans its own document only).
double row_cost(const StepPlan& plan, int32_t k, const CostModel& cost);

// One micro-batch of a rank's share: rows [first, first + rows) of its ordered list, each
// padded to T positions.
struct MicroShape {
  int32_t first = 0, rows = 0, T = 0;
};
// Cuts a rank's share (positions into plan.samples, reordered in place: documents are sorted
// by length, longest first, ties by position) into micro-batches: concat and packed:
// `micro_batch` rows of seq_len (packed: `mine` lists rows); documents: rows of the
// micro-batch's longest document, at most micro_batch * seq_len padded positions each.
void plan_micro_batches(const StepPlan& plan, SampleMode mode, int micro_batch, int seq_len,
                        std::vector<int32_t>& mine, std::vector<MicroShape>& out);

}  // namespace mt::io
