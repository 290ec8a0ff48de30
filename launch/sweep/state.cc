// What: sweep.json (de)serialisation, reading a trial's run directory, and the halving rule
// (see state.h).
#include "launch/sweep/state.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/metrics.h"

namespace mt::launch::sweep {

namespace {
constexpr const char* kNames[] = {"pending", "running", "paused", "stopped", "finished", "failed"};

nlohmann::json opt(const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); }
std::optional<double> opt_double(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j.at(key).is_null()) return std::nullopt;
  return j.at(key).get<double>();
}
// JSON has no NaN: a diverged trial's loss is written as null and read back as NaN
nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }
}  // namespace

const char* status_name(Status s) { return kNames[static_cast<int>(s)]; }

Status parse_status(const std::string& s) {
  for (int i = 0; i < 6; ++i)
    if (s == kNames[i]) return static_cast<Status>(i);
  throw core::Error(fmt::format("unknown trial status '{}'", s));
}

const RungDecision* State::decision_at(int64_t step) const {
  for (const auto& d : decisions)
    if (d.step == step) return &d;
  return nullptr;
}

std::string to_json(const State& st) {
  nlohmann::json trials = nlohmann::json::array();
  for (const auto& r : st.trials) {
    nlohmann::json params = nlohmann::json::array();
    for (const auto& [k, v] : r.trial.params) params.push_back({k, v});
    nlohmann::json rl = nlohmann::json::object();
    for (const auto& [step, loss] : r.rung_loss) rl[std::to_string(step)] = num(loss);
    trials.push_back({{"id", r.trial.id}, {"dir", r.trial.name()}, {"params", params},
                      {"status", status_name(r.status)}, {"reached", r.reached}, {"rung_loss", rl},
                      {"final_eval_loss", opt(r.final_eval_loss)}, {"best_eval_loss", opt(r.best_eval_loss)},
                      {"tokens_per_s", r.tokens_per_s}, {"starts", r.starts}, {"command", r.command},
                      {"error", r.error}});
  }
  nlohmann::json dec = nlohmann::json::array();
  for (const auto& d : st.decisions) dec.push_back({{"step", d.step}, {"kept", d.kept}, {"stopped", d.stopped}});
  const nlohmann::json j{{"format", "meshtrain-sweep-1"}, {"identity", st.identity}, {"sweep_file", st.sweep_file},
                         {"rungs", st.rungs}, {"steps", st.steps}, {"trials", trials}, {"decisions", dec}};
  return j.dump(2) + "\n";
}

State state_from_json(const std::string& text, const std::string& origin) {
  try {
    const auto j = nlohmann::json::parse(text);
    State st;
    st.identity = j.at("identity").get<std::string>();
    st.sweep_file = j.at("sweep_file").get<std::string>();
    st.rungs = j.at("rungs").get<std::vector<int64_t>>();
    st.steps = j.at("steps").get<int64_t>();
    for (const auto& t : j.at("trials")) {
      TrialRecord r;
      r.trial.id = t.at("id").get<int>();
      for (const auto& p : t.at("params")) r.trial.params.emplace_back(p.at(0).get<std::string>(), p.at(1).get<std::string>());
      r.status = parse_status(t.at("status").get<std::string>());
      r.reached = t.at("reached").get<int64_t>();
      for (const auto& [k, v] : t.at("rung_loss").items()) r.rung_loss[std::stoll(k)] = v.is_null() ? NAN : v.get<double>();
      r.final_eval_loss = opt_double(t, "final_eval_loss");
      r.best_eval_loss = opt_double(t, "best_eval_loss");
      r.tokens_per_s = t.value("tokens_per_s", 0.0);
      r.starts = t.value("starts", 0);
      r.command = t.value("command", "");
      r.error = t.value("error", "");
      st.trials.push_back(r);
    }
    for (const auto& d : j.at("decisions")) {
      st.decisions.push_back({d.at("step").get<int64_t>(), d.at("kept").get<std::vector<int>>(),
                              d.at("stopped").get<std::vector<int>>()});
    }
    return st;
  } catch (const core::Error& e) {
    throw core::Error(e.message()).with_file(origin).with_hint("the sweep state is damaged; move the directory aside to start over");
  } catch (const std::exception& e) {
    throw core::Error("cannot read the sweep state").with_file(origin).with_library(e.what())
        .with_hint("the sweep state is damaged; move the directory aside to start over");
  }
}

State new_state(const Spec& spec, const std::vector<Trial>& trials, const std::string& id) {
  State st;
  st.identity = id;
  st.sweep_file = spec.file;
  st.rungs = spec.halving.on ? spec.halving.rungs : std::vector<int64_t>{};
  st.steps = spec.steps;
  for (const auto& t : trials) {
    TrialRecord r;
    r.trial = t;
    st.trials.push_back(r);
  }
  return st;
}

RunRecords read_run(const std::string& dir) {
  RunRecords r;
  const std::string metrics = dir + "/metrics.jsonl";
  if (std::filesystem::exists(metrics)) {
    std::istringstream in(io::read_file(metrics));
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception&) {
        continue;  // a record cut short by a kill: the resumed run rewrites it
      }
      try {
        if (j.contains("eval_loss")) {
          r.evals[j.at("step").get<int64_t>()] = j.at("eval_loss").is_null() ? NAN : j.at("eval_loss").get<double>();
        } else if (j.contains("loss")) {
          r.tokens += j.value("tokens", 0.0);
          r.train_ms += j.value("ms", 0.0);
          ++r.steps_recorded;
        }
      } catch (const nlohmann::json::exception&) {
        continue;  // not a record train writes (no step, a field of another type): not ours to judge
      }
    }
  }
  const std::string summary = dir + "/summary.json";
  if (std::filesystem::exists(summary)) {
    try {
      const auto j = nlohmann::json::parse(io::read_file(summary));
      r.summary_steps = j.at("steps").get<int64_t>();
      r.summary_eval = opt_double(j, "final_eval_loss");
      r.summary_tokens_per_s = j.value("tokens_per_s", 0.0);
      r.summary_starts = j.value("starts", 0);
    } catch (const std::exception&) {
      r.summary_steps.reset();
    }
  }
  return r;
}

RungDecision decide_rung(int64_t step, const std::map<int, double>& losses, double eta) {
  std::vector<std::pair<double, int>> order;
  for (const auto& [id, loss] : losses) order.emplace_back(std::isfinite(loss) ? loss : INFINITY, id);
  std::sort(order.begin(), order.end());  // by loss, then id
  RungDecision d;
  d.step = step;
  const int keep = order.empty() ? 0 : survivors(static_cast<int>(order.size()), eta);
  for (size_t i = 0; i < order.size(); ++i) (static_cast<int>(i) < keep ? d.kept : d.stopped).push_back(order[i].second);
  std::sort(d.kept.begin(), d.kept.end());
  std::sort(d.stopped.begin(), d.stopped.end());
  return d;
}

const TrialRecord* best_trial(const State& st) {
  const TrialRecord* best = nullptr;
  for (const auto& r : st.trials) {
    if (r.status != Status::Finished || !r.final_eval_loss || !std::isfinite(*r.final_eval_loss)) continue;
    if (!best || *r.final_eval_loss < *best->final_eval_loss) best = &r;
  }
  return best;
}

}  // namespace mt::launch::sweep
