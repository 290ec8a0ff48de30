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

#include "parallel/pipeline/schedule.h"

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

// One point-to-point message of `bytes` over one link: alpha + bytes beta (a single hop, not a
// ring).
double p2p_message_s(const AlphaBeta& ab, double bytes);

// Pipeline parallelism (parallel.pp > 1) as the rank of a stage sees it, uniform stages:
//   bubble    = theoretical_bubble(schedule, pp, v, m)  (m micro-batches per step per replica)
//   compute_s = stage_compute_s / (1 - bubble)         stage_compute_s: the stage's share of the
//               replica's work (the model's FLOPs / pp), busy time of its rank in one step
//   p2p_s     = 2 m v (alpha + msg_bytes beta) / (1 - bubble)
//               every micro-batch and virtual stage sends its activation forward (B T C elements
//               of the working dtype = msg_bytes) and receives its gradient back: two messages on
//               the rank's own timeline. They are charged like compute (the runner's sends and
//               receives sit between the rank's computations, no overlap with them), so the
//               fill and drain stretch them by the same 1 / (1 - bubble) as compute; the ranks'
//               messages on different boundaries run in parallel (not added up).
//   p2p_bytes = 2 m (v pp - 1) msg_bytes: the traffic over all boundaries of one replica (pp - 1
//               boundaries, v pp - 1 with interleaving: the wrap from the last rank back to the
//               first between chunks is a boundary too).
// pp 1: bubble 0, compute_s = stage_compute_s, no p2p. Throws like check_pipeline on bad input.
struct PipelineTime {
  double bubble = 0, compute_s = 0, p2p_s = 0, p2p_bytes = 0;
  double step_s() const { return compute_s + p2p_s; }
};
PipelineTime pipeline_time(double stage_compute_s, parallel::PipeSchedule s, int pp, int virtual_stages, int m,
                           double msg_bytes, const AlphaBeta& link);

// Markdown: predicted step time and weak-scaling efficiency of data parallelism at 8..1024
// GPUs for a model of `flops_per_step_per_gpu` and `grad_bytes`, bounds without and with
// full overlap of communication and backward.
std::string extrapolation_table(const ClusterAssumption& c, double flops_per_step_per_gpu, double grad_bytes);

}  // namespace mt::launch
