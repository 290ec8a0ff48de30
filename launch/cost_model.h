// What: the alpha-beta cost model of `meshtrain scale`. An all-reduce of B bytes over n ranks
// by a ring costs  t = 2(n-1) alpha + 2(n-1)/n * B * beta  (alpha: per-message latency, beta:
// seconds per byte = 1 / bus bandwidth). alpha and beta are fitted by least squares (on relative
// errors, so small messages count) to a
// measured `bench allreduce` table; step time is predicted as compute (scaled by the cores the
// point can use) plus the data-parallel gradient all-reduce and the tensor-parallel
// activation all-reduces, with no credit for overlap (an upper bound on exposed comm).
// The same model extrapolates to GPU clusters from published bandwidths (docs/scaling.md).
// Two-level networks (Network): ranks on one host talk over `intra` (shared memory, NVLink),
// ranks on different hosts over `inter` (TCP, InfiniBand); flat and hierarchical all-reduce
// are costed on both levels, fitted by `meshtrain bench network` (launch/network_bench.h).
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

// Least squares on relative errors of t = steps alpha + coef_bytes beta, one term per measured
// point: the general fit behind fit_alpha_beta, for timings whose algorithm differs by size.
struct CostTerms {
  double steps = 0;       // alpha multiplier: message steps on the critical path
  double coef_bytes = 0;  // beta multiplier: bytes through the slowest link on the critical path
};
AlphaBeta fit_alpha_beta_terms(const std::vector<std::pair<CostTerms, double>>& terms_seconds);

// A two-level network: consecutive ranks share a host (`ranks_per_host` of them); inside a host
// a message costs intra (alpha + bytes beta), between hosts inter. `links_per_host`: the host's
// inter-host links (NICs); when more of its ranks than that send across hosts at the same time
// they share them (a simulated host or a commodity node: 1; a rail-optimised GPU node: one per
// GPU). `ring_min_bytes`: the flat all-reduce's algorithm switch (the framework's MPI backend
// runs recursive doubling below 256 KiB, the ring from there; 0: always the ring, as NCCL).
// `hier_min_bytes`: the hierarchical all-reduce runs the flat one below it (the MPI backend:
// 64 KiB; 0: never, as NCCL).
struct Network {
  AlphaBeta intra, inter;
  int ranks_per_host = 1;
  int links_per_host = 1;
  double ring_min_bytes = 0;
  double hier_min_bytes = 0;
};

// Cost terms of the framework's flat all-reduce of `bytes` over n consecutive ranks, priced on
// `net` (ranks_per_host, links_per_host, ring_min_bytes), split by the level each step runs on
// (a step with a hop across hosts is an inter-host step):
//   ring (bytes >= ring_min_bytes): 2(n-1) steps, each moving
//     bytes/n over every link at once: 2(n-1) alpha + 2(n-1)/n bytes beta, inter when the n
//     ranks span several hosts (one flow per host crosses to the next host: the ring is
//     consecutive), else intra;
//   recursive doubling: log2(n) exchanges of all the bytes, exchange k with the rank 2^k away:
//     inside a host while 2^k < ranks_per_host, else across hosts, where every rank of the
//     host exchanges at once (bytes x ranks_per_host / links_per_host through one link); n not
//     a power of two: log2 of the power of two below n exchanges, plus one send before and one
//     after between neighbouring ranks (mpi_algorithms.cc RdOp), inside a host when l > 1.
// Across hosts the backend sends in 65000-byte pieces (net_segment_bytes, net_piece_bytes):
// no term of its own, the fitted inter alpha/beta absorb it (bench network times the same
// communicators the trainer configures).
struct LevelTerms {
  CostTerms intra, inter;
};
LevelTerms flat_allreduce_terms(const Network& net, double bytes, int n);
// Seconds: flat_allreduce_terms priced with net.intra and net.inter.
double flat_allreduce_s(const Network& net, double bytes, int n);
// Hierarchical (NCCL-style, parallel.allreduce: hierarchical): reduce-scatter inside each host
// ((l-1) alpha + (l-1)/l bytes beta, intra), the all-reduce of each rank's 1/l shard across
// the H hosts (the flat all-reduce of bytes/l over H ranks one per host: the ring from
// ring_min_bytes, else recursive doubling; inter, with the l all-reduces of a host sharing its
// links: beta x max(1, l / links_per_host)), all-gather inside each host (as the
// reduce-scatter). l = min(n, ranks_per_host), H = n / l. Below hier_min_bytes, or with one
// rank per host or one host, the flat all-reduce (what the backend then runs).
double hierarchical_allreduce_s(const Network& net, double bytes, int n);
// The number of hosts n consecutive ranks span.
int hosts_spanned(const Network& net, int n);

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
// all-reduce of the 1/(ranks in a node) shard across nodes, one NIC per GPU (the Network
// version with links_per_host = gpus_per_node). A reduce-scatter or an all-gather alone costs
// half of it.
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
