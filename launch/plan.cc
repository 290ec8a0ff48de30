// What: the memory and step-time model of `meshtrain plan` and its layouts (see plan.h).
#include "launch/plan.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "core/error.h"
#include "parallel/grad_sync.h"
#include "parallel/models/registry.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/stages.h"

namespace mt::launch {

const char* recompute_name(PlanRecompute r) {
  switch (r) {
    case PlanRecompute::Selective: return "selective";
    case PlanRecompute::Full: return "full";
    case PlanRecompute::None: break;
  }
  return "none";
}

PlanRecompute parse_plan_recompute(const std::string& s) {
  if (s == "none") return PlanRecompute::None;
  if (s == "selective") return PlanRecompute::Selective;
  if (s == "full") return PlanRecompute::Full;
  throw core::Error(fmt::format("train.recompute = {}: none, selective or full", s)).with_yaml("train.recompute");
}

std::string Layout::describe() const {
  return fmt::format("dp {} x tp {}{}, zero {}{}, recompute {}, micro_batch {}", dp, tp,
                     pp > 1 ? fmt::format(" x pp {}", pp) : "", zero, sp ? ", sp" : "", recompute_name(recompute),
                     micro_batch);
}

bool plan_cuda(const core::Config& cfg) { return cfg.train.device != "cpu"; }
bool plan_bf16(const core::Config& cfg) {
  return cfg.train.precision == "bf16" || (cfg.train.precision == "auto" && plan_cuda(cfg));
}

ParamUnits param_units(const parallel::Architecture& arch, int tp, int dp, int zero) {
  // the model's own layout: with ZeRO-2/3 at dp > 1 each layer's unit is aligned to 64 x dp
  // (parallel/sharded_sync.h), so units are what its buffers hold, padding included
  ParamUnits u;
  const bool aligned = zero >= 2 && dp > 1;
  const auto info =
      parallel::layout_params(arch.param_specs(), tp, parallel::GradSync::flat_alignment(dp), &u.flat, aligned);
  for (const auto& unit : parallel::param_units(info, u.flat, arch.config().n_layer)) {
    if (unit.block) u.blk_max = std::max(u.blk_max, unit.size());
    else u.outer += unit.size();
  }
  return u;
}

namespace {

int plan_virtual(const core::Config& cfg, const Layout& l) { return l.pp > 1 ? cfg.parallel.pp_virtual : 1; }
int plan_micro(const core::Config& cfg, const Layout& l) {
  return std::max(1, cfg.train.batch_size / std::max(1, l.dp * l.micro_batch));
}

// param_units of the parameters a rank with stage layers `st` holds
ParamUnits stage_units(const parallel::Architecture& arch, const parallel::StageLayers& st, int tp, int dp, int zero) {
  ParamUnits u;
  const bool aligned = zero >= 2 && dp > 1;
  const int L = arch.config().n_layer;
  const auto info = parallel::layout_params(parallel::stage_specs(arch.param_specs(), st, L), tp,
                                            parallel::GradSync::flat_alignment(dp), &u.flat, aligned);
  for (const auto& unit : parallel::param_units(info, u.flat, L)) {
    if (unit.block) u.blk_max = std::max(u.blk_max, unit.size());
    else u.outer += unit.size();
  }
  return u;
}

}  // namespace

std::vector<std::pair<int, int>> plan_vstages(const core::Config& cfg, const parallel::Architecture& arch,
                                              const Layout& l) {
  const std::vector<int> none;
  return parallel::split_layers(arch, l.pp, plan_virtual(cfg, l), l.pp == cfg.parallel.pp ? cfg.parallel.pp_layers : none);
}

ParamUnits plan_stage_units(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l) {
  if (l.pp <= 1) return param_units(arch, l.tp, l.dp, l.zero);
  const auto vst = plan_vstages(cfg, arch, l);
  ParamUnits best;
  for (int s = 0; s < l.pp; ++s) {
    const ParamUnits u = stage_units(arch, parallel::stage_layers(vst, l.pp, s), l.tp, l.dp, l.zero);
    if (u.flat > best.flat) best = u;
  }
  return best;
}

int plan_pipeline_slots(const core::Config& cfg, const Layout& l) {
  if (l.pp <= 1) return 1;
  const auto sched = parallel::parse_pipe_schedule(cfg.parallel.pp_schedule);
  int in_flight = 0, most = 0;
  for (const auto& a : parallel::pipeline_actions(sched, l.pp, plan_virtual(cfg, l), plan_micro(cfg, l), 0)) {
    in_flight += a.kind == parallel::PipeAction::Kind::Forward ? 1 : -1;
    most = std::max(most, in_flight);
  }
  return most;
}

double plan_activation_bytes(const parallel::Architecture& arch, int B, int T, int tp, int elem_bytes,
                             int att_state_per_row, PlanRecompute recompute, bool sp) {
  const parallel::Recompute r = recompute == PlanRecompute::Full        ? parallel::Recompute::Full
                                : recompute == PlanRecompute::Selective ? parallel::Recompute::Selective
                                                                        : parallel::Recompute::None;
  return arch.activation_bytes(B, T, tp, elem_bytes, att_state_per_row, r, sp && tp > 1);
}

MemoryPrediction predict_memory(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l) {
  const bool cuda = plan_cuda(cfg), bf16 = plan_bf16(cfg);
  const ParamUnits u = plan_stage_units(cfg, arch, l);  // pp > 1: the largest stage's
  const double P = static_cast<double>(u.flat), dp = l.dp;
  const double W = bf16 ? 2.0 : 4.0;  // working dtype bytes
  const double state = cfg.optim.name == "adamw" ? 8.0 : (cfg.optim.momentum > 0 ? 4.0 : 0.0);
  const bool bf16_reduce = cfg.parallel.grad_reduce_dtype == "bf16" && l.dp > 1;
  const int zero = l.dp > 1 ? l.zero : 0;  // one replica: nothing to shard
  MemoryPrediction m;
  // ZeRO-2/3 (parallel/sharded_sync.h): the rank's pieces, the non-block layers whole, two
  // block slots, and the landing buffers of their reduce-scatters (1/dp of each); ZeRO-3 with
  // a bf16 working dtype also keeps its pieces in bf16 (the gathers' source)
  m.master = zero == 3 ? 4.0 * P / dp : 4.0 * P;
  m.working = zero == 3 ? W * (u.outer + 2.0 * u.blk_max) + (bf16 ? 2.0 * P / dp : 0.0) : (bf16 ? 2.0 * P : 0.0);
  m.grads = zero >= 2 ? 4.0 * P / dp + 4.0 * (u.outer + 2.0 * u.blk_max) * (1.0 + 1.0 / dp) : 4.0 * P;
  m.optimizer = zero >= 1 ? state * P / dp : state * P;
  if (zero == 1) m.comm = (bf16_reduce ? 2.0 : 4.0) * P / dp;  // GradSync's reduce-scatter shard
  if (bf16_reduce) m.comm += 2.0 * P;                            // the bf16 wire copy
  // activations: the model's buffers at (micro_batch, seq_len) and the token buffers (5 x N int32/fp32)
  const int T = cfg.model.seq_len;
  const int att_per_row = cuda ? 1 : T;  // CUDA keeps a log-sum-exp per row, the CPU kernels T probabilities
  const auto acts = [&](const parallel::Architecture& a) {
    return plan_activation_bytes(a, l.micro_batch, T, l.tp, bf16 ? 2 : 4, att_per_row, l.recompute, l.sp);
  };
  const double whole = acts(arch);  // one micro-batch through the whole model
  m.activations = whole + 5.0 * 4.0 * l.micro_batch * T;
  if (l.pp > 1) {  // the first stage: per chunk in flight its blocks and the model's non-block buffers
    core::ModelConfig one = cfg.model, two = cfg.model;
    one.n_layer = 1, two.n_layer = 2;
    const double d = acts(*parallel::make_architecture(two)) - acts(*parallel::make_architecture(one));
    const double rest = whole - arch.config().n_layer * d;
    const auto vst = plan_vstages(cfg, arch, l);
    const double blocks = vst.front().second - vst.front().first;  // stage 0's first chunk (interleaved: all equal)
    m.activations = plan_pipeline_slots(cfg, l) * (blocks * d + rest) + 5.0 * 4.0 * l.micro_batch * T;
  }
  if (cuda) m.other = 32.0 * 1048576.0;  // cuBLASLt workspace
  return m;
}

TimePrediction predict_time(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l,
                            const ClusterAssumption& c, int gpus_per_node) {
  TimePrediction t;
  const int T = cfg.model.seq_len, gpus = l.dp * l.tp * l.pp;
  const bool bf16 = plan_bf16(cfg);
  const double tokens = static_cast<double>(cfg.train.batch_size) * T;
  const double base = arch.flops_per_token(T) * tokens / gpus / (c.gpu_peak_flops * c.mfu);
  const double extra = l.recompute == PlanRecompute::Full ? 1.0 / 3 : l.recompute == PlanRecompute::Selective ? 0.03 : 0.0;
  t.compute_s = base * (1.0 + extra);
  // tensor parallelism: every micro-step's collectives inside the node (sp: all-gather +
  // reduce-scatter, the same bytes as the all-reduce); full recomputation re-issues the forward's
  const int n_micro = std::max(1, cfg.train.batch_size / (l.dp * l.micro_batch));
  if (l.tp > 1) {
    const auto tr = arch.tp_traffic(static_cast<int64_t>(l.micro_batch) * T, bf16 ? 2 : 4);
    if (tr.all_reduces > 0)  // a pipeline stage: those of its 1/pp of the blocks
      t.tp_comm_s = n_micro * tr.all_reduces * ring_allreduce_s(c.intra, tr.bytes / tr.all_reduces, l.tp) *
                    (l.recompute == PlanRecompute::Full ? 1.5 : 1.0) / l.pp;
  }
  // pipeline: the stage's work stretched by the bubble, plus its point-to-point messages
  // (activations of micro_batch x seq_len x n_embd working-dtype elements); NVLink while a
  // pipeline (tp x pp adjacent ranks) fits a node, else the network
  if (l.pp > 1) {
    const AlphaBeta& link = l.tp * l.pp <= gpus_per_node ? c.intra : c.inter;
    const PipelineTime pt =
        pipeline_time(t.compute_s + t.tp_comm_s, parallel::parse_pipe_schedule(cfg.parallel.pp_schedule), l.pp,
                      plan_virtual(cfg, l), n_micro, (bf16 ? 2.0 : 4.0) * l.micro_batch * T * cfg.model.n_embd, link);
    t.bubble = pt.bubble;
    t.compute_s /= 1.0 - pt.bubble;
    t.tp_comm_s /= 1.0 - pt.bubble;
    t.pp_comm_s = pt.p2p_s;
  }
  // data parallelism: the dp group of a rank spans gpus_per_node / tp ranks per node
  if (l.dp > 1) {
    const int per_node = std::max(1, gpus_per_node / (l.tp * l.pp));  // dp stride: tp x pp ranks
    Layout unsharded = l;  // the largest stage's gradients (pp 1: the model's)
    unsharded.zero = 0;
    const double P = static_cast<double>(plan_stage_units(cfg, arch, unsharded).flat);
    const double grad_bytes = (cfg.parallel.grad_reduce_dtype == "bf16" ? 2.0 : 4.0) * P;
    const double ar = hierarchical_allreduce_s(c, grad_bytes, l.dp, per_node);
    // one micro-step's forward and backward (recomputation runs in the backward phase)
    const double fwd = base / 3 / n_micro, bwd = (t.compute_s - base / 3) / n_micro;
    const double layers = std::max(1, arch.config().n_layer);
    // communication behind compute: what the compute does not cover, and the last (first) block's
    const auto hidden = [&](double comm, double behind) { return std::max(0.0, comm - behind) + comm / layers; };
    const double rs = ar / 2;
    if (l.zero == 0) {  // all-reduce in the last micro-step's backward
      t.dp_comm_s = ar;
      t.dp_exposed_s = hidden(ar, bwd);
    } else if (l.zero == 1) {  // reduce-scatter in the last backward, fp32 parameters all-gathered after the update
      const double ag = hierarchical_allreduce_s(c, 4.0 * P, l.dp, per_node) / 2;
      t.dp_comm_s = rs + ag;
      t.dp_exposed_s = hidden(rs, bwd) + ag;
    } else if (l.zero == 2) {  // only a shard is kept: every micro-step's backward reduce-scatters
      const double ag = hierarchical_allreduce_s(c, 4.0 * P, l.dp, per_node) / 2;
      t.dp_comm_s = n_micro * rs + ag;
      t.dp_exposed_s = n_micro * hidden(rs, bwd) + ag;
    } else {  // every micro-step gathers the working parameters for forward and backward and reduce-scatters
      const double ag = hierarchical_allreduce_s(c, (bf16 ? 2.0 : 4.0) * P, l.dp, per_node) / 2;
      t.dp_comm_s = n_micro * (rs + 2 * ag);
      t.dp_exposed_s = n_micro * (hidden(ag, fwd) + hidden(ag + rs, bwd));
    }
  }
  return t;
}

std::string layout_violation(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l, int gpus,
                             int gpus_per_node) {
  if (l.pp < 1) return fmt::format("parallel.pp = {}: at least 1", l.pp);
  if (l.dp * l.tp * l.pp != gpus)
    return l.pp == 1 ? fmt::format("parallel.dp = {} x parallel.tp = {} is not --gpus {}", l.dp, l.tp, gpus)
                     : fmt::format("parallel.dp = {} x parallel.tp = {} x parallel.pp = {} is not --gpus {}", l.dp, l.tp,
                                   l.pp, gpus);
  if (std::string bad = arch.tp_violation(l.tp); !bad.empty()) return bad;
  if (l.tp > gpus_per_node)
    return fmt::format("parallel.tp = {} exceeds the {} GPUs of a node (tensor parallelism stays inside a node)", l.tp,
                       gpus_per_node);
  if (l.zero < 0 || l.zero > 3) return fmt::format("parallel.zero = {}: 0, 1, 2 or 3", l.zero);
  if (l.sp && l.tp < 2) return "parallel.sp needs parallel.tp > 1";
  if (l.micro_batch < 1 || cfg.train.batch_size % (l.dp * l.micro_batch) != 0)
    return fmt::format("train.batch_size = {} is not divisible by train.micro_batch x dp = {} x {}",
                       cfg.train.batch_size, l.micro_batch, l.dp);
  if (l.pp > 1) {
    if (l.zero >= 2 && l.dp > 1)
      return fmt::format("parallel.zero = {} does not compose with parallel.pp = {} (ZeRO-0 or 1)", l.zero, l.pp);
    try {  // the stages and the schedule, as the trainer checks them
      plan_vstages(cfg, arch, l);
      parallel::check_pipeline(parallel::parse_pipe_schedule(cfg.parallel.pp_schedule), l.pp, plan_virtual(cfg, l),
                               plan_micro(cfg, l));
    } catch (const core::Error& e) {
      return e.what();
    }
  }
  return "";
}

std::vector<Layout> enumerate_layouts(const core::Config& cfg, const parallel::Architecture& arch, int gpus,
                                      int gpus_per_node) {
  std::vector<Layout> out;
  // pipelines only where the config asks for one (parallel.pp > 1): pp dividing the GPUs and model.n_layer
  std::vector<int> pps{1};
  const int L = arch.config().n_layer;
  if (cfg.parallel.pp > 1)
    for (int pp = 2; pp <= std::min(gpus, L); ++pp)
      if (gpus % pp == 0 && L % pp == 0) pps.push_back(pp);
  for (int tp = 1; tp <= gpus; ++tp)
   for (int pp : pps) {
    if (gpus % (tp * pp) != 0) continue;
    const int dp = gpus / (tp * pp);
    for (int zero = 0; zero <= (dp > 1 ? 3 : 0); ++zero)  // zero > 0 shards over dp: dp 1 is zero 0
      for (int sp = 0; sp <= (tp > 1 ? 1 : 0); ++sp)
        for (PlanRecompute rc : {PlanRecompute::None, PlanRecompute::Selective, PlanRecompute::Full})
          for (int mb = 1; mb <= cfg.train.batch_size; ++mb) {
            const Layout l{dp, tp, zero, sp != 0, rc, mb, pp};
            if (layout_violation(cfg, arch, l, gpus, gpus_per_node).empty()) out.push_back(l);
          }
  }
  return out;
}

Layout configured_layout(const core::Config& cfg, int gpus) {
  Layout l;
  l.tp = cfg.parallel.tp;
  l.pp = cfg.parallel.pp;
  l.dp = cfg.parallel.dp > 0 ? cfg.parallel.dp : std::max(1, gpus / std::max(1, l.tp * l.pp));
  l.zero = cfg.parallel.zero;
  l.sp = cfg.parallel.sp;
  l.recompute = parse_plan_recompute(cfg.train.recompute);
  l.micro_batch = cfg.train.micro_batch == core::kAutoMicroBatch ? core::auto_micro_batch(cfg, l.dp, l.pp)
                                                                 : cfg.train.micro_batch;
  return l;
}

}  // namespace mt::launch
