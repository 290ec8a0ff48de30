// What: the scaling-experiment runner and its report (see scale.h).
#include "launch/scale.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "io/metrics.h"
#include "launch/cost_model.h"
#include "launch/network_bench.h"
#include "launch/svg.h"
#include "parallel/models/registry.h"
#include "parallel/pipeline/schedule.h"

namespace mt::launch {

namespace {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Row {
  ScalePoint p;
  int reps = 0;
  double ms = 0, tps = 0, compute = 0, exposed = 0, data = 0, comm = 0, eff = 0, ms_stdev = 0;
  std::vector<double> rep_ms;
  double threads = 1, grad_bytes = 0, flops = 0, tokens = 0, predicted_ms = 0;
  int hosts = 1;  // hosts the point spans (1 without a network in the experiment)
  double bubble = 0, predicted_bubble = 0;  // pipeline points: measured (mean over stages) and modelled
  double predicted_comm_ms = 0;             // the model's communication alone (dp + tp all-reduces, pp messages)
};

std::string launcher(const ScaleSpec& spec, int np) {
  std::string cmd = spec.mpirun;
  if (geteuid() == 0) cmd += " --allow-run-as-root";
  for (const auto& a : spec.mpirun_args) cmd += " " + shell_quote(a);
  return cmd + fmt::format(" -np {}", np);
}

struct StepMeans {
  double ms = 0, compute = 0, exposed = 0, data = 0, comm = 0, bubble = 0;  // bubble: pipeline runs only
};

// Means over the step records of a bench run's metrics.jsonl (it holds only the timed steps).
StepMeans read_step_means(const std::string& path, int expected) {
  std::istringstream in(io::read_file(path));
  StepMeans m;
  int n = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    m.ms += j.at("ms").get<double>();
    m.compute += j.at("compute_ms").get<double>();
    m.exposed += j.at("exposed_comm_ms").get<double>();
    m.data += j.at("data_wait_ms").get<double>();
    m.comm += j.at("comm_ms").get<double>();
    m.bubble += j.value("bubble", 0.0);
    ++n;
  }
  if (n != expected) {
    throw core::Error(fmt::format("{} step records, expected {}", n, expected)).with_file(path);
  }
  for (double* v : {&m.ms, &m.compute, &m.exposed, &m.data, &m.comm, &m.bubble}) *v /= n;
  return m;
}

// "dp 2 x tp 2", "dp 1 x tp 2 x pp 2"
std::string layout_name(const ScalePoint& p) {
  return p.pp == 1 ? fmt::format("dp {} x tp {}", p.dp, p.tp) : fmt::format("dp {} x tp {} x pp {}", p.dp, p.tp, p.pp);
}
// the report's and the plots' short form: "1 x 2", "1 x 2 x pp 2"
std::string layout_short(const ScalePoint& p) {
  return p.pp == 1 ? fmt::format("{} x {}", p.dp, p.tp) : fmt::format("{} x {} x pp {}", p.dp, p.tp, p.pp);
}

// "0.52 0.61 0.40" (1, 5 and 15 minutes), or "?" where /proc/loadavg is missing
std::string load_average() {
  std::ifstream f("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  if (!(f >> a >> b >> c)) return "?";
  return fmt::format("{:.2f}/{:.2f}/{:.2f}", a, b, c);
}

}  // namespace

std::string self_path() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) throw core::Error("cannot find the meshtrain executable (/proc/self/exe)");
  return std::string(buf, static_cast<size_t>(n));
}

ScaleSpec load_scale_spec(const std::string& path) {
  ScaleSpec s;
  YAML::Node n;
  try {
    n = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw core::Error("cannot open the experiment file").with_file(path);
  } catch (const YAML::ParserException& e) {
    throw core::Error("malformed YAML").with_file(path).with_yaml("", e.mark.line + 1).with_library(e.msg);
  }
  static const std::vector<std::string> keys{"config", "overrides", "mode", "steps", "warmup", "repetitions",
                                             "points", "mpirun", "mpirun_args", "network", "hosts_share_cores"};
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string k = it->first.as<std::string>();
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
      throw core::Error(fmt::format("unknown key '{}'", k)).with_file(path).with_yaml(k, it->first.Mark().line + 1)
          .with_hint("keys: config, overrides, mode, steps, warmup, repetitions, points, mpirun, mpirun_args, "
                     "network, hosts_share_cores");
    }
  }
  try {
    s.config = n["config"].as<std::string>();
    if (n["overrides"]) s.overrides = n["overrides"].as<std::vector<std::string>>();
    if (n["mode"]) s.mode = n["mode"].as<std::string>();
    if (n["steps"]) s.steps = n["steps"].as<int>();
    if (n["warmup"]) s.warmup = n["warmup"].as<int>();
    if (n["repetitions"]) s.repetitions = n["repetitions"].as<int>();
    if (n["mpirun"]) s.mpirun = n["mpirun"].as<std::string>();
    if (n["mpirun_args"]) s.mpirun_args = n["mpirun_args"].as<std::vector<std::string>>();
    if (n["hosts_share_cores"]) s.hosts_share_cores = n["hosts_share_cores"].as<bool>();
    if (const YAML::Node net = n["network"]) {
      if (net.IsScalar()) {  // a `bench network --json` file, relative to the experiment's directory
        std::string f = net.as<std::string>();
        if (!f.empty() && f[0] != '/' && !std::filesystem::exists(f)) {
          const auto slash = path.find_last_of('/');
          if (slash != std::string::npos) f = path.substr(0, slash + 1) + f;
        }
        if (!std::filesystem::exists(f)) {
          throw core::Error(fmt::format("network file '{}' not found", net.as<std::string>())).with_file(path)
              .with_yaml("network", net.Mark().line + 1)
              .with_hint("write one with: mpirun ... meshtrain bench network --json FILE");
        }
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(io::read_file(f));
        } catch (const nlohmann::json::exception& e) {
          throw core::Error("malformed JSON").with_file(f).with_library(e.what());
        }
        s.network = network_from_json(j, f);
        s.network_source = f;
      } else {  // inline: intra / inter {alpha_us, gbytes_per_s}, ranks_per_host, ...
        // every key goes through (network_from_json names unknown ones), numbers as numbers
        nlohmann::json j = nlohmann::json::object();
        const auto number = [&](const YAML::Node& v, const std::string& key) {
          try {
            return v.as<double>();
          } catch (const YAML::Exception&) {
            throw core::Error(fmt::format("network: '{}' must be a number", key)).with_file(path).with_yaml("network." + key);
          }
        };
        for (auto it = net.begin(); it != net.end(); ++it) {
          const std::string key = it->first.as<std::string>();
          if (it->second.IsMap()) {
            j[key] = nlohmann::json::object();
            for (auto l = it->second.begin(); l != it->second.end(); ++l)
              j[key][l->first.as<std::string>()] = number(l->second, key + "." + l->first.as<std::string>());
          } else if (key == "ranks_per_host" || key == "links_per_host") {
            j[key] = static_cast<int>(number(it->second, key));
          } else {
            j[key] = number(it->second, key);
          }
        }
        s.network = network_from_json(j, path + " (network:)");
        s.network_source = "the experiment's network:";
      }
    }
    for (const auto& p : n["points"]) {
      ScalePoint sp;
      sp.np = p["np"].as<int>();
      if (p["dp"]) sp.dp = p["dp"].as<int>();
      if (p["tp"]) sp.tp = p["tp"].as<int>();
      if (p["pp"]) sp.pp = p["pp"].as<int>();
      if (sp.tp < 1 || sp.pp < 1) {
        throw core::Error(fmt::format("point tp {} / pp {}: must be >= 1", sp.tp, sp.pp)).with_file(path)
            .with_yaml("points");
      }
      if (sp.dp == 0) sp.dp = sp.np / (sp.tp * sp.pp);
      s.points.push_back(sp);
    }
  } catch (const YAML::Exception& e) {
    throw core::Error("invalid experiment").with_file(path).with_yaml("", e.mark.line + 1).with_library(e.msg)
        .with_hint("see examples/scale.yaml");
  }
  if (s.mode != "strong" && s.mode != "weak") throw core::Error("mode must be strong or weak").with_file(path).with_yaml("mode");
  if (s.points.empty()) throw core::Error("no points").with_file(path).with_yaml("points");
  for (const auto& p : s.points) {
    if (p.dp * p.tp * p.pp != p.np) {
      throw core::Error(p.pp == 1 ? fmt::format("point np {} != dp {} x tp {}", p.np, p.dp, p.tp)
                                  : fmt::format("point np {} != dp {} x tp {} x pp {}", p.np, p.dp, p.tp, p.pp))
          .with_file(path).with_yaml("points");
    }
  }
  return s;
}

int run_scale(const ScaleSpec& spec, const std::string& self, const std::string& out) {
  io::ensure_directory(out);
  const std::string load_before = load_average();
  const core::Config base = core::load_config(spec.config, spec.overrides);  // fail early on a bad config
  std::vector<Row> rows;
  std::string commands;
  for (size_t i = 0; i < spec.points.size(); ++i) {
    const ScalePoint& p = spec.points[i];
    Row r;
    r.p = p;
    for (int rep = 0; rep < spec.repetitions; ++rep) {
      const std::string json = fmt::format("{}/point{}_rep{}.json", out, i, rep);
      const std::string run = fmt::format("{}/point{}_rep{}", out, i, rep);  // its metrics.jsonl
      std::string cmd = launcher(spec, p.np);
      cmd += fmt::format(" {} bench step {}", shell_quote(self), shell_quote(spec.config));
      for (const auto& o : spec.overrides) cmd += " " + shell_quote(o);
      cmd += fmt::format(" parallel.dp={} parallel.tp={} parallel.pp={} run.log_level=warn", p.dp, p.tp, p.pp);
      if (spec.mode == "weak") cmd += fmt::format(" train.batch_size={}", base.train.batch_size * p.dp);
      cmd += fmt::format(" --steps {} --warmup {} --json {} --metrics {}", spec.steps, spec.warmup, shell_quote(json),
                         shell_quote(run));
      commands += cmd + "\n";
      core::log::info("scale: point {} (np {} = {}), repetition {}", i, p.np, layout_name(p), rep + 1);
      const int rc = std::system((cmd + " > " + shell_quote(json + ".log") + " 2>&1").c_str());
      if (rc != 0) {
        throw core::Error(fmt::format("the run for point {} failed (exit {})", i, rc)).with_file(json + ".log")
            .with_hint("the log holds its output; the command is in commands.txt");
      }
      const auto j = nlohmann::json::parse(io::read_file(json));
      // the figures are the run's own per-step records (metrics.jsonl), averaged over its
      // timed steps; tokens/s = tokens per step / mean step time
      const StepMeans m = read_step_means(run + "/metrics.jsonl", spec.steps);
      r.ms += m.ms;
      r.rep_ms.push_back(m.ms);
      r.tps += j.at("tokens_per_step").get<double>() / (m.ms / 1000.0);
      r.compute += m.compute;
      r.exposed += m.exposed;
      r.data += m.data;
      r.comm += m.comm;
      r.bubble += m.bubble;
      r.threads = j.at("threads_per_rank").get<double>();
      r.grad_bytes = j.at("grad_bytes_per_rank").get<double>();
      r.flops = j.at("flops_per_step").get<double>();
      r.tokens = j.at("tokens_per_step").get<double>();
      r.reps++;
    }
    for (double* v : {&r.ms, &r.tps, &r.compute, &r.exposed, &r.data, &r.comm, &r.bubble}) *v /= r.reps;
    if (r.reps > 1) {  // sample standard deviation of the repetitions' mean step times
      double ss = 0;
      for (double x : r.rep_ms) ss += (x - r.ms) * (x - r.ms);
      r.ms_stdev = std::sqrt(ss / (r.reps - 1));
    }
    rows.push_back(r);
  }
  // efficiency against the smallest point, per rank: tps(N) / (N / N0 * tps(N0))
  const Row& ref = *std::min_element(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.p.np < b.p.np; });
  for (auto& r : rows) r.eff = r.tps / (static_cast<double>(r.p.np) / ref.p.np * ref.tps);
  // cost model: alpha-beta from a measured all-reduce table on 2 ranks (or the experiment's
  // two-level network), then a prediction per point (compute scaled by the cores a point can
  // use, plus dp and tp all-reduces)
  AlphaBeta ab;
  if (spec.network) {
    ab = spec.network->intra;
  } else {
    const std::string ar_json = out + "/allreduce.json";
    const std::string ar_cmd = launcher(spec, 2) + fmt::format(" {} bench allreduce --min-bytes 4096 --max-bytes 16777216 "
                                                               "--iters 10 --warmup 2 --json {}", shell_quote(self),
                                                               shell_quote(ar_json));
    commands += ar_cmd + "\n";
    if (std::system((ar_cmd + " > " + shell_quote(ar_json + ".log") + " 2>&1").c_str()) != 0) {
      throw core::Error("the all-reduce measurement failed").with_file(ar_json + ".log");
    }
    std::vector<std::pair<double, double>> pts;
    const nlohmann::json ar = nlohmann::json::parse(io::read_file(ar_json));
    for (const auto& row : ar.at("rows")) {
      pts.emplace_back(row.at("bytes").get<double>(), row.at("fw_us").get<double>() * 1e-6);
    }
    ab = fit_alpha_beta(pts, 2);
  }
  // The network a group of ranks `stride` apart sees (tp: 1, pp: tp, dp: tp x pp; mesh.h puts
  // tp innermost): its ranks per host, and the inter-host links shared by the groups that run
  // the same collective at once on a host.
  const auto group_net = [&](int stride) {
    Network g = *spec.network;
    const int l = std::max(1, g.ranks_per_host);
    g.ranks_per_host = std::max(1, l / stride);
    g.inter.beta_s *= std::max(1.0, static_cast<double>(std::min(stride, l)) / std::max(1, g.links_per_host));
    g.links_per_host = 1;
    return g;
  };
  const auto allreduce_s = [&](double bytes, int n, int stride) {
    return spec.network ? flat_allreduce_s(group_net(stride), bytes, n) : ring_allreduce_s(ab, bytes, n);
  };
  // the dp gradient all-reduce: hierarchical where the trainer makes it so (parallel.allreduce
  // auto or hierarchical, its dp group on several hosts of the same number > 1 of its ranks:
  // parallel/hierarchical.h), else flat
  const bool hier_mode = base.parallel.allreduce != "flat";
  const auto dp_allreduce_s = [&](double bytes, int n, int stride) {
    if (!spec.network || !hier_mode) return allreduce_s(bytes, n, stride);
    const Network g = group_net(stride);
    return n % g.ranks_per_host == 0 ? hierarchical_allreduce_s(g, bytes, n) : flat_allreduce_s(g, bytes, n);
  };
  const auto arch = parallel::make_architecture(base.model);
  const double cores = std::max(1u, std::thread::hardware_concurrency());
  const auto used = [&](const Row& r) {
    if (!spec.network || spec.hosts_share_cores) return std::min(r.p.np * r.threads, cores);
    const int per_host = std::min(r.p.np, std::max(1, spec.network->ranks_per_host));
    return std::min(per_host * r.threads, cores) * hosts_spanned(*spec.network, r.p.np);
  };
  // pipeline points: the config's schedule, m micro-batches per step per replica (the trainer's
  // train.batch_size / (micro_batch x dp); weak scaling grows the batch with dp)
  const parallel::PipeSchedule schedule = parallel::parse_pipe_schedule(base.parallel.pp_schedule);
  const auto vstages = [&](const Row& r) { return r.p.pp > 1 ? base.parallel.pp_virtual : 1; };
  const auto mb = [&](const Row& r) {  // train.micro_batch, `auto` resolved as that point's run resolves it
    if (base.train.micro_batch != core::kAutoMicroBatch) return base.train.micro_batch;
    core::Config c = base;
    if (spec.mode == "weak") c.train.batch_size = base.train.batch_size * r.p.dp;
    c.parallel.pp = r.p.pp;
    return core::auto_micro_batch(c, r.p.dp, r.p.pp);
  };
  const auto micro = [&](const Row& r) {
    const int batch = spec.mode == "weak" ? base.train.batch_size * r.p.dp : base.train.batch_size;
    return std::max(1, batch / (mb(r) * r.p.dp));
  };
  const auto bubble = [&](const Row& r) {
    return r.p.pp > 1 ? parallel::theoretical_bubble(schedule, r.p.pp, vstages(r), micro(r)) : 0.0;
  };
  // a pipelined reference point's measured compute holds its bubble: its busy time is the rest
  const double ref_busy = ref.compute * (1.0 - bubble(ref));
  // one activation (or its gradient) between stages: micro_batch x seq_len x n_embd fp32 (CPU)
  const auto msg_bytes = [&](const Row& r) { return 4.0 * mb(r) * base.model.seq_len * base.model.n_embd; };
  for (auto& r : rows) {
    const double work = spec.mode == "weak" ? static_cast<double>(r.p.dp) / ref.p.dp : 1.0;
    // the busy time of a rank: the reference's, scaled by the cores a point can use (a pp stage
    // holds 1/pp of the blocks and so of the work: the cores of its np ranks cover that)
    const double compute = ref_busy * work * used(ref) / used(r);
    // the model's tensor-parallel all-reduces over one tp group's tokens (fp32 on the CPU); a
    // pipeline stage issues those of its 1/pp of the blocks
    const auto tpt = arch->tp_traffic(static_cast<int64_t>(r.tokens / r.p.dp), 4);
    const double tp_comm =
        tpt.all_reduces > 0 ? tpt.all_reduces * allreduce_s(tpt.bytes / tpt.all_reduces, r.p.tp, 1) / r.p.pp : 0.0;
    // pp > 1: stage work / (1 - bubble) + the point-to-point messages (cost_model.h: pipeline_time)
    const PipelineTime pt = pipeline_time(compute / 1e3 + tp_comm, schedule, r.p.pp, vstages(r), micro(r), msg_bytes(r), ab);
    r.predicted_bubble = pt.bubble;
    const double dp_comm = dp_allreduce_s(r.grad_bytes, r.p.dp, r.p.tp * r.p.pp);
    r.predicted_ms = (pt.step_s() + dp_comm) * 1e3;
    r.predicted_comm_ms = (r.p.pp > 1 ? pt.p2p_s + tp_comm / (1.0 - pt.bubble) : tp_comm) * 1e3 + dp_comm * 1e3;
    // Two-level network, more ranks than cores (simulated hosts on one machine): a rank waiting
    // for the network leaves its core to the others' compute, so the step is the longer of the
    // cores' share of all the work and one rank's own path (its compute on a core of its own,
    // then its communication).
    const double ranks_threads = r.p.np * r.threads;
    if (spec.network && r.p.pp == 1 && used(r) < ranks_threads) {
      const double alone_ms = compute * used(r) / ranks_threads;
      r.predicted_ms = std::max(compute, alone_ms + (tp_comm + dp_comm) * 1e3);
    }
    r.hosts = spec.network ? hosts_spanned(*spec.network, r.p.np) : 1;
  }
  io::write_file_atomic(out + "/commands.txt", commands);
  std::string csv =
      "np,dp,tp,pp,repetitions,ms_per_step,ms_stdev,tokens_per_s,compute_ms,exposed_comm_ms,data_wait_ms,comm_ms,"
      "efficiency,predicted_ms,bubble,predicted_bubble,hosts,error_pct,predicted_comm_ms\n";
  for (const auto& r : rows) {
    csv += fmt::format("{},{},{},{},{},{:.3f},{:.3f},{:.1f},{:.3f},{:.3f},{:.3f},{:.3f},{:.4f},{:.3f},{:.4f},{:.4f},{},{:.1f},{:.3f}\n",
                       r.p.np, r.p.dp, r.p.tp, r.p.pp, r.reps, r.ms, r.ms_stdev, r.tps, r.compute, r.exposed, r.data,
                       r.comm, r.eff, r.predicted_ms, r.bubble, r.predicted_bubble, r.hosts,
                       100.0 * (r.predicted_ms - r.ms) / r.ms, r.predicted_comm_ms);
  }
  io::write_file_atomic(out + "/results.csv", csv);
  std::vector<std::string> labels;
  std::vector<double> tps, tps_pred, tps_linear, eff, eff_pred, comp, expo, data;
  for (const auto& r : rows) {
    labels.push_back(r.p.pp == 1 ? fmt::format("{} ({}x{})", r.p.np, r.p.dp, r.p.tp)
                                 : fmt::format("{} ({}x{}xpp{})", r.p.np, r.p.dp, r.p.tp, r.p.pp));
    tps.push_back(r.tps);
    tps_pred.push_back(r.tokens / (r.predicted_ms / 1000.0));
    tps_linear.push_back(ref.tps * r.p.np / ref.p.np);  // ideal: per-rank rate of the smallest point
    eff.push_back(100.0 * r.eff);
    eff_pred.push_back(100.0 * tps_pred.back() / (static_cast<double>(r.p.np) / ref.p.np * ref.tps));
    comp.push_back(r.compute);
    expo.push_back(r.exposed);
    data.push_back(r.data);
  }
  io::write_file_atomic(out + "/throughput.svg",
                        svg_chart(fmt::format("{} scaling: tokens/s", spec.mode), labels,
                                  {{"measured", tps}, {"predicted", tps_pred}, {"linear", tps_linear}}, false,
                                  "tokens/s"));
  io::write_file_atomic(out + "/efficiency.svg",
                        svg_chart("scaling efficiency", labels, {{"measured", eff}, {"predicted", eff_pred}}, false,
                                  "% of linear"));
  io::write_file_atomic(out + "/breakdown.svg", svg_chart("step time breakdown", labels,
                                                          {{"compute", comp}, {"exposed comm", expo}, {"data wait", data}},
                                                          true, "ms per step"));
  std::string md = fmt::format("# Scaling report ({} scaling)\n\nConfig `{}`", spec.mode, spec.config);
  for (const auto& o : spec.overrides) md += " `" + o + "`";
  md += fmt::format(", {} timed steps after {} warm-up, {} repetition(s) per point (ms/step: mean over "
                    "repetitions, +- their standard deviation); efficiency = tokens/s per rank relative to the "
                    "{}-rank point. Machine: {} cores, load average {} before and {} after the runs.\n\n"
                    "| ranks | dp x tp | ms/step | tokens/s | compute ms | exposed comm ms | data ms | efficiency | "
                    "predicted ms | predicted / measured | pipeline bubble (predicted) | hosts | error |\n"
                    "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
                    spec.steps, spec.warmup, spec.repetitions, ref.p.np, cores, load_before, load_average());
  for (const auto& r : rows) {
    md += fmt::format("| {} | {} | {:.1f}{} | {:.0f} | {:.1f} | {:.2f} | {:.2f} | {:.1f}% | {:.1f} | {:.2f} | {} | {} | {:+.1f}% |\n",
                      r.p.np, layout_short(r.p), r.ms, r.reps > 1 ? fmt::format(" +- {:.1f}", r.ms_stdev) : "", r.tps,
                      r.compute, r.exposed, r.data, 100 * r.eff, r.predicted_ms, r.predicted_ms / r.ms,
                      r.p.pp > 1 ? fmt::format("{:.1f}% ({:.1f}%)", 100 * r.bubble, 100 * r.predicted_bubble) : "-",
                      r.hosts, 100.0 * (r.predicted_ms - r.ms) / r.ms);
  }
  const std::string fitted =
      spec.network
          ? fmt::format("Two-level network from {}: {} ranks per host; intra-host alpha = {:.2f} us, {:.3f} GB/s; "
                        "inter-host alpha = {:.2f} us, {:.3f} GB/s ({} link(s) per host); flat all-reduce (recursive "
                        "doubling below {:.0f} KiB, the ring from there; a step crossing hosts runs at the inter-host "
                        "figures); the dp all-reduce {}. Hosts {}.",
                        spec.network_source, spec.network->ranks_per_host, spec.network->intra.alpha_s * 1e6,
                        1e-9 / spec.network->intra.beta_s, spec.network->inter.alpha_s * 1e6,
                        1e-9 / spec.network->inter.beta_s, spec.network->links_per_host,
                        spec.network->ring_min_bytes / 1024,
                        hier_mode ? fmt::format("hierarchical (parallel.allreduce = {}) where its group spans several "
                                                "hosts of > 1 of its ranks, from {:.0f} KiB",
                                                base.parallel.allreduce, spec.network->hier_min_bytes / 1024)
                                  : std::string("flat (parallel.allreduce = flat)"),
                        spec.hosts_share_cores ? "simulated on this machine (they share its cores)" : "real (own cores)")
          : fmt::format("Fitted on this machine's all-reduce (2 ranks, `allreduce.json`): alpha = {:.2f} us "
                        "per ring step, bus bandwidth 1/beta = {:.2f} GB/s.",
                        ab.alpha_s * 1e6, ab.beta_s > 0 ? 1e-9 / ab.beta_s : 0.0);
  md += fmt::format("\n## Cost model\n\n{} Predicted step = compute of the {}-rank point "
                    "scaled by the cores each point can use ({} here), plus the all-reduce of the gradients over dp "
                    "and 4 L + 3 activation all-reduces over tp, with no credit for overlap (with a two-level network and more "
                    "ranks than cores, pp 1: the longer of that compute and one rank's own compute plus its "
                    "communication, as a waiting rank leaves its core to the others); pipeline points (dp x tp x pp pp): "
                    "the stage's work (1/pp of the blocks) / (1 - bubble), bubble = the {} schedule's theoretical "
                    "idle fraction, plus 2 point-to-point messages (activation, gradient) per micro-batch on the "
                    "stage's timeline (docs/scaling.md). error = (predicted - measured) / measured.\n\n",
                    fitted, ref.p.np, cores, parallel::pipe_schedule_name(schedule));
  md += "Communication alone (the all-reduces and pipeline messages a rank waits for, `comm_ms`, against the "
        "model's; on a shared machine, where the compute share of each point varies with the others' load, this "
        "isolates the network part of the model):\n\n| ranks | layout | hosts | comm ms | predicted comm ms | error |\n"
        "|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    md += fmt::format("| {} | {} | {} | {:.2f} | {:.2f} | {} |\n", r.p.np, layout_short(r.p), r.hosts, r.comm,
                      r.predicted_comm_ms,
                      r.comm > 0 ? fmt::format("{:+.1f}%", 100.0 * (r.predicted_comm_ms - r.comm) / r.comm) : "-");
  }
  md += "\n";
  md += "### Extrapolation to a GPU cluster\n\n" + extrapolation_table(h100_cluster(), ref.flops, ref.grad_bytes) + "\n";
  md += "\n![throughput](throughput.svg)\n![efficiency](efficiency.svg)\n![breakdown](breakdown.svg)\n\n"
        "Commands: `commands.txt`; raw figures: `point*_rep*.json`.\n";
  io::write_file_atomic(out + "/report.md", md);
  core::log::info("scale: wrote {}/results.csv, report.md and plots", out);
  return 0;
}

}  // namespace mt::launch
