// What: the memory and step-time model of `meshtrain plan` and its layouts (see plan.h).
#include "launch/plan.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "core/error.h"
#include "parallel/grad_sync.h"

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
  return fmt::format("dp {} x tp {}, zero {}{}, recompute {}, micro_batch {}", dp, tp, zero, sp ? ", sp" : "",
                     recompute_name(recompute), micro_batch);
}

bool plan_cuda(const core::Config& cfg) { return cfg.train.device != "cpu"; }
bool plan_bf16(const core::Config& cfg) {
  return cfg.train.precision == "bf16" || (cfg.train.precision == "auto" && plan_cuda(cfg));
}

ParamUnits param_units(const parallel::Architecture& arch, int tp, int dp) {
  ParamUnits u;
  const auto info = parallel::layout_params(arch.param_specs(), tp, parallel::GradSync::flat_alignment(dp), &u.flat);
  const int n_layer = arch.config().n_layer;
  std::map<int, int64_t> per_block;
  for (const auto& p : info) {
    if (p.layer >= 0 && p.layer < n_layer) per_block[p.layer] += p.numel;
    else u.outer += p.numel;
  }
  for (const auto& [l, n] : per_block) u.blk_max = std::max(u.blk_max, n);
  return u;
}

double activation_bytes_fallback(const parallel::Architecture& arch, int B, int T, int tp, int elem_bytes,
                                 int att_state_per_row, PlanRecompute recompute, bool sp) {
  // FALLBACK (issue #16): the architectures model none and full; selective and sp are
  // approximated here until Architecture::activation_bytes takes them.
  const core::ModelConfig& m = arch.config();
  const bool full = recompute == PlanRecompute::Full;
  double bytes = arch.activation_bytes(B, T, tp, elem_bytes, att_state_per_row,
                                       full ? parallel::Recompute::Full : parallel::Recompute::None);
  const double N = static_cast<double>(B) * T, C = m.n_embd, W = elem_bytes, NHl = m.n_head / tp;
  if (recompute == PlanRecompute::Selective)  // the attention state is recomputed, not kept
    bytes -= m.n_layer * static_cast<double>(B) * NHl * T * att_state_per_row * 4.0;
  if (sp && tp > 1) {
    // the norm / residual regions hold 1/tp of the sequence: per kept block its two norm
    // outputs and two residual streams (N, C), with full recomputation the other blocks'
    // inputs, and the embedding output and the final norm's
    const double region = 4 * N * C * W;
    const double kept = (full ? region + (m.n_layer - 1) * N * C * W : m.n_layer * region) + 2 * N * C * W;
    bytes -= kept * (1.0 - 1.0 / tp);
  }
  return bytes;
}

MemoryPrediction predict_memory(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l) {
  const bool cuda = plan_cuda(cfg), bf16 = plan_bf16(cfg);
  const ParamUnits u = param_units(arch, l.tp, l.dp);
  const double P = static_cast<double>(u.flat), dp = l.dp;
  const double W = bf16 ? 2.0 : 4.0;  // working dtype bytes
  const double state = cfg.optim.name == "adamw" ? 8.0 : (cfg.optim.momentum > 0 ? 4.0 : 0.0);
  const bool bf16_reduce = cfg.parallel.grad_reduce_dtype == "bf16" && l.dp > 1;
  const int zero = l.dp > 1 ? l.zero : 0;  // one replica: nothing to shard
  MemoryPrediction m;
  m.master = zero == 3 ? 4.0 * P / dp : 4.0 * P;
  m.working = zero == 3 ? W * (u.outer + 2.0 * u.blk_max) : (bf16 ? 2.0 * P : 0.0);
  m.grads = zero >= 2 ? 4.0 * P / dp + 4.0 * u.outer + 2 * 4.0 * u.blk_max : 4.0 * P;
  m.optimizer = zero >= 1 ? state * P / dp : state * P;
  if (zero == 1) m.comm = (bf16_reduce ? 2.0 : 4.0) * P / dp;  // GradSync's reduce-scatter shard
  if (bf16_reduce) m.comm += 2.0 * P;                            // the bf16 wire copy
  // activations: the model's buffers at (micro_batch, seq_len) and the token buffers (5 x N int32/fp32)
  const int T = cfg.model.seq_len;
  const int att_per_row = cuda ? 1 : T;  // CUDA keeps a log-sum-exp per row, the CPU kernels T probabilities
  m.activations = activation_bytes_fallback(arch, l.micro_batch, T, l.tp, bf16 ? 2 : 4, att_per_row, l.recompute, l.sp) +
                  5.0 * 4.0 * l.micro_batch * T;
  if (cuda) m.other = 32.0 * 1048576.0;  // cuBLASLt workspace
  return m;
}

TimePrediction predict_time(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l,
                            const ClusterAssumption& c, int gpus_per_node) {
  TimePrediction t;
  const int T = cfg.model.seq_len, gpus = l.dp * l.tp;
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
    if (tr.all_reduces > 0)
      t.tp_comm_s = n_micro * tr.all_reduces * ring_allreduce_s(c.intra, tr.bytes / tr.all_reduces, l.tp) *
                    (l.recompute == PlanRecompute::Full ? 1.5 : 1.0);
  }
  // data parallelism: the dp group of a rank spans gpus_per_node / tp ranks per node
  if (l.dp > 1) {
    const int per_node = std::max(1, gpus_per_node / l.tp);
    const double P = static_cast<double>(param_units(arch, l.tp, l.dp).flat);
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
  if (l.dp * l.tp != gpus)
    return fmt::format("parallel.dp = {} x parallel.tp = {} is not --gpus {}", l.dp, l.tp, gpus);
  if (std::string bad = arch.tp_violation(l.tp); !bad.empty()) return bad;
  if (l.tp > gpus_per_node)
    return fmt::format("parallel.tp = {} exceeds the {} GPUs of a node (tensor parallelism stays inside a node)", l.tp,
                       gpus_per_node);
  if (l.zero < 0 || l.zero > 3) return fmt::format("parallel.zero = {}: 0, 1, 2 or 3", l.zero);
  if (l.sp && l.tp < 2) return "parallel.sp needs parallel.tp > 1";
  if (l.micro_batch < 1 || cfg.train.batch_size % (l.dp * l.micro_batch) != 0)
    return fmt::format("train.batch_size = {} is not divisible by train.micro_batch x dp = {} x {}",
                       cfg.train.batch_size, l.micro_batch, l.dp);
  return "";
}

std::vector<Layout> enumerate_layouts(const core::Config& cfg, const parallel::Architecture& arch, int gpus,
                                      int gpus_per_node) {
  std::vector<Layout> out;
  for (int tp = 1; tp <= gpus; ++tp) {
    if (gpus % tp != 0) continue;
    const int dp = gpus / tp;
    for (int zero = 0; zero <= (dp > 1 ? 3 : 0); ++zero)  // zero > 0 shards over dp: dp 1 is zero 0
      for (int sp = 0; sp <= (tp > 1 ? 1 : 0); ++sp)
        for (PlanRecompute rc : {PlanRecompute::None, PlanRecompute::Selective, PlanRecompute::Full})
          for (int mb = 1; mb <= cfg.train.batch_size; ++mb) {
            const Layout l{dp, tp, zero, sp != 0, rc, mb};
            if (layout_violation(cfg, arch, l, gpus, gpus_per_node).empty()) out.push_back(l);
          }
  }
  return out;
}

Layout configured_layout(const core::Config& cfg, int gpus) {
  Layout l;
  l.tp = cfg.parallel.tp;
  l.dp = cfg.parallel.dp > 0 ? cfg.parallel.dp : std::max(1, gpus / std::max(1, l.tp));
  l.zero = cfg.parallel.zero;
  l.sp = false;  // TODO(#16): parallel.sp once the config has it
  l.recompute = parse_plan_recompute(cfg.train.recompute);
  l.micro_batch = cfg.train.micro_batch;
  return l;
}

}  // namespace mt::launch
