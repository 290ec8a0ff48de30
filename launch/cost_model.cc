// What: cost model fits and the GPU-cluster extrapolation (see cost_model.h).
#include "launch/cost_model.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace mt::launch {

AlphaBeta fit_alpha_beta(const std::vector<std::pair<double, double>>& pts, int n) {
  std::vector<std::pair<CostTerms, double>> terms;
  for (const auto& [bytes, t] : pts) terms.push_back({{2.0 * (n - 1), 2.0 * (n - 1) / n * bytes}, t});
  return fit_alpha_beta_terms(terms);
}

AlphaBeta fit_alpha_beta_terms(const std::vector<std::pair<CostTerms, double>>& pts) {
  // t = a * x1 + b * x2: least squares in 2 unknowns on RELATIVE errors (weights 1/t^2). Plain
  // least squares on seconds lets the largest messages decide everything and typically drives
  // alpha to 0 (measured here: a 4 KiB..16 MiB table gave alpha 0 and missed the 4 KiB time by
  // 100%), while tensor parallelism lives on small, latency-bound messages.
  double s11 = 0, s12 = 0, s22 = 0, s1t = 0, s2t = 0;
  for (const auto& [x, t] : pts) {
    if (!(t > 0)) continue;
    const double w = 1.0 / (t * t), x1 = x.steps, x2 = x.coef_bytes;
    s11 += w * x1 * x1, s12 += w * x1 * x2, s22 += w * x2 * x2, s1t += w * x1 * t, s2t += w * x2 * t;
  }
  const double det = s11 * s22 - s12 * s12;
  AlphaBeta ab;
  if (std::fabs(det) > 0) {
    ab.alpha_s = std::max(0.0, (s1t * s22 - s2t * s12) / det);
    ab.beta_s = std::max(0.0, (s11 * s2t - s12 * s1t) / det);
  }
  return ab;
}

double ring_allreduce_s(const AlphaBeta& ab, double bytes, int n) {
  if (n <= 1) return 0;
  return 2.0 * (n - 1) * ab.alpha_s + 2.0 * (n - 1) / n * bytes * ab.beta_s;
}

ClusterAssumption h100_cluster() {
  // Published figures: H100 SXM dense bf16 989 TFLOP/s; nccl-tests all-reduce busbw ~450 GB/s
  // over NVLink in an 8-GPU node; 400 Gb/s NDR InfiniBand per GPU ~ 45 GB/s busbw across
  // nodes. Latencies ~5 us (NVLink) and ~10 us (IB) per ring step; MFU 40% (Megatron-LM
  // reports 41-47% on H100).
  return {"H100 SXM, 8 per node, NVLink + 400 Gb/s InfiniBand", 989e12, 0.40,
          {5e-6, 1.0 / 450e9}, {10e-6, 1.0 / 45e9}, 8};
}

double hierarchical_allreduce_s(const ClusterAssumption& c, double bytes, int n, int per_node) {
  Network net{c.intra, c.inter, per_node, c.gpus_per_node, 0};
  return hierarchical_allreduce_s(net, bytes, n);
}

int hosts_spanned(const Network& net, int n) {
  const int l = std::max(1, net.ranks_per_host);
  return std::max(1, (n + l - 1) / l);
}

LevelTerms flat_allreduce_terms(const Network& net, double bytes, int n) {
  LevelTerms t;
  if (n <= 1) return t;
  const int l = std::max(1, net.ranks_per_host);
  if (bytes >= net.ring_min_bytes) {
    CostTerms ring{2.0 * (n - 1), 2.0 * (n - 1) / n * bytes};
    (hosts_spanned(net, n) > 1 ? t.inter : t.intra) = ring;
    return t;
  }
  // recursive doubling as RdOp runs it (parallel/mpi_algorithms.cc): p2 = the largest power of
  // two <= n, rem = n - p2; ranks 2k and 2k+1 (k < rem) pair up before and after, the others
  // exchange with newrank ^ mask (newrank k < rem: rank 2k+1, else rank k + rem). A step crosses
  // hosts when any of its pairs does; the host's ranks crossing at once share its links.
  int p2 = 1;
  while (p2 * 2 <= n) p2 *= 2;
  const int rem = n - p2;
  const auto real = [&](int k) { return k < rem ? 2 * k + 1 : k + rem; };
  std::vector<int> crossing(static_cast<size_t>(hosts_spanned(net, n)), 0);
  const auto step = [&](const std::vector<std::pair<int, int>>& pairs, double mult) {
    std::fill(crossing.begin(), crossing.end(), 0);
    int most = 0;
    for (const auto& [a, b] : pairs) {
      if (a / l == b / l) continue;
      most = std::max({most, ++crossing[a / l], ++crossing[b / l]});
    }
    CostTerms& c = most > 0 ? t.inter : t.intra;
    const double share = most > 0 ? std::max(1.0, static_cast<double>(most) / std::max(1, net.links_per_host)) : 1.0;
    c.steps += mult, c.coef_bytes += mult * bytes * share;
  };
  if (rem > 0) {  // one send in and one back (the same pairs)
    std::vector<std::pair<int, int>> pairs;
    for (int k = 0; k < rem; ++k) pairs.push_back({2 * k, 2 * k + 1});
    step(pairs, 2);
  }
  for (int mask = 1; mask < p2; mask <<= 1) {
    std::vector<std::pair<int, int>> pairs;
    for (int k = 0; k < p2; ++k)
      if (k < (k ^ mask)) pairs.push_back({real(k), real(k ^ mask)});
    step(pairs, 1);
  }
  return t;
}

double flat_allreduce_s(const Network& net, double bytes, int n) {
  const LevelTerms t = flat_allreduce_terms(net, bytes, n);
  return t.intra.steps * net.intra.alpha_s + t.intra.coef_bytes * net.intra.beta_s +
         t.inter.steps * net.inter.alpha_s + t.inter.coef_bytes * net.inter.beta_s;
}

double hierarchical_allreduce_s(const Network& net, double bytes, int n) {
  if (n <= 1) return 0;
  const int l = std::max(1, std::min(n, net.ranks_per_host)), hosts = std::max(1, n / l);
  if (l == 1 || hosts == 1 || bytes < net.hier_min_bytes) return flat_allreduce_s(net, bytes, n);
  const double share = std::max(1.0, static_cast<double>(l) / std::max(1, net.links_per_host));
  // reduce-scatter + all-gather inside the host = one intra ring all-reduce
  const double inside = ring_allreduce_s(net.intra, bytes, l);
  // across: the flat all-reduce of the shard over one rank per host, its links shared by l
  Network across = net;
  across.ranks_per_host = 1;
  across.inter.beta_s *= share;
  return inside + flat_allreduce_s(across, bytes / l, hosts);
}

double p2p_message_s(const AlphaBeta& ab, double bytes) { return ab.alpha_s + bytes * ab.beta_s; }

PipelineTime pipeline_time(double stage_compute_s, parallel::PipeSchedule s, int pp, int v, int m, double msg_bytes,
                           const AlphaBeta& link) {
  PipelineTime t;
  if (pp <= 1) {
    t.compute_s = stage_compute_s;
    return t;
  }
  parallel::check_pipeline(s, pp, v, m);
  t.bubble = parallel::theoretical_bubble(s, pp, v, m);
  const double stretch = 1.0 / (1.0 - t.bubble);  // makespan / busy time of a rank
  t.compute_s = stage_compute_s * stretch;
  t.p2p_s = 2.0 * m * v * p2p_message_s(link, msg_bytes) * stretch;
  t.p2p_bytes = 2.0 * m * (static_cast<double>(v) * pp - 1) * msg_bytes;
  return t;
}

std::string extrapolation_table(const ClusterAssumption& c, double flops, double grad_bytes) {
  const double compute = flops / (c.gpu_peak_flops * c.mfu);
  std::string md = fmt::format(
      "Assumed cluster: {} (peak {:.0f} TFLOP/s x MFU {:.0f}%). Data parallel, weak scaling (the per-GPU batch of "
      "this experiment), gradient all-reduce of {:.1f} MB per step: hierarchical ring = NVLink inside a node, then "
      "the network ring across nodes.\n\n"
      "| GPUs | compute ms | all-reduce ms | step ms (no overlap) | efficiency (no overlap) | efficiency (full overlap) |\n"
      "|---|---|---|---|---|---|\n",
      c.name, c.gpu_peak_flops / 1e12, 100 * c.mfu, grad_bytes / 1e6);
  for (int n : {8, 64, 256, 1024}) {
    // reduce-scatter + all-gather inside the node, all-reduce of the 1/intra shard across nodes
    const double t = hierarchical_allreduce_s(c, grad_bytes, n, c.gpus_per_node);
    md += fmt::format("| {} | {:.1f} | {:.1f} | {:.1f} | {:.1f}% | {:.1f}% |\n", n, compute * 1e3, t * 1e3,
                      (compute + t) * 1e3, 100 * compute / (compute + t), 100 * compute / std::max(compute, t));
  }
  return md;
}

}  // namespace mt::launch
