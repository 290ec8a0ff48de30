// What: the sweep file's parser, the trial generators and the sweep's identity (see spec.h).
// Why: every mistake in a sweep file is found here, before hours of trials: unknown keys of
// the file itself and unknown swept config keys (with the nearest valid one), empty lists,
// distributions in a grid, rungs that do not fit train.steps, keys the sweep sets itself.
#include "launch/sweep/spec.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"

namespace mt::launch::sweep {

namespace {

core::Error at(const Spec& s, const std::string& msg, const std::string& yaml_path, int line = -1) {
  core::Error e(msg);
  e.with_file(s.file).with_yaml(yaml_path, line);
  return e;
}

bool is_config_key(const std::string& key) {
  for (const auto& [k, help] : core::config_keys())
    if (k == key) return true;
  return false;
}

// "log_uniform(1e-5, 1e-2)" -> {"log_uniform", 1e-5, 1e-2}; false if `text` is not of that form.
bool parse_dist(const std::string& text, std::string* name, double* lo, double* hi) {
  const auto open = text.find('('), close = text.rfind(')');
  if (open == std::string::npos || close != text.size() - 1) return false;
  *name = text.substr(0, open);
  const std::string args = text.substr(open + 1, close - open - 1);
  const auto comma = args.find(',');
  if (comma == std::string::npos) return false;
  try {
    size_t n1 = 0, n2 = 0;
    *lo = std::stod(args.substr(0, comma), &n1);
    *hi = std::stod(args.substr(comma + 1), &n2);
    return args.substr(0, comma).find_first_not_of(" \t", n1) == std::string::npos &&
           args.substr(comma + 1).find_first_not_of(" \t", n2) == std::string::npos;
  } catch (const std::exception&) {
    return false;
  }
}

Param parse_param(const Spec& s, const std::string& key, const YAML::Node& v, int line) {
  const std::string where = "params." + key;
  if (!is_config_key(key)) {
    const std::string near = core::suggest_key(key);
    throw at(s, fmt::format("unknown swept key '{}'", key), where, line)
        .with_hint(near.empty() ? "swept keys are config keys (section.key); `meshtrain train --help` lists them"
                                : fmt::format("did you mean '{}'?", near));
  }
  for (const char* own : {"run.dir", "checkpoint.resume", "checkpoint.dir", "train.stop_at_step"}) {
    if (key == own) {
      throw at(s, fmt::format("'{}' cannot be swept: the sweep sets it for every trial", key), where, line)
          .with_hint("each trial's run directory is <dir>/trial_NNN, resumed with resume=auto");
    }
  }
  Param p;
  p.key = key;
  p.line = line;
  if (v.IsSequence()) {
    for (const auto& e : v) {
      if (!e.IsScalar()) throw at(s, fmt::format("'{}': every value must be a scalar", key), where, line);
      p.values.push_back(e.Scalar());
    }
    if (p.values.empty()) {
      throw at(s, fmt::format("empty list of values for '{}': the grid would have no trials", key), where, line)
          .with_hint(fmt::format("give at least one value, e.g. {}: [1e-3, 3e-3]", key));
    }
    return p;
  }
  const std::string text = v.IsScalar() ? v.Scalar() : "";
  if (!parse_dist(text, &p.dist, &p.lo, &p.hi)) {
    throw at(s, fmt::format("'{}': expected a list of values or a distribution, got '{}'", key, text), where, line)
        .with_hint("e.g. [1e-4, 3e-4, 1e-3], log_uniform(1e-5, 1e-2), uniform(0.0, 0.1), int_uniform(0, 100)");
  }
  if (p.dist != "uniform" && p.dist != "log_uniform" && p.dist != "int_uniform") {
    throw at(s, fmt::format("'{}': unknown distribution '{}'", key, p.dist), where, line)
        .with_hint("distributions: uniform(lo, hi), log_uniform(lo, hi), int_uniform(lo, hi)");
  }
  if (!(p.lo <= p.hi) || (p.dist == "log_uniform" && !(p.lo > 0))) {
    throw at(s, fmt::format("'{}': {}({}, {}) needs lo <= hi{}", key, p.dist, p.lo, p.hi,
                            p.dist == "log_uniform" ? " and lo > 0" : ""), where, line);
  }
  return p;
}

std::vector<std::string> strings(const Spec& s, const YAML::Node& n, const std::string& key) {
  if (!n.IsSequence()) throw at(s, fmt::format("'{}' must be a list", key), key, n.Mark().line + 1);
  return n.as<std::vector<std::string>>();
}

// splitmix64: a fixed generator (std distributions differ between standard libraries)
struct Rng {
  uint64_t x;
  uint64_t next() {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
};

std::string sample(const Param& p, Rng& rng) {
  if (p.dist.empty()) return p.values[rng.next() % p.values.size()];
  if (p.dist == "int_uniform") {
    const auto lo = static_cast<int64_t>(std::ceil(p.lo)), hi = static_cast<int64_t>(std::floor(p.hi));
    return std::to_string(lo + static_cast<int64_t>(rng.next() % static_cast<uint64_t>(std::max<int64_t>(1, hi - lo + 1))));
  }
  const double u = rng.uniform();
  const double v = p.dist == "log_uniform" ? std::exp(std::log(p.lo) + u * (std::log(p.hi) - std::log(p.lo)))
                                           : p.lo + u * (p.hi - p.lo);
  return fmt::format("{:.4g}", v);
}

}  // namespace

bool Param::log_scale() const {
  if (dist == "log_uniform") return true;
  if (!dist.empty()) return false;
  double mn = INFINITY, mx = -INFINITY;
  for (const auto& v : values) {
    try {
      size_t n = 0;
      const double x = std::stod(v, &n);
      if (n != v.size() || !(x > 0)) return false;
      mn = std::min(mn, x), mx = std::max(mx, x);
    } catch (const std::exception&) {
      return false;
    }
  }
  return mx >= 10 * mn;
}

std::string Trial::name() const { return fmt::format("trial_{:03d}", id); }

std::string Trial::describe() const {
  std::string s;
  for (const auto& [k, v] : params) s += (s.empty() ? "" : " ") + k + "=" + v;
  return s;
}

Spec parse_spec(const std::string& text, const std::string& origin, const std::string& base_dir) {
  Spec s;
  s.file = origin;
  YAML::Node n;
  try {
    n = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw core::Error("malformed YAML").with_file(origin).with_yaml("", e.mark.line + 1).with_library(e.msg);
  }
  if (!n.IsMap()) throw core::Error("a sweep file is a mapping (base:, dir:, params:, ...)").with_file(origin)
      .with_hint("see examples/sweep-tiny.yaml");
  static const std::vector<std::string> keys{"base", "dir", "overrides", "search", "trials", "seed",
                                             "params", "halving", "metric", "launch"};
  std::map<std::string, int> seen;
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string k = it->first.as<std::string>();
    const int line = it->first.Mark().line + 1;
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
      const std::string near = core::nearest_word(k, keys);
      throw at(s, fmt::format("unknown key '{}'", k), k, line)
          .with_hint(near.empty() ? "keys: base, dir, overrides, search, trials, seed, params, halving, metric, launch"
                                  : fmt::format("did you mean '{}'?", near));
    }
    if (!seen.emplace(k, line).second) throw at(s, fmt::format("duplicate key '{}'", k), k, line);
  }
  for (const char* required : {"base", "dir", "params"}) {
    if (!n[required]) throw at(s, fmt::format("missing '{}'", required), required)
        .with_hint("see examples/sweep-tiny.yaml");
  }
  try {
    const std::string base = n["base"].as<std::string>();
    std::filesystem::path bp(base);
    if (bp.is_relative()) bp = std::filesystem::path(base_dir) / bp;
    s.base = std::filesystem::absolute(bp).lexically_normal().string();
    s.dir = n["dir"].as<std::string>();
    if (s.dir == "~" || s.dir.rfind("~/", 0) == 0) {  // as run.dir: the trials' run.dir expands it too
      const char* home = std::getenv("HOME");
      if (!home || !*home) throw at(s, fmt::format("dir = '{}' starts with ~ but $HOME is not set", s.dir), "dir");
      s.dir = std::string(home) + s.dir.substr(1);
    }
    while (s.dir.size() > 1 && s.dir.back() == '/') s.dir.pop_back();
    if (n["overrides"]) s.overrides = strings(s, n["overrides"], "overrides");
    if (n["search"]) s.search = n["search"].as<std::string>();
    if (n["trials"]) s.trials = n["trials"].as<int>();
    if (n["seed"]) s.seed = n["seed"].as<uint64_t>();
    if (n["metric"]) s.metric = n["metric"].as<std::string>();
    if (const auto h = n["halving"]) {
      s.halving.on = true;
      for (auto it = h.begin(); it != h.end(); ++it) {
        const std::string k = it->first.as<std::string>();
        if (k != "rungs" && k != "min_steps" && k != "eta") {
          throw at(s, fmt::format("unknown key 'halving.{}'", k), "halving." + k, it->first.Mark().line + 1)
              .with_hint("halving keys: rungs (a list of steps) or min_steps, and eta");
        }
      }
      if (h["eta"]) s.halving.eta = h["eta"].as<double>();
      if (h["rungs"]) s.halving.rungs = h["rungs"].as<std::vector<int64_t>>();
      if (h["min_steps"]) s.halving.rungs = {h["min_steps"].as<int64_t>()};  // (more added once steps is known)
      if (h["rungs"] && h["min_steps"]) throw at(s, "halving: give rungs or min_steps, not both", "halving");
      if (!h["rungs"] && !h["min_steps"]) throw at(s, "halving: needs rungs (steps) or min_steps", "halving");
    }
    if (const auto l = n["launch"]) {
      for (auto it = l.begin(); it != l.end(); ++it) {
        const std::string k = it->first.as<std::string>();
        static const std::vector<std::string> lk{"launcher", "np", "mpirun", "mpirun_args", "srun_args", "parallel_trials"};
        if (std::find(lk.begin(), lk.end(), k) == lk.end()) {
          throw at(s, fmt::format("unknown key 'launch.{}'", k), "launch." + k, it->first.Mark().line + 1)
              .with_hint("launch keys: launcher, np, mpirun, mpirun_args, srun_args, parallel_trials");
        }
      }
      if (l["launcher"]) s.launch.launcher = l["launcher"].as<std::string>();
      if (l["np"]) s.launch.np = l["np"].as<int>();
      if (l["mpirun"]) s.launch.mpirun = l["mpirun"].as<std::string>();
      if (l["mpirun_args"]) s.launch.mpirun_args = strings(s, l["mpirun_args"], "launch.mpirun_args");
      if (l["srun_args"]) s.launch.srun_args = strings(s, l["srun_args"], "launch.srun_args");
      if (l["parallel_trials"]) s.launch.parallel_trials = l["parallel_trials"].as<int>();
    }
    const YAML::Node ps = n["params"];
    if (!ps.IsMap() || ps.size() == 0) {
      throw at(s, "params must map swept config keys to values, e.g. optim.lr: [1e-3, 3e-3]", "params",
               ps.Mark().line + 1);
    }
    for (auto it = ps.begin(); it != ps.end(); ++it) {
      const std::string key = it->first.as<std::string>();
      const int line = it->first.Mark().line + 1;
      for (const auto& p : s.params)
        if (p.key == key) throw at(s, fmt::format("'{}' is swept twice (lines {} and {})", key, p.line, line),
                                   "params." + key, line);
      s.params.push_back(parse_param(s, key, it->second, line));
    }
  } catch (const YAML::Exception& e) {
    throw core::Error("invalid sweep file").with_file(origin).with_yaml("", e.mark.line + 1).with_library(e.msg)
        .with_hint("see examples/sweep-tiny.yaml");
  }
  if (s.search != "grid" && s.search != "random") throw at(s, "search must be grid or random", "search");
  if (s.search == "grid") {
    if (s.trials != 0) throw at(s, "trials is for search: random (a grid runs every combination)", "trials");
    for (const auto& p : s.params)
      if (!p.dist.empty()) {
        throw at(s, fmt::format("'{}: {}({}, {})' is a distribution: a grid needs a list of values", p.key, p.dist,
                                p.lo, p.hi), "params." + p.key, p.line)
            .with_hint("use search: random with trials: N, or list the values");
      }
  } else if (s.trials < 1) {
    throw at(s, "search: random needs trials: N (N >= 1)", "trials");
  }
  if (s.metric != "eval_loss") throw at(s, fmt::format("metric '{}': only eval_loss is supported", s.metric), "metric");
  if (s.launch.launcher != "auto" && s.launch.launcher != "mpirun" && s.launch.launcher != "srun")
    throw at(s, "launch.launcher must be auto, mpirun or srun", "launch.launcher");
  if (s.launch.np < 1) throw at(s, "launch.np must be >= 1", "launch.np");
  if (s.launch.parallel_trials < 1) throw at(s, "launch.parallel_trials must be >= 1", "launch.parallel_trials");
  for (const auto& o : s.overrides) {
    const std::string k = o.substr(0, o.find('='));
    if (k == "run.dir" || k == "resume" || k == "checkpoint.resume" || k == "train.stop_at_step") {
      throw at(s, fmt::format("override '{}': the sweep sets {} for every trial", o, k), "overrides");
    }
    for (const auto& p : s.params)
      if (p.key == k) throw at(s, fmt::format("'{}' is both swept and in overrides", k), "overrides");
  }
  // the base config with the common overrides (a bad base or override is an error now)
  core::Config base;
  try {
    base = core::load_config(s.base, s.overrides);
  } catch (core::Error& e) {
    throw core::Error(fmt::format("the base config (with the sweep's overrides) does not load: {}", e.what()))
        .with_file(origin).with_yaml("base");
  }
  if (!base.checkpoint.dir.empty()) {
    throw at(s, fmt::format("the base config sets checkpoint.dir = {}: every trial would write the same checkpoints",
                            base.checkpoint.dir), "base")
        .with_hint("remove checkpoint.dir: each trial keeps its checkpoints in its own run directory");
  }
  s.steps = base.train.steps;
  if (s.halving.on) {
    for (const auto& p : s.params)
      if (p.key == "train.steps") throw at(s, "train.steps cannot be swept with halving (rungs compare trials at "
                                           "the same step)", "params.train.steps", p.line);
    auto& r = s.halving.rungs;
    if (!(s.halving.eta > 1)) throw at(s, "halving.eta must be > 1", "halving.eta");
    if (n["halving"]["min_steps"]) {  // min_steps x eta^k below train.steps
      if (r[0] < 1) throw at(s, "halving.min_steps must be >= 1", "halving.min_steps");
      for (double x = static_cast<double>(r[0]) * s.halving.eta; x < static_cast<double>(s.steps);
           x *= s.halving.eta)
        if (static_cast<int64_t>(x) > r.back()) r.push_back(static_cast<int64_t>(x));
    }
    for (size_t i = 0; i < r.size(); ++i) {
      if (r[i] < 1 || r[i] >= s.steps || (i > 0 && r[i] <= r[i - 1])) {
        throw at(s, fmt::format("halving rungs {}: each must be in [1, train.steps = {}) and ascending",
                                fmt::join(r, ", "), s.steps), "halving")
            .with_hint("rungs are the steps at which trials are compared; the survivors go on to train.steps");
      }
    }
  }
  return s;
}

Spec load_spec(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw core::Error("cannot open the sweep file").with_file(path).with_hint("see examples/sweep-tiny.yaml");
  std::stringstream ss;
  ss << in.rdbuf();
  const auto parent = std::filesystem::path(path).parent_path();
  return parse_spec(ss.str(), path, parent.empty() ? "." : parent.string());
}

std::vector<Trial> make_trials(const Spec& s) {
  std::vector<Trial> out;
  if (s.search == "random") {
    Rng rng{s.seed};
    for (int t = 0; t < s.trials; ++t) {
      Trial tr;
      tr.id = t;
      for (const auto& p : s.params) tr.params.emplace_back(p.key, sample(p, rng));
      out.push_back(tr);
    }
    return out;
  }
  size_t total = 1;
  for (const auto& p : s.params) total *= p.values.size();
  for (size_t t = 0; t < total; ++t) {  // mixed radix, the last key fastest
    Trial tr;
    tr.id = static_cast<int>(t);
    size_t rest = t;
    std::vector<std::pair<std::string, std::string>> rev;
    for (size_t i = s.params.size(); i-- > 0;) {
      const auto& p = s.params[i];
      rev.emplace_back(p.key, p.values[rest % p.values.size()]);
      rest /= p.values.size();
    }
    tr.params.assign(rev.rbegin(), rev.rend());
    out.push_back(tr);
  }
  return out;
}

std::vector<std::string> trial_overrides(const Spec& s, const Trial& t, int64_t stop_at) {
  std::vector<std::string> o = s.overrides;
  for (const auto& [k, v] : t.params) o.push_back(k + "=" + v);
  o.push_back(fmt::format("run.dir={}/{}", s.dir, t.name()));
  o.push_back("resume=auto");
  o.push_back(fmt::format("train.stop_at_step={}", stop_at));
  return o;
}

void check_trials(const Spec& s, const std::vector<Trial>& trials) {
  for (const auto& t : trials) {
    try {
      core::load_config(s.base, trial_overrides(s, t, 0));
    } catch (const core::Error& e) {
      const std::string key = e.context().yaml_path;
      int line = -1;
      for (const auto& p : s.params)
        if (p.key == key) line = p.line;
      throw core::Error(fmt::format("{} ({}) has an invalid config: {}", t.name(), t.describe(), e.what()))
          .with_file(s.file).with_yaml(line > 0 ? "params." + key : "params", line)
          .with_hint("fix the swept values (or the base config) so that every trial loads");
    }
  }
}

std::string identity(const Spec& s) {
  // the resolved base (comment lines dropped: they name the file's path, which may move)
  std::string resolved;
  {
    std::istringstream in(core::config_to_yaml(core::load_config(s.base, s.overrides)));
    std::string line;
    while (std::getline(in, line))
      if (line.empty() || line[0] != '#') resolved += line + "\n";
  }
  nlohmann::json params = nlohmann::json::array();
  for (const auto& p : s.params) {
    params.push_back(p.dist.empty() ? nlohmann::json{{"key", p.key}, {"values", p.values}}
                                    : nlohmann::json{{"key", p.key}, {"dist", p.dist}, {"lo", p.lo}, {"hi", p.hi}});
  }
  const nlohmann::json j{{"base", resolved}, {"overrides", s.overrides}, {"params", params},
                         {"search", s.search}, {"trials", s.trials}, {"seed", s.seed},
                         {"rungs", s.halving.on ? s.halving.rungs : std::vector<int64_t>{}},
                         {"eta", s.halving.on ? s.halving.eta : 0.0}, {"metric", s.metric}};
  const std::string text = j.dump();
  return fmt::format("{:016x}", core::fnv1a64(text.data(), text.size()));
}

int survivors(int n, double eta) { return std::max(1, static_cast<int>(std::floor(n / eta + 1e-9))); }

}  // namespace mt::launch::sweep
