// What: the alpha-beta cost model of `meshtrain scale`. An all-reduce of B bytes over n ranks
// by a ring costs  t = 2(n-1) alpha + 2(n-1)/n * B * beta  (alpha: per-message latency, beta:
// seconds per byte = 1 / bus bandwidth). alpha and beta are fitted by least squares (on relative
// errors, so small messages count) to a
// measured `bench allreduce` table; step time is predicted as compute (scaled by the cores the
// point can use) plus the data-parallel gradient all-reduce and the tensor-parallel
// activation all-reduces, with no credit for overlap (an upper bound on exposed comm).
// The same model extrapolates to GPU clusters from published bandwidths (docs/scaling.md).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace mt::launch {

struct AlphaBeta {
  double alpha_s = 0;  // seconds per message step
  double beta_s = 0;   // seconds per byte (1 / busbw)
};

// Fit t = 2(n-1) alpha + 2(n-1)/n B beta to (bytes, seconds) pairs measured on n ranks.
AlphaBeta fit_alpha_beta(const std::vector<std::pair<double, double>>& bytes_seconds, int n);
double ring_allreduce_s(const AlphaBeta& ab, double bytes, int n);

struct ClusterAssumption {
  std::string name;
  double gpu_peak_flops;   // dense bf16
  double mfu;              // assumed achieved fraction of peak
  AlphaBeta intra, inter;  // NVLink within a node, network across nodes
  int gpus_per_node;
};
ClusterAssumption h100_cluster();

// An all-reduce of `bytes` over n ranks placed `per_node` to a node (consecutive ranks share a
// node): hierarchical ring, reduce-scatter + all-gather inside a node over NVLink, then the
// all-reduce of the 1/(ranks in a node) shard across nodes. A reduce-scatter or an all-gather
// alone costs half of it.
double hierarchical_allreduce_s(const ClusterAssumption& c, double bytes, int n, int per_node);

// Markdown: predicted step time and weak-scaling efficiency of data parallelism at 8..1024
// GPUs for a model of `flops_per_step_per_gpu` and `grad_bytes`, bounds without and with
// full overlap of communication and backward.
std::string extrapolation_table(const ClusterAssumption& c, double flops_per_step_per_gpu, double grad_bytes);

}  // namespace mt::launch
