// What: the pipeline schedules' action lists, their checks, theory and simulation (see schedule.h).
#include "parallel/pipeline/schedule.h"

#include <algorithm>
#include <set>
#include <utility>

#include "core/error.h"

namespace mt::parallel {

namespace {

constexpr const char* kMicroKeys = "train.batch_size / (train.micro_batch x dp)";

core::Error pipe_error(const std::string& msg, const char* key, const std::string& hint) {
  return core::Error(msg).with_yaml(key).with_hint(hint);
}

using Kind = PipeAction::Kind;

// Megatron's schedule table (microbatch_group_size_per_vp_stage = pp): the k-th forward of a
// rank is table[k]; groups of pp micro-batches, each group through chunk 0, then chunk 1, ...
std::vector<std::pair<int, int>> interleaved_table(int pp, int v, int m) {
  std::vector<std::pair<int, int>> t;  // (micro, chunk)
  t.reserve(static_cast<size_t>(m) * v);
  for (int g0 = 0; g0 < m; g0 += pp)
    for (int c = 0; c < v; ++c)
      for (int mb = g0; mb < std::min(m, g0 + pp); ++mb) t.emplace_back(mb, c);
  return t;
}

}  // namespace

PipeSchedule parse_pipe_schedule(const std::string& s) {
  if (s == "gpipe") return PipeSchedule::GPipe;
  if (s == "1f1b") return PipeSchedule::OneFOneB;
  if (s == "interleaved") return PipeSchedule::Interleaved;
  throw pipe_error(fmt::format("unknown parallel.pp_schedule '{}'", s), "parallel.pp_schedule",
                   "valid values: gpipe, 1f1b, interleaved");
}

const char* pipe_schedule_name(PipeSchedule s) {
  switch (s) {
    case PipeSchedule::GPipe: return "gpipe";
    case PipeSchedule::OneFOneB: return "1f1b";
    case PipeSchedule::Interleaved: return "interleaved";
  }
  return "?";
}

void check_pipeline(PipeSchedule s, int pp, int v, int m) {
  if (pp < 1) throw pipe_error(fmt::format("parallel.pp = {} must be at least 1", pp), "parallel.pp", "set parallel.pp=1 (no pipeline) or more");
  if (m < 1) {
    throw pipe_error(fmt::format("a step has {} micro-batches ({})", m, kMicroKeys), "train.batch_size",
                     "raise train.batch_size or lower train.micro_batch");
  }
  if (s == PipeSchedule::Interleaved && v < 2) {
    throw pipe_error(fmt::format("parallel.pp_schedule = interleaved needs parallel.pp_virtual >= 2 (it is {})", v),
                     "parallel.pp_virtual", "set parallel.pp_virtual=2 (or more), or parallel.pp_schedule=1f1b");
  }
  if (s != PipeSchedule::Interleaved && v != 1) {
    throw pipe_error(fmt::format("parallel.pp_virtual = {} needs parallel.pp_schedule = interleaved (it is {})", v,
                                 pipe_schedule_name(s)),
                     "parallel.pp_virtual", "set parallel.pp_schedule=interleaved, or parallel.pp_virtual=1");
  }
  if (s == PipeSchedule::OneFOneB && m < pp) {
    throw pipe_error(fmt::format("parallel.pp_schedule = 1f1b needs at least parallel.pp = {} micro-batches per step, "
                                 "but a step has {} ({})", pp, m, kMicroKeys),
                     "train.micro_batch",
                     fmt::format("raise train.batch_size or lower train.micro_batch to get >= {} micro-batches per "
                                 "step, lower parallel.pp, or use parallel.pp_schedule=gpipe", pp));
  }
  if (s == PipeSchedule::Interleaved && m % pp != 0) {
    throw pipe_error(fmt::format("parallel.pp_schedule = interleaved needs the micro-batches per step to be a "
                                 "multiple of parallel.pp = {}, but a step has {} ({})", pp, m, kMicroKeys),
                     "train.micro_batch",
                     fmt::format("choose train.batch_size and train.micro_batch so that {} is a multiple of {} (e.g. "
                                 "{} micro-batches), or use parallel.pp_schedule=1f1b", kMicroKeys, pp,
                                 (m + pp - 1) / pp * pp));
  }
}

std::vector<PipeAction> pipeline_actions(PipeSchedule s, int pp, int v, int m, int stage) {
  check_pipeline(s, pp, v, m);
  MT_CHECK(stage >= 0 && stage < pp, "pipeline stage {} is outside 0 .. {}", stage, pp - 1);
  std::vector<PipeAction> a;
  a.reserve(static_cast<size_t>(2) * m * v);
  if (s == PipeSchedule::GPipe) {
    for (int i = 0; i < m; ++i) a.push_back({Kind::Forward, i, 0});
    for (int i = 0; i < m; ++i) a.push_back({Kind::Backward, i, 0});
    return a;
  }
  // 1f1b and interleaved: the k-th forward fwd(k) and the k-th backward bwd(k) of the rank
  int total = m, warmup = std::min(pp - stage - 1, m);
  std::vector<std::pair<int, int>> table;
  if (s == PipeSchedule::Interleaved) {
    table = interleaved_table(pp, v, m);
    total = m * v;
    warmup = std::min((pp - stage - 1) * 2 + (v - 1) * pp, total);
  }
  auto fwd = [&](int k) -> PipeAction {
    if (table.empty()) return {Kind::Forward, k, 0};
    return {Kind::Forward, table[static_cast<size_t>(k)].first, table[static_cast<size_t>(k)].second};
  };
  auto bwd = [&](int k) -> PipeAction {
    if (table.empty()) return {Kind::Backward, k, 0};
    return {Kind::Backward, table[static_cast<size_t>(k)].first, v - 1 - table[static_cast<size_t>(k)].second};
  };
  for (int k = 0; k < warmup; ++k) a.push_back(fwd(k));
  for (int k = 0; k < total - warmup; ++k) {
    a.push_back(fwd(k + warmup));
    a.push_back(bwd(k));
  }
  for (int k = total - warmup; k < total; ++k) a.push_back(bwd(k));
  return a;
}

double theoretical_bubble(PipeSchedule s, int pp, int v, int m) {
  check_pipeline(s, pp, v, m);
  const double p = pp;
  if (s == PipeSchedule::Interleaved) return (p - 1) / (static_cast<double>(v) * m + p - 1);
  return (p - 1) / (m + p - 1);
}

PipeSim simulate_pipeline(PipeSchedule s, int pp, int v, int m, double f, double b) {
  std::vector<std::vector<PipeAction>> acts(static_cast<size_t>(pp));
  for (int r = 0; r < pp; ++r) acts[static_cast<size_t>(r)] = pipeline_actions(s, pp, v, m, r);
  return simulate_actions(acts, v, m, f, b);
}

PipeSim simulate_actions(const std::vector<std::vector<PipeAction>>& acts, int v, int m, double f, double b) {
  const int pp = static_cast<int>(acts.size());
  MT_CHECK(pp >= 1 && v >= 1 && m >= 1, "simulate_actions: {} ranks, {} virtual stages, {} micro-batches", pp, v, m);
  for (const auto& list : acts)
    for (const auto& x : list)
      MT_CHECK(x.micro >= 0 && x.micro < m && x.chunk >= 0 && x.chunk < v, "action (micro {}, chunk {}) outside {} x {}",
               x.micro, x.chunk, m, v);
  const int K = pp * v;  // virtual stages
  // end times of the forward / backward of (micro, virtual stage); < 0: not run yet
  std::vector<double> fend(static_cast<size_t>(m) * K, -1), bend(static_cast<size_t>(m) * K, -1);
  auto at = [&](std::vector<double>& t, int micro, int k) -> double& { return t[static_cast<size_t>(micro) * K + k]; };
  std::vector<size_t> next(static_cast<size_t>(pp), 0);
  std::vector<double> free_at(static_cast<size_t>(pp), 0), busy(static_cast<size_t>(pp), 0);
  PipeSim sim;
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < pp; ++r) {
      auto& i = next[static_cast<size_t>(r)];
      const auto& list = acts[static_cast<size_t>(r)];
      while (i < list.size()) {  // run this rank's actions while their inputs are done
        const PipeAction& x = list[i];
        const int k = x.chunk * pp + r;
        double ready = 0;
        if (x.kind == Kind::Forward) {
          if (k > 0) ready = at(fend, x.micro, k - 1);
        } else {
          ready = at(fend, x.micro, k);
          if (k < K - 1) {  // the gradient from the next virtual stage
            const double g = at(bend, x.micro, k + 1);
            ready = ready < 0 || g < 0 ? -1 : std::max(ready, g);
          }
        }
        if (ready < 0) break;
        const double dur = x.kind == Kind::Forward ? f : b;
        const double start = std::max(ready, free_at[static_cast<size_t>(r)]);
        free_at[static_cast<size_t>(r)] = start + dur;
        busy[static_cast<size_t>(r)] += dur;
        at(x.kind == Kind::Forward ? fend : bend, x.micro, k) = start + dur;
        ++i;
        progress = true;
      }
    }
  }
  for (int r = 0; r < pp; ++r) {
    if (next[static_cast<size_t>(r)] < acts[static_cast<size_t>(r)].size()) sim.deadlock = true;
    sim.makespan = std::max(sim.makespan, free_at[static_cast<size_t>(r)]);
  }
  for (int r = 0; r < pp; ++r)
    sim.idle_fraction.push_back(sim.makespan > 0 ? 1.0 - busy[static_cast<size_t>(r)] / sim.makespan : 0.0);
  return sim;
}

int max_in_flight(const std::vector<PipeAction>& actions) {
  std::set<std::pair<int, int>> live;
  size_t most = 0;
  for (const auto& a : actions) {
    if (a.kind == Kind::Forward) {
      live.insert({a.micro, a.chunk});
      most = std::max(most, live.size());
    } else {
      live.erase({a.micro, a.chunk});
    }
  }
  return static_cast<int>(most);
}

}  // namespace mt::parallel
