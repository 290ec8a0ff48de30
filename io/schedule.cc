// What: permutation, planner, split across ranks and micro-batching (see schedule.h).
#include "io/schedule.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace mt::io {

SampleMode parse_sample_mode(const std::string& s) {
  if (s == "concat") return SampleMode::Concat;
  if (s == "documents") return SampleMode::Documents;
  if (s == "packed") return SampleMode::Packed;
  MT_FAIL("unknown data.mode '{}' (concat | documents | packed)", s);
}

const char* mode_name(SampleMode m) {
  switch (m) {
    case SampleMode::Concat: return "concat";
    case SampleMode::Documents: return "documents";
    case SampleMode::Packed: return "packed";
  }
  return "?";
}

SchedulePolicy parse_schedule_policy(const std::string& s) {
  if (s == "static") return SchedulePolicy::Static;
  if (s == "round_robin") return SchedulePolicy::RoundRobin;
  if (s == "balanced") return SchedulePolicy::Balanced;
  if (s == "dynamic") return SchedulePolicy::Dynamic;
  MT_FAIL("unknown data.schedule '{}' (static | round_robin | balanced | dynamic)", s);
}

const char* policy_name(SchedulePolicy p) {
  switch (p) {
    case SchedulePolicy::Static: return "static";
    case SchedulePolicy::RoundRobin: return "round_robin";
    case SchedulePolicy::Balanced: return "balanced";
    case SchedulePolicy::Dynamic: return "dynamic";
  }
  return "?";
}

// ------------------------------------------------------------------------- permutation
namespace {
uint64_t mix64(uint64_t z) {  // splitmix64's finaliser: a good 64-bit mixing function
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

EpochPermutation::EpochPermutation(uint64_t n, uint64_t seed, uint64_t epoch) : n_(n) {
  MT_CHECK(n >= 1 && n < (1ull << 62), "permutation of {} elements", n);
  int bits = 2;
  while (bits < 62 && (1ull << bits) < n) ++bits;
  half_bits_ = (bits + 1) / 2;  // the Feistel domain is 2^(2 half_bits) <= 4 n: <= 4 walks on average
  half_mask_ = (1ull << half_bits_) - 1;
  for (int r = 0; r < 6; ++r) {
    const auto k = core::philox4x32(seed, 0x5045524dull /* "PERM" */ + (epoch << 8), static_cast<uint64_t>(r));
    keys_[r] = (static_cast<uint64_t>(k[0]) << 32) | k[1];
  }
}

uint64_t EpochPermutation::feistel(uint64_t x) const {
  uint64_t l = x >> half_bits_, r = x & half_mask_;
  for (uint64_t k : keys_) {
    const uint64_t f = mix64(r ^ k) & half_mask_;
    const uint64_t nl = r;
    r = l ^ f;
    l = nl;
  }
  return (l << half_bits_) | r;
}

uint64_t EpochPermutation::operator()(uint64_t i) const {
  // cycle walking: the Feistel network permutes [0, 4^half_bits); following i's cycle until
  // it re-enters [0, n) gives a permutation of [0, n)
  uint64_t y = feistel(i);
  while (y >= n_) y = feistel(y);
  return y;
}

// ------------------------------------------------------------------------- planner
Planner::Planner(const PlannerOptions& o) : o_(o) {
  MT_CHECK(o_.seq_len >= 1, "planner needs seq_len >= 1");
  if (o_.mode == SampleMode::Concat) {
    MT_CHECK(o_.batch_samples >= 1, "concat mode needs batch_samples >= 1");
  } else {
    MT_CHECK(o_.num_samples > 0 && o_.sample_tokens && o_.sample_tokens->size() == o_.num_samples,
             "{} mode needs the documents' token counts", mode_name(o_.mode));
    if (o_.mode == SampleMode::Documents) MT_CHECK(o_.batch_tokens >= 1, "documents mode needs batch_tokens >= 1");
    if (o_.mode == SampleMode::Packed) MT_CHECK(o_.batch_samples >= 1, "packed mode needs batch_samples (rows) >= 1");
  }
}

const EpochPermutation& Planner::perm(uint64_t epoch) {
  if (epoch != perm_epoch_) {
    perm_ = EpochPermutation(o_.num_samples, o_.seed, epoch);
    perm_epoch_ = epoch;
  }
  return perm_;
}

SampleRef Planner::peek(PlannerState& s) {
  for (uint64_t skipped = 0;; ++skipped) {
    MT_CHECK(o_.num_samples == 0 || skipped <= o_.num_samples, "no sample of the split has 2 tokens");
    SampleRef r;
    r.epoch = s.epoch;
    if (o_.num_samples == 0) {
      r.id = s.pos++;
    } else {
      r.id = perm(s.epoch)(s.pos);
      if (++s.pos == o_.num_samples) {
        s.pos = 0;
        ++s.epoch;
      }
    }
    r.tokens = o_.sample_tokens ? (*o_.sample_tokens)[r.id] : o_.seq_len + 1;
    if (r.tokens >= 2) return r;
  }
}

void Planner::plan(StepPlan& out) {
  out.step = st_.step;
  out.samples.clear();
  out.targets = 0;
  out.row_starts.clear();
  out.T = 0;
  if (o_.mode == SampleMode::Concat) {
    for (int64_t j = 0; j < o_.batch_samples; ++j) out.samples.push_back(peek(st_));
    out.targets = o_.batch_samples * o_.seq_len;
  } else if (o_.mode == SampleMode::Packed) {
    // first fit in stream order: a document that does not fit the rest of the current row
    // starts the next; the step ends before a document that would need row batch_samples + 1
    // (it starts the next step). A document has at most seq_len positions, so it fits a row.
    out.T = o_.seq_len;
    int64_t rows = 0;
    int32_t used = o_.seq_len;  // positions used in the current row (none open yet)
    for (;;) {
      PlannerState next = st_;
      const SampleRef r = peek(next);
      const int32_t len = r.tokens - 1;
      if (used + len > o_.seq_len) {
        if (rows == o_.batch_samples) break;
        out.row_starts.push_back(static_cast<int32_t>(out.samples.size()));
        ++rows;
        used = 0;
      }
      out.samples.push_back(r);
      out.targets += len;
      used += len;
      st_.epoch = next.epoch;
      st_.pos = next.pos;
    }
    out.row_starts.push_back(static_cast<int32_t>(out.samples.size()));
  } else {
    for (;;) {
      PlannerState next = st_;
      const SampleRef r = peek(next);
      if (!out.samples.empty() && out.targets + (r.tokens - 1) > o_.batch_tokens) break;
      out.samples.push_back(r);
      out.targets += r.tokens - 1;
      st_.epoch = next.epoch;
      st_.pos = next.pos;
    }
  }
  ++st_.step;
}

PlannerState Planner::state_at(int64_t step, PlannerState from) {
  MT_CHECK(step >= from.step, "cannot plan backwards from step {} to {}", from.step, step);
  PlannerState s;
  s.step = step;
  if (o_.mode == SampleMode::Concat) {
    const uint64_t g = static_cast<uint64_t>(step) * static_cast<uint64_t>(o_.batch_samples);
    s.epoch = o_.num_samples == 0 ? 0 : g / o_.num_samples;
    s.pos = o_.num_samples == 0 ? g : g % o_.num_samples;
    return s;
  }
  const PlannerState saved = st_;
  st_ = from;
  StepPlan scratch;
  while (st_.step < step) plan(scratch);
  s = st_;
  st_ = saved;
  return s;
}

int32_t StepPlan::row_targets(int32_t k) const {
  int32_t t = 0;
  for (int32_t j = row_starts[static_cast<size_t>(k)]; j < row_starts[static_cast<size_t>(k) + 1]; ++j)
    t += samples[static_cast<size_t>(j)].tokens - 1;
  return t;
}

double row_cost(const StepPlan& plan, int32_t k, const CostModel& cost) {
  double c = 0;
  for (int32_t j = plan.row_starts[static_cast<size_t>(k)]; j < plan.row_starts[static_cast<size_t>(k) + 1]; ++j)
    c += cost(plan.samples[static_cast<size_t>(j)].tokens);
  return c + cost(plan.T - plan.row_targets(k) + 1);  // the padding: positions that still run
}

// ------------------------------------------------------------------------- split
std::vector<int64_t> apportion(int64_t count, const std::vector<double>& weights) {
  const size_t n = weights.size();
  std::vector<int64_t> out(n, 0);
  if (n == 0) return out;
  double total = 0;
  for (double w : weights) total += w > 0 ? w : 0;
  if (!(total > 0)) {
    std::vector<double> ones(n, 1.0);
    return apportion(count, ones);
  }
  std::vector<double> frac(n);
  int64_t given = 0;
  for (size_t i = 0; i < n; ++i) {
    const double q = static_cast<double>(count) * (weights[i] > 0 ? weights[i] : 0) / total;
    out[i] = static_cast<int64_t>(q);
    frac[i] = q - static_cast<double>(out[i]);
    given += out[i];
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return frac[a] > frac[b]; });
  for (size_t k = 0; given < count; k = (k + 1) % n, ++given) ++out[order[k]];
  return out;
}

void assign_samples(const StepPlan& plan, SampleMode mode, SchedulePolicy policy, int dp,
                    const std::vector<double>& speeds, const CostModel& cost,
                    std::vector<std::vector<int32_t>>& out) {
  MT_CHECK(dp >= 1, "dp must be >= 1");
  out.resize(static_cast<size_t>(dp));
  for (auto& v : out) v.clear();
  const bool packed = mode == SampleMode::Packed;
  const int32_t n = packed ? plan.rows() : static_cast<int32_t>(plan.samples.size());  // units to split
  std::vector<double> w(static_cast<size_t>(dp), 1.0);
  if (policy == SchedulePolicy::Dynamic && static_cast<int>(speeds.size()) == dp &&
      std::all_of(speeds.begin(), speeds.end(), [](double s) { return s > 0; })) {
    w = speeds;
  }
  const bool lpt = mode != SampleMode::Concat &&
                   (policy == SchedulePolicy::Balanced || policy == SchedulePolicy::Dynamic);
  if (policy == SchedulePolicy::RoundRobin) {
    for (int32_t i = 0; i < n; ++i) out[static_cast<size_t>(i % dp)].push_back(i);
  } else if (!lpt) {  // contiguous ranges: equal counts, or in proportion to the speeds
    const auto counts = apportion(n, w);
    int32_t next = 0;
    for (int r = 0; r < dp; ++r)
      for (int64_t k = 0; k < counts[static_cast<size_t>(r)]; ++k) out[static_cast<size_t>(r)].push_back(next++);
  } else {
    // greedy LPT: the costliest sample first, each to the replica that would finish it
    // earliest given its speed ((load + cost) / speed), ties to the lower replica
    std::vector<double> c(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i)
      c[static_cast<size_t>(i)] = packed ? row_cost(plan, i, cost) : cost(plan.samples[static_cast<size_t>(i)].tokens);
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return c[static_cast<size_t>(a)] > c[static_cast<size_t>(b)]; });
    std::vector<double> load(static_cast<size_t>(dp), 0.0);
    for (int32_t i : order) {
      int best = 0;
      double best_t = 0;
      for (int r = 0; r < dp; ++r) {
        const double t = (load[static_cast<size_t>(r)] + c[static_cast<size_t>(i)]) / w[static_cast<size_t>(r)];
        if (r == 0 || t < best_t) best = r, best_t = t;
      }
      load[static_cast<size_t>(best)] += c[static_cast<size_t>(i)];
      out[static_cast<size_t>(best)].push_back(i);
    }
    for (auto& v : out) std::sort(v.begin(), v.end());
  }
}

void plan_micro_batches(const StepPlan& plan, SampleMode mode, int micro_batch, int seq_len,
                        std::vector<int32_t>& mine, std::vector<MicroShape>& out) {
  out.clear();
  const int32_t n = static_cast<int32_t>(mine.size());
  if (mode != SampleMode::Documents) {  // concat windows, packed rows: all seq_len positions
    for (int32_t i = 0; i < n; i += micro_batch) out.push_back({i, std::min(micro_batch, n - i), seq_len});
    return;
  }
  const auto tok = [&](int32_t p) { return plan.samples[static_cast<size_t>(p)].tokens; };
  std::stable_sort(mine.begin(), mine.end(), [&](int32_t a, int32_t b) {
    return tok(a) != tok(b) ? tok(a) > tok(b) : a < b;
  });
  const int64_t cap = static_cast<int64_t>(micro_batch) * seq_len;
  for (int32_t i = 0; i < n;) {
    const int32_t T = tok(mine[static_cast<size_t>(i)]) - 1;
    const int32_t rows = static_cast<int32_t>(std::min<int64_t>(n - i, std::max<int64_t>(1, cap / T)));
    out.push_back({i, rows, T});
    i += rows;
  }
}

}  // namespace mt::io
