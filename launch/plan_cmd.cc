// What: the `meshtrain plan` command (plan.h): reads the config, checks the flags, predicts
// every layout, prints the table (or --json) and the recommendation.
#include <algorithm>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/memory.h"
#include "io/hf/safetensors.h"
#include "launch/plan.h"
#include "parallel/models/registry.h"

namespace mt::launch {

namespace {

// The table's unit: GiB, or MiB when every total is under 1 GiB.
struct Unit {
  double scale;
  const char* name;
};

LayoutPlan evaluate(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l, int gpus, int gpn,
                    double gpu_mem) {
  LayoutPlan p;
  p.layout = l;
  p.invalid = layout_violation(cfg, arch, l, gpus, gpn);
  try {  // an invalid pipeline (stages, schedule) has no model: its reason is in p.invalid
    p.mem = predict_memory(cfg, arch, l);
    if (p.invalid.empty() || l.dp * l.tp * l.pp == gpus) p.time = predict_time(cfg, arch, l, h100_cluster(), gpn);
  } catch (const core::Error&) {
    if (p.invalid.empty()) throw;
  }
  p.fits = p.invalid.empty() && p.mem.total() <= gpu_mem;
  return p;
}

nlohmann::json to_json(const LayoutPlan& p) {
  const auto& l = p.layout;
  const auto& m = p.mem;
  return {{"dp", l.dp}, {"tp", l.tp}, {"zero", l.zero}, {"sp", l.sp}, {"recompute", recompute_name(l.recompute)},
          {"micro_batch", l.micro_batch}, {"pp", l.pp},
          {"mem", {{"total", m.total()}, {"params", m.params()}, {"master", m.master}, {"working", m.working},
                   {"grads", m.grads}, {"optimizer", m.optimizer}, {"activations", m.activations}, {"comm", m.comm},
                   {"other", m.other}}},
          {"time", {{"step_s", p.time.step_s()}, {"compute_s", p.time.compute_s}, {"tp_comm_s", p.time.tp_comm_s},
                    {"dp_comm_s", p.time.dp_comm_s}, {"dp_exposed_s", p.time.dp_exposed_s},
                    {"pp_comm_s", p.time.pp_comm_s}, {"bubble", p.time.bubble}}},
          {"fits", p.fits}, {"invalid", p.invalid}};
}

std::string overrides_for(const Layout& l) {
  return fmt::format("parallel.dp={} parallel.tp={}{} parallel.zero={}{} train.recompute={} train.micro_batch={}", l.dp,
                     l.tp, l.pp > 1 ? fmt::format(" parallel.pp={}", l.pp) : "", l.zero, l.sp ? " parallel.sp=true" : "",
                     recompute_name(l.recompute), l.micro_batch);
}

// pipes: the table has a pp column (some layout has pp > 1; without, the table is as before pipelines)
void print_row(const LayoutPlan& p, const Unit& u, const char* mark, bool pipes) {
  const auto& l = p.layout;
  const auto& m = p.mem;
  std::printf("  %4d %4d%s %4d %3s %-9s %5d | %8.2f %8.2f %8.2f %8.2f %7.2f %6.2f | %8.2f | %9.4g %9.4g | %-4s %s\n", l.dp,
              l.tp, pipes ? fmt::format(" {:4d}", l.pp).c_str() : "", l.zero, l.sp ? "yes" : "-", recompute_name(l.recompute), l.micro_batch, m.params() / u.scale,
              m.grads / u.scale, m.optimizer / u.scale, m.activations / u.scale, m.comm / u.scale, m.other / u.scale,
              m.total() / u.scale, p.time.step_s(), p.time.dp_exposed_s + p.time.tp_comm_s + p.time.pp_comm_s,
              p.fits ? "yes" : "NO", mark);
}

}  // namespace

int cmd_plan(const PlanArgs& a) {
  if (a.gpus < 1) throw core::Error(fmt::format("--gpus {}: the number of GPUs must be at least 1", a.gpus));
  if (a.nodes < 1 || a.gpus % a.nodes != 0) {
    throw core::Error(fmt::format("--nodes {} does not divide --gpus {}", a.nodes, a.gpus))
        .with_hint("--gpus is the total over all nodes; every node has --gpus / --nodes GPUs");
  }
  double gpu_mem = 0;
  try {
    gpu_mem = static_cast<double>(io::hf::parse_size(a.gpu_mem));
  } catch (const core::Error&) {
    throw core::Error(fmt::format("--gpu-mem {}: not a size", a.gpu_mem)).with_hint("e.g. --gpu-mem 80GiB, 40GB, 24e9");
  }
  const core::Config cfg = core::load_config(a.config, a.overrides);
  const auto arch = parallel::make_architecture(cfg.model);
  const int gpn = a.gpus / a.nodes;

  std::vector<LayoutPlan> rows;
  for (const Layout& l : enumerate_layouts(cfg, *arch, a.gpus, gpn)) rows.push_back(evaluate(cfg, *arch, l, a.gpus, gpn, gpu_mem));
  const Layout conf_layout = configured_layout(cfg, a.gpus);
  const LayoutPlan conf = evaluate(cfg, *arch, conf_layout, a.gpus, gpn, gpu_mem);
  // table order: the fitting layouts fastest first (then least memory), then the others
  // smallest first (the nearest to fitting)
  std::stable_sort(rows.begin(), rows.end(), [](const LayoutPlan& x, const LayoutPlan& y) {
    if (x.fits != y.fits) return x.fits;
    if (x.fits && x.time.step_s() != y.time.step_s()) return x.time.step_s() < y.time.step_s();
    if (x.mem.total() != y.mem.total()) return x.mem.total() < y.mem.total();
    return x.time.step_s() < y.time.step_s();
  });
  // recommended: fits and fastest; step times within 0.5% count as a tie, broken by memory
  int rec = -1;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].fits) continue;
    if (rec < 0) {
      rec = static_cast<int>(i);
      continue;
    }
    const LayoutPlan& r = rows[static_cast<size_t>(rec)];
    if (rows[i].time.step_s() <= r.time.step_s() * 1.005 && rows[i].mem.total() < r.mem.total()) rec = static_cast<int>(i);
  }
  const auto same = [](const Layout& x, const Layout& y) {
    return x.dp == y.dp && x.tp == y.tp && x.pp == y.pp && x.zero == y.zero && x.sp == y.sp && x.recompute == y.recompute &&
           x.micro_batch == y.micro_batch;
  };
  const bool bf16 = plan_bf16(cfg), cuda = plan_cuda(cfg);
  const ClusterAssumption cluster = h100_cluster();

  if (a.json) {
    nlohmann::json j{{"config", a.config}, {"gpus", a.gpus}, {"nodes", a.nodes}, {"gpus_per_node", gpn},
                     {"gpu_mem", gpu_mem}, {"model", arch->describe(1)}, {"params", arch->num_params()},
                     {"precision", bf16 ? "bf16" : "fp32"}, {"device", cuda ? "cuda" : "cpu"},
                     {"cluster", cluster.name}, {"configured", to_json(conf)}};
    nlohmann::json list = nlohmann::json::array();
    for (const auto& r : rows) list.push_back(to_json(r));
    j["layouts"] = list;
    j["recommended"] = rec >= 0 ? to_json(rows[static_cast<size_t>(rec)]) : nlohmann::json();
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("plan: %s on %d GPU(s) (%d node(s) x %d), %s per GPU\n", a.config.c_str(), a.gpus, a.nodes, gpn,
                core::format_bytes(gpu_mem).c_str());
    std::printf("  model       %s\n", arch->describe(1).c_str());
    std::printf("  training    global batch %d x seq_len %d, %s (%s working copy), %s, %s kernels\n",
                cfg.train.batch_size, cfg.model.seq_len, bf16 ? "bf16" : "fp32", bf16 ? "bf16" : "no separate",
                cfg.optim.name.c_str(), cuda ? "CUDA" : "CPU");
    std::printf("  step time   %s, peak %.0f TFLOP/s x MFU %.0f%%\n", cluster.name.c_str(), cluster.gpu_peak_flops / 1e12,
                100 * cluster.mfu);
    double biggest = conf.mem.total();
    for (const auto& r : rows) biggest = std::max(biggest, r.mem.total());
    const Unit unit = biggest >= 1073741824.0 ? Unit{1073741824.0, "GiB"} : Unit{1048576.0, "MiB"};
    std::printf("  memory per rank in %s (not counted: CUDA context, NCCL buffers, fragmentation: leave headroom);\n"
                "  step time and its exposed communication in seconds\n", unit.name);
    bool pipes = conf_layout.pp > 1;
    for (const auto& r : rows) pipes = pipes || r.layout.pp > 1;
    std::printf("  %4s %4s%s %4s %3s %-9s %5s | %8s %8s %8s %8s %7s %6s | %8s | %9s %9s | %-4s\n", "dp", "tp",
                pipes ? "   pp" : "", "zero", "sp",
                "recompute", "mb", "params", "grads", "optim", "activ.", "comm", "other", "total", "step s",
                "exposed", "fits");
    const size_t shown = a.top > 0 ? std::min(rows.size(), static_cast<size_t>(a.top)) : rows.size();
    for (size_t i = 0; i < rows.size(); ++i) {
      const bool is_rec = static_cast<int>(i) == rec, is_conf = same(rows[i].layout, conf_layout);
      if (i >= shown && !is_rec && !is_conf) continue;
      print_row(rows[i], unit, is_rec ? (is_conf ? "<- recommended, configured" : "<- recommended")
                                : (is_conf ? "<- configured" : ""), pipes);
    }
    if (shown < rows.size())
      std::printf("  (%zu of %zu valid layouts shown; --top 0 lists all, --json gives all)\n", shown, rows.size());
  }
  // the configured layout, said explicitly (stderr with --json, so stdout stays JSON)
  std::FILE* say = a.json ? stderr : stdout;
  if (!conf.invalid.empty()) {
    std::fprintf(say, "configured layout (%s) cannot run on %d GPU(s): %s\n", conf_layout.describe().c_str(), a.gpus,
                 conf.invalid.c_str());
  } else if (!conf.fits) {
    std::fprintf(say, "configured layout (%s) does NOT fit: predicted %s per rank > --gpu-mem %s\n",
                 conf_layout.describe().c_str(), core::format_bytes(conf.mem.total()).c_str(),
                 core::format_bytes(gpu_mem).c_str());
  } else {
    std::fprintf(say, "configured layout (%s) fits: predicted %s per rank of %s, %.4g s per step\n",
                 conf_layout.describe().c_str(), core::format_bytes(conf.mem.total()).c_str(),
                 core::format_bytes(gpu_mem).c_str(), conf.time.step_s());
  }
  if (rec < 0) {
    const auto smallest = std::min_element(rows.begin(), rows.end(), [](const LayoutPlan& x, const LayoutPlan& y) {
      return x.mem.total() < y.mem.total();
    });
    std::string need = smallest == rows.end() ? std::string("no valid layout at all")
                                              : fmt::format("the smallest, {}, needs {} per rank",
                                                            smallest->layout.describe(),
                                                            core::format_bytes(smallest->mem.total()));
    std::fprintf(stderr,
                 "error: no layout of %d GPU(s) fits --gpu-mem %s: %s. Change --gpus (ZeRO-3 shards the "
                 "parameter, gradient and optimizer state over more GPUs), --gpu-mem, train.batch_size (the "
                 "micro-batches must divide it per replica), model.seq_len (activations), train.precision, "
                 "optim.name, or the model size (model.n_layer, model.n_embd)\n",
                 a.gpus, core::format_bytes(gpu_mem).c_str(), need.c_str());
    return 2;
  }
  if (!a.json) {
    const LayoutPlan& r = rows[static_cast<size_t>(rec)];
    std::printf("recommended: %s: %s per rank, %.4g s per step\n  meshtrain train %s %s\n",
                r.layout.describe().c_str(), core::format_bytes(r.mem.total()).c_str(), r.time.step_s(),
                a.config.c_str(),
                overrides_for(r.layout).c_str());
  }
  return 0;
}

}  // namespace mt::launch
