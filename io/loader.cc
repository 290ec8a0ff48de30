// What: Loader (see loader.h).
#include "io/loader.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "parallel/models/registry.h"

namespace mt::io {

namespace {
constexpr int kStateFormat = 1;
constexpr double kEma = 0.5;                          // weight of the newest throughput measurement
constexpr double kMinEstimate = 0.05, kMaxEstimate = 20.0;  // relative to the mean replica

int64_t total_targets(const std::vector<int32_t>& tokens) {
  int64_t t = 0;
  for (int32_t n : tokens) t += n >= 2 ? n - 1 : 0;
  return t;
}
}  // namespace

LoaderOptions LoaderOptions::from_config(const core::Config& cfg, int dp, int dp_rank) {
  LoaderOptions o;
  o.mode = parse_sample_mode(cfg.data.mode);
  o.policy = parse_schedule_policy(cfg.data.schedule);
  o.seq_len = cfg.model.seq_len;
  o.micro_batch = cfg.train.micro_batch;
  o.batch_samples = cfg.train.batch_size;
  o.batch_tokens = cfg.data.batch_tokens > 0 ? cfg.data.batch_tokens
                                             : static_cast<int64_t>(cfg.train.batch_size) * cfg.model.seq_len;
  o.eod_token = cfg.data.eod_token;
  o.seed = cfg.train.seed;
  o.dp = dp;
  o.dp_rank = dp_rank;
  o.prefetch = cfg.data.prefetch;
  const auto c = parallel::make_architecture(cfg.model)->sample_cost();
  o.cost = CostModel{c.per_token, c.per_token_sq};
  return o;
}

Loader::Loader(const DataSource& src, const LoaderOptions& o, const std::string& data_name) : src_(src), o_(o) {
  MT_CHECK(o_.dp >= 1 && o_.dp_rank >= 0 && o_.dp_rank < o_.dp, "loader: dp rank {} of {}", o_.dp_rank, o_.dp);
  MT_CHECK(o_.prefetch >= 1, "loader: prefetch must be >= 1");
  if (o_.dp == 1) o_.policy = SchedulePolicy::Static;  // one replica: nothing to split
  if (o_.mode == SampleMode::Concat) o_.eod_token = -1;  // (concat reads the stream as stored)
  const std::string where = data_name.empty() ? src.describe() : data_name;
  for (int k = 0; k < 2; ++k) {
    const Split split = k == 0 ? Split::Train : Split::Eval;
    const char* label = k == 0 ? "train" : "eval (val)";
    PlannerOptions& p = popt_[k];
    p.mode = o_.mode;
    p.num_samples = src.epoch_samples(split);
    p.sample_tokens = src.sample_tokens(split);
    p.seq_len = o_.seq_len;
    p.batch_samples = o_.batch_samples;
    p.batch_tokens = o_.batch_tokens;
    p.seed = o_.seed;
    if (o_.mode == SampleMode::Documents) {
      MT_CHECK(p.sample_tokens != nullptr && p.num_samples > 0, "documents mode needs a dataset with documents");
      const int64_t t = total_targets(*p.sample_tokens);
      if (t < o_.batch_tokens) {
        throw core::Error(fmt::format("the {} split holds {} target tokens (documents truncated to seq_len + 1 = {}), "
                                      "fewer than one global batch of data.batch_tokens = {}",
                                      label, t, o_.seq_len + 1, o_.batch_tokens))
            .with_file(where).with_yaml("data.batch_tokens")
            .with_hint(k == 0 ? "use a smaller data.batch_tokens (or train.batch_size), or more data"
                              : "the eval set is train.eval_batches global batches of the val split: prep with a "
                                "larger --val-fraction, or use a smaller batch");
      }
    } else if (o_.mode == SampleMode::Packed) {
      MT_CHECK(p.sample_tokens != nullptr && p.num_samples > 0, "packed mode needs a dataset with documents");
      const int64_t t = total_targets(*p.sample_tokens), rows = o_.batch_samples * o_.seq_len;
      if (t < rows) {
        throw core::Error(fmt::format("the {} split holds {} target tokens (documents truncated to seq_len + 1 = {}), "
                                      "fewer than one global batch of train.batch_size = {} rows of {} positions",
                                      label, t, o_.seq_len + 1, o_.batch_samples, o_.seq_len))
            .with_file(where).with_yaml("train.batch_size")
            .with_hint(k == 0 ? "use a smaller train.batch_size or model.seq_len, or more data"
                              : "the eval set is train.eval_batches global batches of the val split: prep with a "
                                "larger --val-fraction, or use a smaller batch");
      }
    } else if (p.num_samples > 0 && p.num_samples < static_cast<uint64_t>(o_.batch_samples)) {
      throw core::Error(fmt::format("the {} split holds {} windows of seq_len + 1 = {} tokens, fewer than one global "
                                    "batch of train.batch_size = {}", label, p.num_samples, o_.seq_len + 1,
                                    o_.batch_samples))
          .with_file(where).with_yaml("train.batch_size")
          .with_hint(k == 0 ? "use a smaller train.batch_size or model.seq_len, or more data"
                            : "the eval set is train.eval_batches global batches of the val split: prep with a "
                              "larger --val-fraction, or use a smaller batch");
    }
  }
  planner_ = std::make_unique<Planner>(popt_[0]);
  eval_planner_ = std::make_unique<Planner>(popt_[1]);
  est_.assign(static_cast<size_t>(o_.dp), 1.0);
  for (int i = 0; i < o_.prefetch + 1; ++i) slots_.push_back(std::make_unique<Batch>());
  for (auto& s : slots_) free_.push_back(s.get());
}

Loader::~Loader() { stop_thread(); }

int64_t Loader::steps_per_epoch_hint() const {
  return o_.mode == SampleMode::Concat && popt_[0].num_samples > 0
             ? static_cast<int64_t>(popt_[0].num_samples / static_cast<uint64_t>(o_.batch_samples))
             : 0;
}

// ------------------------------------------------------------------------- batches
namespace {
int64_t positions_of(const std::vector<MicroShape>& shapes) {
  int64_t p = 0;
  for (const auto& s : shapes) p += static_cast<int64_t>(s.rows) * s.T;
  return p;
}
}  // namespace

void Loader::fill(const StepPlan& plan, const std::vector<double>& weights, Split split, Scratch& sc,
                  Batch& b) const {
  const SchedulePolicy policy = split == Split::Train ? o_.policy : SchedulePolicy::Static;
  const bool packed = o_.mode == SampleMode::Packed;
  assign_samples(plan, o_.mode, policy, o_.dp, weights, o_.cost, sc.shares);
  b.global_positions = 0;
  if (o_.mode == SampleMode::Documents) {  // rows are as long as a micro-batch's longest: every share's shapes
    for (int r = 0; r < o_.dp; ++r) {
      if (r == o_.dp_rank) continue;
      sc.other = sc.shares[static_cast<size_t>(r)];
      plan_micro_batches(plan, o_.mode, o_.micro_batch, o_.seq_len, sc.other, sc.other_shapes);
      b.global_positions += positions_of(sc.other_shapes);
    }
  }
  std::vector<int32_t>& mine = sc.shares[static_cast<size_t>(o_.dp_rank)];  // samples (packed: rows)
  plan_micro_batches(plan, o_.mode, o_.micro_batch, o_.seq_len, mine, sc.shapes);
  b.step = plan.step;
  b.global_samples = static_cast<int64_t>(plan.samples.size());
  b.global_targets = plan.targets;
  b.positions = positions_of(sc.shapes);
  b.global_positions = o_.mode == SampleMode::Documents
                           ? b.global_positions + b.positions
                           : static_cast<int64_t>(packed ? plan.rows() : b.global_samples) * o_.seq_len;
  b.targets = 0;
  b.cost = 0;
  b.samples.clear();
  for (int32_t p : mine) {
    if (packed) {
      for (int32_t j = plan.row_starts[static_cast<size_t>(p)]; j < plan.row_starts[static_cast<size_t>(p) + 1]; ++j)
        b.samples.push_back(plan.samples[static_cast<size_t>(j)]);
      b.targets += plan.row_targets(p);
      b.cost += row_cost(plan, p, o_.cost);
      continue;
    }
    const SampleRef& r = plan.samples[static_cast<size_t>(p)];
    b.samples.push_back(r);
    b.targets += r.tokens - 1;
    b.cost += o_.cost(r.tokens);
  }
  if (b.micro.size() < sc.shapes.size()) b.micro.resize(sc.shapes.size());
  b.n_micro = static_cast<int>(sc.shapes.size());
  sc.tokens.resize(static_cast<size_t>(o_.seq_len) + 1);
  // samples are scattered over the dataset: start fetching about 1 Ki tokens ahead of the copy.
  // Measured (bench data, 16 M uint16 tokens in the page cache): seq_len 1024 reads 5% faster
  // 1 row ahead than 4; seq_len 128 reads 20% faster 4-8 rows ahead than 1.
  const size_t kAhead = std::clamp<size_t>(1024 / static_cast<size_t>(o_.seq_len + 1), 1, 8);
  for (size_t i = 0; i < std::min(kAhead, b.samples.size()); ++i) src_.prefetch(split, b.samples[i].id);
  size_t next = 0;  // the next of b.samples to copy
  for (size_t m = 0; m < sc.shapes.size(); ++m) {
    const MicroShape& s = sc.shapes[m];
    MicroBatch& mb = b.micro[m];
    mb.B = s.rows;
    mb.T = s.T;
    const size_t n = static_cast<size_t>(s.rows) * static_cast<size_t>(s.T);
    mb.inputs.resize(n);  // capacity is kept: no allocation once the largest shape was seen
    mb.targets.resize(n);
    mb.doc_ids.resize(packed ? n : 0);
    for (int32_t r = 0; r < s.rows; ++r) {
      // one sample per row; packed: the row's documents end to end, doc ids 0, 1, ...
      const int32_t row = mine[static_cast<size_t>(s.first + r)];
      const int32_t docs =
          packed ? plan.row_starts[static_cast<size_t>(row) + 1] - plan.row_starts[static_cast<size_t>(row)] : 1;
      int32_t* in = mb.inputs.data() + static_cast<size_t>(r) * static_cast<size_t>(s.T);
      int32_t* tg = mb.targets.data() + static_cast<size_t>(r) * static_cast<size_t>(s.T);
      int32_t* id = packed ? mb.doc_ids.data() + static_cast<size_t>(r) * static_cast<size_t>(s.T) : nullptr;
      int32_t at = 0;  // positions of the row filled
      for (int32_t d = 0; d < docs; ++d) {
        const SampleRef& ref = b.samples[next];
        if (++next + kAhead <= b.samples.size()) src_.prefetch(split, b.samples[next + kAhead - 1].id);
        src_.sample(split, ref.id, o_.seq_len, sc.tokens.data());  // ref.tokens = len + 1 tokens
        const int32_t len = ref.tokens - 1;                          // positions with a target
        MT_CHECK(at + len <= s.T, "loader: a row of {} positions overflows ({} + {})", s.T, at, len);
        const int32_t* t = sc.tokens.data();
        for (int32_t i = 0; i < len; ++i) {  // one pass over the (L1-resident) row for both
          in[at + i] = t[i];
          tg[at + i] = t[i + 1];
        }
        if (id) std::fill(id + at, id + at + len, d);
        at += len;
      }
      std::fill(in + at, in + s.T, 0);  // padding after the documents: never attended to by them (causal)
      std::fill(tg + at, tg + s.T, -1);
      if (id) std::fill(id + at, id + s.T, docs);  // an id of its own
    }
  }
}

std::vector<double> Loader::weights_for(int64_t step) {
  if (o_.policy != SchedulePolicy::Dynamic) return {};
  auto it = weights_.find(step);
  return it == weights_.end() ? est_ : it->second;
}

void Loader::thread_main() {
  try {
    for (;;) {
      std::unique_lock<std::mutex> lk(mu_);
      const auto can_plan = [&] {
        return stop_ || (!free_.empty() && (o_.policy != SchedulePolicy::Dynamic ||
                                            weights_.count(planner_->state().step) > 0));
      };
      cv_.wait(lk, can_plan);
      if (stop_) return;
      Batch* b = free_.back();
      free_.pop_back();
      const std::vector<double> w = weights_for(planner_->state().step);
      lk.unlock();
      planner_->plan(sc_.plan);  // only this thread touches planner_ while it runs
      fill(sc_.plan, w, Split::Train, sc_, *b);
      b->after = planner_->state();
      lk.lock();
      ready_.push_back(b);
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lk(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

void Loader::stop_thread() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lk(mu_);
  stop_ = false;
  running_ = false;
  while (!ready_.empty()) {
    free_.push_back(ready_.front());
    ready_.pop_front();
  }
}

void Loader::start_thread(int64_t step) {
  stop_thread();
  // the planner's position before `step`: from the newest known state when it is not later
  const PlannerState from = anchor_.step <= step ? anchor_ : PlannerState{};
  const PlannerState at = from.step == step ? from : planner_->state_at(step, from);
  std::lock_guard<std::mutex> lk(mu_);
  planner_->set_state(at);
  anchor_ = at;
  if (o_.policy == SchedulePolicy::Dynamic) {
    for (int64_t s = step; s <= step + o_.prefetch; ++s)
      if (!weights_.count(s)) weights_[s] = est_;
  }
  error_ = nullptr;
  expected_ = step;
  running_ = true;
  thread_ = std::thread([this] { thread_main(); });
}

const Batch& Loader::next(int64_t step, double* wait_ms) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (current_) {  // the previous batch is done: its buffer goes back to the thread
      free_.push_back(current_);
      current_ = nullptr;
      cv_.notify_all();
    }
  }
  if (!running_ || step != expected_) start_thread(step);
  std::unique_lock<std::mutex> lk(mu_);
  if (o_.policy == SchedulePolicy::Dynamic && !weights_.count(step)) {
    weights_[step] = est_;  // nobody reported the step that fixes it: use the current estimate
    cv_.notify_all();
  }
  const auto t0 = std::chrono::steady_clock::now();
  cv_.wait(lk, [&] { return error_ != nullptr || !ready_.empty(); });
  if (wait_ms) *wait_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (error_) {
    auto e = error_;
    error_ = nullptr;
    running_ = false;
    lk.unlock();
    stop_thread();
    std::rethrow_exception(e);
  }
  current_ = ready_.front();
  ready_.pop_front();
  MT_CHECK(current_->step == step, "loader produced step {} where {} was expected", current_->step, step);
  anchor_ = current_->after;
  expected_ = step + 1;
  return *current_;
}

// ------------------------------------------------------------------------- dynamic weights
void Loader::report(int64_t step, const std::vector<double>& cost, const std::vector<double>& ms) {
  MT_CHECK(cost.size() == static_cast<size_t>(o_.dp) && ms.size() == cost.size(),
           "loader report needs one cost and one time per replica");
  std::lock_guard<std::mutex> lk(mu_);
  // throughput of each replica that worked this step, relative to their mean
  std::vector<double> speed(cost.size(), 0.0);
  double sum = 0;
  int n = 0;
  for (size_t r = 0; r < cost.size(); ++r) {
    if (cost[r] > 0 && ms[r] > 0) {
      speed[r] = cost[r] / ms[r];
      sum += speed[r] / est_[r];  // in units of the current estimates, so idle replicas keep theirs
      ++n;
    }
  }
  if (n > 0) {
    const double norm = sum / n;
    for (size_t r = 0; r < cost.size(); ++r) {
      if (speed[r] <= 0) continue;
      const double measured = speed[r] / norm;
      est_[r] = reports_ == 0 ? measured : (1 - kEma) * est_[r] + kEma * measured;
    }
    double mean = 0;
    for (double e : est_) mean += e;
    mean /= static_cast<double>(est_.size());
    for (double& e : est_) e = std::clamp(e / mean, kMinEstimate, kMaxEstimate);
    ++reports_;
  }
  if (o_.policy == SchedulePolicy::Dynamic) {
    weights_[step + 1 + o_.prefetch] = est_;
    weights_.erase(weights_.begin(), weights_.lower_bound(step + 1));
    cv_.notify_all();
  }
}

// ------------------------------------------------------------------------- state
std::string Loader::state() const {
  std::lock_guard<std::mutex> lk(mu_);
  nlohmann::json w = nlohmann::json::array();
  for (const auto& [s, v] : weights_)
    if (s >= anchor_.step) w.push_back({{"step", s}, {"weights", v}});
  nlohmann::json j{{"format", kStateFormat},
                   {"mode", mode_name(o_.mode)},
                   {"eod_token", o_.eod_token},
                   {"policy", policy_name(o_.policy)},
                   {"seq_len", o_.seq_len},
                   {"batch_samples", o_.batch_samples},
                   {"batch_tokens", o_.batch_tokens},
                   {"seed", o_.seed},
                   {"epoch_samples", popt_[0].num_samples},
                   {"dp", o_.dp},
                   {"prefetch", o_.prefetch},
                   {"step", anchor_.step},
                   {"epoch", anchor_.epoch},
                   {"pos", anchor_.pos},
                   {"estimates", est_},
                   {"reports", reports_},
                   {"weights", w}};
  return j.dump();
}

void Loader::restore(const std::string& text, int64_t step) {
  stop_thread();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw core::Error("unreadable loader state in the checkpoint").with_library(e.what());
  }
  std::lock_guard<std::mutex> lk(mu_);
  expected_ = -1;
  const bool same_stream = j.value("format", 0) == kStateFormat &&
                           j.value("mode", "") == mode_name(o_.mode) && j.value("eod_token", -1) == o_.eod_token &&
                           j.value("seq_len", 0) == o_.seq_len && j.value("batch_samples", int64_t{0}) == o_.batch_samples &&
                           j.value("batch_tokens", int64_t{0}) == o_.batch_tokens &&
                           j.value("seed", uint64_t{0}) == o_.seed &&
                           j.value("epoch_samples", uint64_t{0}) == popt_[0].num_samples &&
                           j.value("step", int64_t{-1}) == step;
  if (!same_stream) {
    // a different data configuration: the planner position is recomputed for `step`
    core::log::warn("the checkpoint's loader state is for another data stream (data, mode, eod_token, seq_len, "
                    "batch or seed changed); the position is recomputed for step {}", step);
    anchor_ = PlannerState{};
    return;
  }
  anchor_.step = step;
  anchor_.epoch = j.at("epoch").get<uint64_t>();
  anchor_.pos = j.at("pos").get<uint64_t>();
  weights_.clear();
  if (j.value("dp", 0) == o_.dp) {
    est_ = j.at("estimates").get<std::vector<double>>();
    reports_ = j.value("reports", int64_t{0});
    for (const auto& w : j.at("weights")) weights_[w.at("step").get<int64_t>()] = w.at("weights").get<std::vector<double>>();
  } else {
    est_.assign(static_cast<size_t>(o_.dp), 1.0);  // another dp: throughput is measured afresh
    reports_ = 0;
  }
}

void Loader::eval_batch(int64_t k, Batch& out) {
  if (eval_planner_->state().step != k) eval_planner_->set_state(eval_planner_->state_at(k));
  eval_planner_->plan(eval_sc_.plan);
  fill(eval_sc_.plan, {}, Split::Eval, eval_sc_, out);
}

}  // namespace mt::io
