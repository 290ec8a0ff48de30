// What: `meshtrain plan CONFIG --gpus N --gpu-mem 80GiB [--nodes M] [--json] [key=value ...]`:
// every valid layout of N GPUs (dp x tp, ZeRO level, sequence parallelism, activation
// recomputation, micro-batch) with its predicted memory per rank (by the categories the
// trainer measures: core/memory.h) and predicted step time (the `scale` cost model:
// cost_model.h), which fit in --gpu-mem, and a recommendation (fits, fastest; ties: least
// memory). Also the configured layout (parallel.*, train.*) and whether it fits.
// Memory per rank (P: this tp rank's flat parameter count, padded as the Model pads it; W:
// working dtype bytes; s: optimizer state bytes per parameter, AdamW 8, SGD momentum 4;
// U_blk: the largest block's local elements, U_out: the parameters outside the blocks):
//   zero 0  params 4P (+ 2P bf16 working copy), grads 4P, optimizer sP, comm 2P with a bf16 reduce
//   zero 1  as 0, optimizer sP/dp, comm the reduce-scatter shard 4P/dp (2P/dp bf16) (+2P bf16 wire)
//   zero 2  as 1, grads 4P/dp + 4 U_out + 2 x 4 U_blk (shard, the outer unit's full gradient,
//           two block slots), comm the bf16 wire
//   zero 3  params 4P/dp + W (U_out + 2 U_blk) (master shard, gathered working: the outer
//           unit resident, two block slots: current and prefetched), grads, optimizer as 2
//   activations  Architecture::activation_bytes at (micro_batch, seq_len) + the token buffers;
//           selective and sp: the architectures' activation_bytes (plan_activation_bytes)
//   other   CUDA: the cuBLASLt workspace (32 MiB)
// Pipeline parallelism (pp > 1; parallel.pp_schedule, pp_virtual, pp_layers as configured):
//   params, grads, optimizer  the formulas above with P, U_blk, U_out of the LARGEST stage (its
//           blocks of split_layers plus the embedding on the first, the final norm and head on
//           the last: the rank the plan must fit); ZeRO-2/3 do not compose with pp (refused)
//   activations  the FIRST stage's: for every micro-batch chunk it holds in flight at most
//           (pipeline_actions of stage 0: 1f1b min(pp, m), gpipe m, interleaved its warmup + 1
//           chunks) its blocks and the model's non-block buffers: slots x (blocks x d + A -
//           n_layer d), d = activation_bytes(n_layer 2) - activation_bytes(n_layer 1) per block,
//           A the whole model's at one micro-batch (its non-block part holds the head's logits,
//           which the first stage has not: measured on the CPU, GPT-2 4 x 64, pp 2, the stage
//           holds 0.94 of it for 1f1b and gpipe alike). With the largest stage's parameters.
//   step time  compute / pp per rank stretched by 1 / (1 - theoretical_bubble), the tp
//           collectives of the stage's blocks likewise, plus the point-to-point messages
//           (cost_model.h pipeline_time; NVLink when tp x pp fits a node, else the network).
//   enumerated  only when parallel.pp > 1 is configured: pp dividing --gpus and model.n_layer.
// Not counted: the CUDA context, NCCL's buffers, the allocator's fragmentation: leave headroom
// (pass a --gpu-mem below the card's capacity).
// Step time (H100 cluster assumption, h100_cluster()): compute = FLOPs / (GPUs x peak x MFU),
// x 4/3 with full recomputation (one more forward), x 1.03 selective; tp collectives per
// micro-step inside a node (exposed; full recomputation re-issues the forward's); dp traffic
// (hierarchical ring, nodes of --gpus/--nodes GPUs) overlapped with compute where the trainer
// overlaps it, one block's worth never hidden: ZeRO-0/1 reduce in the last micro-step's
// backward, ZeRO-1/2 all-gather the fp32 parameters after the update (exposed), ZeRO-2
// reduce-scatters in every micro-step's backward (only a shard is kept), ZeRO-3 also gathers
// the working parameters before every micro-step's forward and backward.
// Why: issue #16: see what fits before asking for nodes; its memory model is checked against
// the measured peaks of CPU runs (tests/e2e/plan_test.sh).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "launch/cost_model.h"
#include "parallel/models/model.h"

namespace mt::launch {

enum class PlanRecompute { None, Selective, Full };
const char* recompute_name(PlanRecompute r);
PlanRecompute parse_plan_recompute(const std::string& s);  // throws naming train.recompute

struct Layout {
  int dp = 1, tp = 1, zero = 0;
  bool sp = false;
  PlanRecompute recompute = PlanRecompute::None;
  int micro_batch = 1;
  int pp = 1;  // pipeline stages: dp x tp x pp ranks (last: aggregate initialisers of pp-1 layouts stay valid)
  std::string describe() const;  // "dp 4 x tp 2, zero 1, sp, recompute full, micro_batch 2" ("dp 2 x tp 2 x pp 2, ...")
};

// Bytes per rank, by the trainer's categories (params = master + working copy).
struct MemoryPrediction {
  double master = 0, working = 0, grads = 0, optimizer = 0, activations = 0, comm = 0, other = 0;
  double params() const { return master + working; }
  double total() const { return master + working + grads + optimizer + activations + comm + other; }
};

struct TimePrediction {
  double compute_s = 0;      // forward + backward (+ recomputation) at the assumed MFU
  double tp_comm_s = 0;      // tensor-parallel collectives (all exposed)
  double dp_comm_s = 0;      // data-parallel traffic in all (gradients, ZeRO gathers)
  double dp_exposed_s = 0;   // the part of it not hidden behind compute
  double pp_comm_s = 0;      // pipeline point-to-point messages (exposed; compute_s and tp_comm_s hold the bubble)
  double bubble = 0;         // the schedule's idle fraction (pp > 1)
  double step_s() const { return compute_s + tp_comm_s + dp_exposed_s + pp_comm_s; }
};

struct LayoutPlan {
  Layout layout;
  MemoryPrediction mem;
  TimePrediction time;
  bool fits = false;
  std::string invalid;  // why the layout cannot run ("" = valid)
};

// The model's view the planner needs: parameter counts per unit at a tp size.
struct ParamUnits {
  int64_t flat = 0;     // P: flat local length padded to GradSync::flat_alignment(dp)
  int64_t blk_max = 0;  // U_blk
  int64_t outer = 0;    // U_out
};
// pp > 1: those of the largest pipeline stage of the layout (plan_stage_units).
ParamUnits param_units(const parallel::Architecture& arch, int tp, int dp, int zero = 0);
ParamUnits plan_stage_units(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l);
// The virtual stages' blocks of a layout (split_layers; parallel.pp_layers where l.pp is the configured pp).
std::vector<std::pair<int, int>> plan_vstages(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l);
// The micro-batch chunks pipeline stage 0 holds in flight at most (pp 1: 1).
int plan_pipeline_slots(const core::Config& cfg, const Layout& l);

// Whether the config trains with a separate bf16 working copy (train.precision; auto = bf16
// on CUDA) and on a GPU (train.device != cpu).
bool plan_bf16(const core::Config& cfg);
bool plan_cuda(const core::Config& cfg);

// The activations of a layout: the architecture's own model (Architecture::activation_bytes,
// which a test keeps equal to what its Model allocates) for the recompute mode and sp.
double plan_activation_bytes(const parallel::Architecture& arch, int B, int T, int tp, int elem_bytes,
                             int att_state_per_row, PlanRecompute recompute, bool sp);

MemoryPrediction predict_memory(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l);
TimePrediction predict_time(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l,
                            const ClusterAssumption& cluster, int gpus_per_node);
// "" if the layout can run on `gpus` GPUs of `gpus_per_node` per node, else why not (naming keys).
std::string layout_violation(const core::Config& cfg, const parallel::Architecture& arch, const Layout& l, int gpus,
                             int gpus_per_node);
// Every valid layout of `gpus` GPUs, in a fixed order (tp, zero, sp, recompute, micro_batch).
std::vector<Layout> enumerate_layouts(const core::Config& cfg, const parallel::Architecture& arch, int gpus,
                                      int gpus_per_node);
// The layout the config asks for on `gpus` GPUs (dp = parallel.dp, or gpus / (parallel.tp x parallel.pp)).
Layout configured_layout(const core::Config& cfg, int gpus);

struct PlanArgs {
  std::string config;
  std::vector<std::string> overrides;
  int gpus = 0;
  std::string gpu_mem;
  int nodes = 1;
  bool json = false;
  int top = 25;  // table rows (0 = all)
};
// Prints the plan; 0 when a layout fits, 2 when none does, errors throw (naming the flag/key).
int cmd_plan(const PlanArgs& a);

}  // namespace mt::launch
