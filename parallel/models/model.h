// What: the model plug-in interface. Two halves:
//   Architecture  what a model IS, from its config alone, without memory: the named parameter
//                 list (full shape, Partition, init rule, weight decay), the tensor-parallel
//                 sizes it allows (with the error naming the key), FLOPs per token, its
//                 tensor-parallel traffic per step (the `scale` cost model), the data
//                 scheduler's cost of a sample, the shape-fixing config values a checkpoint
//                 records, and build(): the Model on one rank.
//   Model         one rank's slice: the flat parameter / gradient buffers (and the bf16
//                 working copy), layout-independent init, forward to a loss, backward with a
//                 per-parameter "gradient ready" hook, activation bytes.
// The trainer, gradient sync, optimizer, checkpoints (and their resharding), the memory
// report, `bench` and `scale` use only these, so they do not know which architecture runs.
// models/registry.cc is the one file that knows the list (model.arch); tests may register
// their own. Architectures compose the reusable layers of models/blocks.h.
// Why: adding an architecture (or pipeline stages) used to mean editing ~25 files.
// Layout: all parameters of a rank live in ONE flat fp32 buffer (gradients in another, same
// layout), in the order of param_specs(), padded with zeros to a multiple of flat_align, so
// data-parallel buckets, ZeRO shards and checkpoints are ranges of it. Parameter i's slice is
// Partition::local_shape of its full shape. Init draws each element from a counter-based
// RNG at its index in the FULL tensor (vocab padding included), so a seed gives the same
// model at every tensor-parallel size.
// Devices: buffers live on ops.device(); every op is a kernels::Ops call. With mixed
// precision the fp32 flat buffer is the MASTER copy and a second flat buffer in the working
// dtype (bf16) is what the forward reads; with fp32 they are one buffer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "parallel/mesh.h"
#include "parallel/models/partition.h"
#include "parallel/models/tp_group.h"

namespace mt::parallel {

class Communicator;
class Model;

// One parameter tensor of the full model (independent of the parallel layout).
struct ParamSpec {
  std::string name;           // "h3.attn.qkv.w"
  core::Shape full_shape;     // unpartitioned (vocabularies unpadded)
  Partition partition;        // how tp ranks split it
  bool weight_decay = false;  // matrices decay, biases and norms do not
  float init_std = 0.0f;      // > 0: N(0, init_std); 0: the constant init_value
  float init_value = 0.0f;
  int layer = -1;             // block index; -1 before the first block, n_layer after the last
  // Also read by the head (an output projection tied to this embedding): a pipeline's last
  // stage holds a copy, whose gradient is summed with the first stage's (StageLayers).
  bool tied_head = false;
};

// Pipeline parallelism: the layers one rank's Model holds. `chunks` are contiguous block
// ranges [begin, end) in pipeline order (interleaved schedules: one per virtual stage of the
// rank, pp apart); the rank with the first virtual stage holds the embedding (embed), the one
// with the last the final norm and head (head), and a head tied to the embedding holds a copy
// of it. Default: every layer in one chunk, embedding and head (no pipeline).
struct StageLayers {
  std::vector<std::pair<int, int>> chunks;  // empty: all blocks, one chunk
  bool embed = true, head = true;
  // Whether a rank with these layers holds the parameter.
  bool holds(const ParamSpec& s, int n_layer) const;
  bool whole() const { return chunks.empty() && embed && head; }
  // The chunk (index into chunks) holding block `layer`, or -1.
  int chunk_of(int layer) const;
};

// The specs a rank with stage layers `st` holds, in param_specs() order (layout_params of
// them is its flat layout: each pipeline stage has its own, shorter flat buffer).
std::vector<ParamSpec> stage_specs(const std::vector<ParamSpec>& specs, const StageLayers& st, int n_layer);

// A parameter on one tp rank: its spec plus where its slice sits in the flat buffers.
struct ParamInfo : ParamSpec {
  core::Shape local_shape;  // Partition::local_shape(full_shape, tp)
  int64_t offset = 0;       // element offset in the flat parameter/gradient buffers
  int64_t numel = 0;        // local elements
};

// The slices of every parameter at tensor-parallel size tp (the same on every rank), with
// offsets; *total_out gets the flat length padded to a multiple of flat_align. Used by Model
// and by checkpoint resharding (the layout of another tp size without allocating it).
// align_units (ZeRO-2/3): every layer's parameters (a ParamUnit) also start at a multiple of
// flat_align, so each unit is a whole number of equal per-rank pieces (zeros in between).
std::vector<ParamInfo> layout_params(const std::vector<ParamSpec>& specs, int tp, int64_t flat_align,
                                     int64_t* total_out, bool align_units = false);

// The parameters of one ParamSpec::layer value: params [first, end_param), the flat range
// [begin, end) (up to the next unit's begin; the last unit ends at the padded total). Blocks
// (0 <= layer < n_layer) are what ZeRO-3 gathers one at a time; the others (embeddings, final
// norm, head: layer -1 and n_layer) stay gathered for the whole step.
struct ParamUnit {
  int layer = 0;
  int first = 0, end_param = 0;
  int64_t begin = 0, end = 0;
  bool block = false;
  int64_t size() const { return end - begin; }
};
// Consecutive parameters of equal layer form a unit (param_specs lists them layer by layer).
std::vector<ParamUnit> param_units(const std::vector<ParamInfo>& params, int64_t total, int n_layer);

// Which half of a step enters a block (ParamResidence::enter_block).
enum class Pass { Forward, Backward };

// Where a Model's parameters and gradients live when they are not whole flat buffers of its
// own (ZeRO-2: gradients; ZeRO-3: parameters too; parallel/sharded_sync.h implements it):
// the Model calls enter_block before each block's forward, and before its backward (and
// recomputation); the residence binds the unit's buffers (Model::bind_unit) before returning.
class ParamResidence {
 public:
  virtual ~ParamResidence() = default;
  virtual void enter_block(int layer, Pass pass) = 0;
  // The master parameters from a host copy of the whole flat buffer (this rank's tp slice):
  // keeps the elements it stores, refreshes what the forward reads.
  virtual void load_master(const float* host_flat) = 0;
  // The elements [flat_begin, flat_begin + n) of the flat buffer from host memory, of which it
  // keeps those it stores; the working copy is NOT refreshed (call refresh_working_params).
  virtual void load_master_range(int64_t flat_begin, const float* host, int64_t n) = 0;
  virtual void zero_grads() = 0;
  virtual void refresh_working_params() = 0;
};

// Knowledge distillation (train.distill): a forward with a head mixes its cross-entropy with
// the KL divergence from a teacher's temperature-softened distribution (kernels/cpu/distill.cc):
// loss = (1 - alpha) CE + alpha T^2 KL(softmax(t/T) || softmax(s/T)), per token with a target.
// teacher_logits: the teacher's head_logits_any() of the SAME micro-batch (this rank's vocabulary
// slice, (B*T, Vl) in the working dtype, device memory), valid until the student's backward.
struct DistillTarget {
  const void* teacher_logits = nullptr;
  float alpha = 0.5f, temperature = 1.0f;
};

// Called during backward with the index of a parameter whose gradient is final.
using GradReadyFn = std::function<void(int param_index)>;

// Activation recomputation (train.recompute): None keeps every block's activations for
// backward; Full keeps only each block's input (the residual stream entering it) and re-runs
// the block's forward, its tp collectives included, just before its backward, so the blocks'
// internal activations need one block's worth of buffers, shared by all layers. Selective
// (Megatron's) keeps the cheap-to-store tensors (norm outputs and statistics, qkv, attention
// output, residuals, the MLP's first projection) and drops the expensive-to-store,
// cheap-to-recompute ones: the attention state (CPU: the T x T probabilities) and the MLP
// activation (GELU / SwiGLU output), one buffer of each shared by all layers, re-derived from
// the kept qkv and projection just before the block's backward (local kernels, no tp
// collective). Same kernels on the same inputs: losses and gradients are bitwise those of None.
enum class Recompute { None, Full, Selective };
// "none" | "full" | "selective" (train.recompute); throws naming the key on anything else.
Recompute parse_recompute(const std::string& s);

// Where a Model is built: its tp group (comm may be null at tp 1; for CUDA a device
// communicator, make_device_communicator), the flat-buffer alignment (data-parallel buckets
// need multiples of the dp size), the kernels (null = the CPU reference kernels; not owned).
struct ModelContext {
  int tp = 1, tp_rank = 0;
  Communicator* tp_comm = nullptr;
  int64_t flat_align = 1;
  kernels::Ops* ops = nullptr;
  Recompute recompute = Recompute::None;
  // ZeRO-2/3 (parallel/sharded_sync.h): units aligned to flat_align; the model allocates no
  // gradient buffer (own_grads false) and, ZeRO-3, no parameter buffers (own_params false):
  // a ParamResidence binds them (set_residence) before the first forward.
  bool align_units = false;
  bool own_params = true, own_grads = true;
  // Sequence parallelism (parallel.sp, tp > 1): the residual stream, norms and their outputs
  // hold this rank's N/tp contiguous token rows (rows [rank N/tp, (rank + 1) N/tp) of the
  // (N, C) row-major activations); all-gather before a column-parallel linear and
  // reduce-scatter after a row-parallel one replace the all-reduces (decoding keeps all rows).
  bool sp = false;
  // Pipeline parallelism (parallel.pp): the layers this rank holds; its flat buffers hold
  // only their parameters (stage_specs).
  StageLayers stage;
  // A pipeline keeps several micro-batches in flight: each has its own Model (activations)
  // built with share_with = the first, whose parameters, gradients and unit bindings it uses
  // (it allocates none; same context otherwise). Not owned; must outlive this one.
  Model* share_with = nullptr;
};

// Held by shared_ptr (make_architecture): every Model built from it keeps it alive.
class Architecture : public std::enable_shared_from_this<Architecture> {
 public:
  explicit Architecture(core::ModelConfig cfg) : cfg_(std::move(cfg)) {}
  virtual ~Architecture() = default;
  const core::ModelConfig& config() const { return cfg_; }

  virtual std::string name() const = 0;  // its model.arch value
  // "" if tp ranks can split the model, else why not, naming the config key ("parallel.tp = 3
  // does not divide model.n_head = 8 (attention heads are split across the tensor-parallel
  // group)"); and the words for the list of valid choices ("model.n_head = 8").
  virtual std::string tp_violation(int tp) const = 0;
  virtual std::string tp_constraint() const = 0;
  virtual std::vector<ParamSpec> param_specs() const = 0;
  // Model FLOPs per token of forward + backward at context T (MFU's numerator).
  virtual double flops_per_token(int T) const = 0;
  // Tensor-parallel all-reduces of one forward + backward over `tokens` tokens on one tp
  // group, activations of elem_bytes bytes: how many, and their bytes in all.
  struct TpTraffic {
    int64_t all_reduces = 0;
    double bytes = 0;
  };
  virtual TpTraffic tp_traffic(int64_t tokens, int elem_bytes) const = 0;
  // Modelled cost of a sample of t positions, per_token * t + per_token_sq * t^2 (the data
  // scheduler balances replicas with it; units are arbitrary but shared).
  struct SampleCost {
    double per_token = 1.0, per_token_sq = 0.0;
  };
  virtual SampleCost sample_cost() const = 0;
  // The config values that fix the parameter shapes: a checkpoint records them (manifest
  // "model") and a resume refuses others, naming the key.
  virtual std::vector<std::pair<std::string, int64_t>> shape_keys() const = 0;
  // The start-up log's account of the model at tp ("124439808 parameters (12 layers, ...)").
  virtual std::string describe(int tp) const = 0;
  // Bytes of the activations and backward scratch a Model of this architecture holds for a
  // micro-batch of (B, T) on one of tp ranks, working-dtype elements of elem_bytes bytes; the
  // attention state is B x local heads x T x att_state_per_row fp32 values (the CPU kernels
  // keep probabilities: T; CUDA a log-sum-exp: 1). What Model::activation_bytes() reports after
  // such a forward (a test keeps them equal), without building anything: `bench step
  // --dry-run`; with recompute Full or Selective, what a Model built with it holds. 0 = not
  // modelled.
  // With sp (sequence parallelism) the norm and residual activations hold N/tp rows, plus the
  // model's full-row buffers for the gathers.
  virtual double activation_bytes(int B, int T, int tp, int elem_bytes, int att_state_per_row,
                                  Recompute recompute = Recompute::None, bool sp = false) const {
    (void)B, (void)T, (void)tp, (void)elem_bytes, (void)att_state_per_row, (void)recompute, (void)sp;
    return 0;
  }
  // This rank's slice, parameters zero (call Model::init_weights).
  virtual std::unique_ptr<Model> build(const ModelContext& ctx) const = 0;

  // Parameters of the full model (vocabularies unpadded).
  int64_t num_params() const;

 private:
  core::ModelConfig cfg_;
};

// The architecture's rule for the mesh (Mesh::validate).
TpRule tp_rule(const Architecture& arch);

class Model {
 public:
  Model(std::shared_ptr<const Architecture> arch, const ModelContext& ctx);
  virtual ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Architecture& arch() const { return *arch_; }
  const std::vector<ParamInfo>& params_info() const { return info_; }
  // Pipeline: the layers this rank holds, and the local index of parameter `full_index` of
  // the architecture's param_specs() (-1: another stage holds it).
  const StageLayers& stage() const { return stage_layers_; }
  int local_param(int full_index) const { return local_of_full_[static_cast<size_t>(full_index)]; }
  // A further micro-batch's model of a pipeline (ModelContext::share_with): it owns no
  // parameters or gradients; they are the first one's.
  bool shares_params() const { return shared_; }
  kernels::Ops& ops() const { return *ops_; }
  core::Device& device() const { return ops_->device(); }
  const TpGroup& tp() const { return tp_; }
  Recompute recompute() const { return recompute_; }
  bool seq_parallel() const { return sp_; }  // ModelContext::sp
  // True while a training forward/backward of a sequence-parallel model runs (false while
  // decoding): ColumnLinear/RowLinear/VocabEmbedding then leave their tp collective to the
  // model (see blocks.h), and norms report weight gradients of their local rows only.
  bool sp_rows() const { return sp_rows_; }
  // flat fp32 master parameters and gradients (device memory); undefined where a residence
  // holds them (ZeRO-3 parameters, ZeRO-2/3 gradients: own_params / own_grads false)
  core::Tensor& params() { return params_; }
  core::Tensor& grads() { return grads_; }
  bool owns_params() const { return own_params_; }
  bool owns_grads() const { return own_grads_; }
  float* param(int i) { return params_.f32() + info_[i].offset; }  // (owns_params() only)
  // Parameter i's gradient: in the flat buffer, or where the residence bound its unit.
  float* grad(int i) {
    const size_t u = static_cast<size_t>(unit_of_[static_cast<size_t>(i)]);
    MT_CHECK(unit_g_[u] != nullptr, "gradient of parameter {} ({}) written outside its block's backward", i, info_[i].name);
    return unit_g_[u] + (info_[i].offset - units_[u].begin);
  }
  const std::vector<ParamUnit>& units() const { return units_; }
  int unit_of(int param) const { return unit_of_[static_cast<size_t>(param)]; }
  // The residence's binding of unit u: its working-dtype parameters and fp32 gradients at
  // element `begin` of the unit (either may be null: unbound).
  void bind_unit_params(int u, void* working) { unit_w_[static_cast<size_t>(u)] = static_cast<char*>(working); }
  void bind_unit_grads(int u, float* grad) { unit_g_[static_cast<size_t>(u)] = grad; }
  void set_residence(ParamResidence* r) { residence_ = r; }
  ParamResidence* residence() const { return residence_; }
  // Before block `layer`'s forward / backward (architectures call it; a no-op without a residence).
  void enter_block(int layer, Pass pass) {
    if (residence_) residence_->enter_block(layer, pass);
  }
  // The master parameters from a host copy of the whole flat buffer (num_local_params()), then
  // the working copy refreshed: init, checkpoint and Hugging Face loads.
  void load_master(const float* host_flat);
  // The working copy in the working dtype when it is a separate buffer (bf16), else null
  // (fp32: the forward reads the master buffer itself).
  void* working_copy() { return work_is_master_ ? nullptr : work_.raw(); }
  // Re-derives the working copy from the master parameters (after the master changed other
  // than through an optimizer that writes both: init, checkpoint load, ZeRO all-gather).
  void refresh_working_params();
  int64_t num_local_params() const { return total_; }  // flat length, padding included
  int64_t num_full_params() const { return arch_->num_params(); }
  size_t working_copy_bytes() const { return work_is_master_ || !work_.defined() ? 0 : work_.nbytes(); }
  double flops_per_token(int T) const { return arch_->flops_per_token(T); }
  core::DType working_dtype() const { return wdt_; }
  // Parameter i in the working dtype (what the forward reads).
  const void* wparam(int i) const;

  // Gradients of replicated units (k/v heads shared by several tp ranks, Partition::rows with
  // units): each holder computes a partial sum. Call begin_replicated_grad(i) before the
  // backward op that accumulates parameter i's gradient (the holders other than the first
  // zero those rows: the first keeps what earlier micro-batches accumulated), and
  // sum_replicated_grad(i) after it: the rows are summed over the tp group, so every holder
  // has the accumulated full gradient. No-ops for other parameters. ColumnLinear::backward
  // does both around its weight gradient, before reporting it ready.
  void begin_replicated_grad(int i);
  void sum_replicated_grad(int i);

  // Every parameter from its spec: N(0, std) at its index in the full tensor, or constant.
  void init_weights(uint64_t seed);
  void zero_grads() {
    if (own_grads_) grads_.zero_();
    else if (residence_) residence_->zero_grads();
  }

  // inputs, targets: (B, T) token ids in host memory; targets may be null (no loss); a
  // target < 0 marks a position without loss (padding). doc_ids: (B, T) or null: attention
  // stays within positions of the same document id (packed documents). Returns the mean loss
  // over the positions with a target (0 if none). Keeps activations for backward.
  virtual double forward(const int32_t* inputs, const int32_t* targets, int B, int T,
                         const int32_t* doc_ids = nullptr) = 0;
  // Accumulates gradients for the last forward into grads(); each token's loss is weighted
  // by loss_weight (e.g. 1 / tokens in the global batch). Calls on_ready(i) once parameter
  // i's gradient is final for this backward.
  virtual void backward(float loss_weight, const GradReadyFn& on_ready = {}) = 0;
  virtual size_t activation_bytes() const = 0;

  // ---- Pipeline stages (ModelContext::stage). A chunk is one of this rank's virtual stages
  // (StageLayers::chunks; without a pipeline one chunk holds everything, and forward() /
  // backward() are forward_chunk(0) / backward_chunk(0)). Between chunks of consecutive
  // virtual stages flows the residual stream: (R, C) in the working dtype, R = B*T rows (B*T/tp
  // with sequence parallelism), stream_numel(B, T) elements.
  int num_chunks() const { return stage().chunks.empty() ? 1 : static_cast<int>(stage().chunks.size()); }
  // Blocks [first, second) of chunk c.
  std::pair<int, int> chunk_layers(int c) const {
    return stage().chunks.empty() ? std::pair<int, int>{0, cfg_.n_layer} : stage().chunks[static_cast<size_t>(c)];
  }
  bool chunk_embeds(int c) const { return c == 0 && stage().embed; }                  // takes token ids
  bool chunk_has_head(int c) const { return c == num_chunks() - 1 && stage().head; }  // computes the loss
  int64_t stream_numel(int B, int T) const;
  // Where chunk c (not embedding) receives its input before forward_chunk(c) of a (B, T)
  // micro-batch (allocates the activations for (B, T)).
  virtual void* chunk_input(int c, int B, int T);
  // Runs chunk c's layers on a (B, T) micro-batch: from the token ids (chunk_embeds) or
  // chunk_input(c), to the loss (chunk_has_head: returns the mean loss over the positions with
  // a target, as forward()) or chunk_output(c) (returns 0). Every chunk gets the micro-batch's
  // token ids, targets and doc ids; chunk 0 stages what the rank needs (positions and
  // documents for attention in every block), so the chunks of one micro-batch run in order 0,
  // 1, ... on one Model, and its backwards in the reverse order.
  virtual double forward_chunk(int c, const int32_t* inputs, const int32_t* targets, int B, int T,
                               const int32_t* doc_ids);
  virtual const void* chunk_output(int c) const;
  // Where the gradient of chunk c's output is received (not the head's) before backward_chunk(c).
  virtual void* chunk_output_grad(int c);
  // Accumulates chunk c's gradients (as backward(), for its layers); after it the gradient of
  // its input is at chunk_input_grad(c) (not the embedding chunk).
  virtual void backward_chunk(int c, float loss_weight, const GradReadyFn& on_ready = {});
  virtual const void* chunk_input_grad(int c) const;

  // ---- Knowledge distillation (DistillTarget). While set, forward() with targets returns the
  // mixed loss and backward() its gradient; clear it for plain cross-entropy (eval).
  void set_distill(const DistillTarget& d) { distill_ = d, distill_on_ = true; }
  void clear_distill() { distill_on_ = false; }
  const DistillTarget* distill() const { return distill_on_ ? &distill_ : nullptr; }
  // After a distilled forward: the sums over the positions with a target of the plain
  // cross-entropy and of the KL divergence (0 after a plain forward).
  double distill_ce_sum() const { return kd_ce_sum_; }
  double distill_kl_sum() const { return kd_kl_sum_; }
  // The head's logits of the last forward (this rank's vocabulary rows: (B*T, head_vocab_rows())
  // in the working dtype, device memory; null if the rank has no head or the architecture does
  // not expose them), with or without targets: what a teacher hands its student. (head_logits()
  // below is the eval accuracy's view: only after a forward with targets, with its vocab slice.)
  virtual const void* head_logits_any() const { return nullptr; }
  virtual int head_vocab_rows() const { return 0; }
  // Called by the head's loss (blocks.h VocabCrossEntropy) of a distilled forward: the device
  // per-token cross-entropy and KL, which finish_losses sums over the positions with a target.
  void note_distill_parts(const float* ce_dev, const float* kl_dev) { kd_ce_dev_ = ce_dev, kd_kl_dev_ = kl_dev; }

  // Positions with a target (>= 0) in the last forward, and their losses (host, (B*T); 0
  // where there is no target).
  int64_t loss_tokens() const { return loss_tokens_; }
  const float* losses() const { return losses_host_.data(); }
  // The last forward's targets (host, (B*T); empty when it had none).
  const std::vector<int32_t>& last_targets() const { return targets_; }
  // The head's logits of the last forward with targets on this rank (the head's chunk ran):
  // device, (N, Vl) rows in the working dtype, columns [0, v_valid) are vocabulary ids
  // v_start + j; data null otherwise (accuracy.h reads them).
  struct HeadLogits {
    const void* data = nullptr;
    int64_t N = 0;
    int Vl = 0, v_start = 0, v_valid = 0;
  };
  virtual HeadLogits head_logits() const { return {}; }

  // ---- Inference: incremental (KV-cached) decoding. Collective over the tp group: every tp
  // rank calls each function with the same arguments. Architectures without it throw
  // "model.arch X does not support incremental decoding".
  // Allocates the key/value cache for B rows of up to max_len positions (1 <= max_len <=
  // model.seq_len): per layer k and v of this rank's kv heads, (B, NKV_local, max_len, HS) in
  // the working dtype (kv_cache_bytes()), and empties it (decode_len() = 0). Frees the
  // training activations (a later forward() allocates them again).
  virtual void begin_decode(int B, int max_len);
  // tokens: (B, n_new) host token ids, row b's tokens at positions [len, len + n_new) where len
  // = decode_len() (every row has the same length). Runs the forward of these positions only
  // (prefill when n_new > 1, then one per step) against the cached keys and values, appends
  // theirs, and advances decode_len() by n_new; keeps nothing for backward.
  // logits_out: host fp32, the FULL unpadded vocabulary gathered over the tp group (the same
  // values on every tp rank): (B, V) of each row's last new position, or with all_positions
  // (B, n_new, V). Numerically the training forward's logits (the same kernels, up to the
  // summation order of the matrix products). Throws when len + n_new passes the cache's
  // max_len or model.seq_len, or B differs from begin_decode's.
  virtual void decode(const int32_t* tokens, int B, int n_new, float* logits_out, bool all_positions = false);
  // Frees the cache.
  virtual void end_decode();
  int decode_len() const { return decode_len_; }
  int decode_max_len() const { return decode_max_len_; }
  int decode_batch() const { return decode_B_; }
  size_t kv_cache_bytes() const;  // this rank's cache, all layers, k and v

 protected:
  // Token ids (and targets, doc ids) of a forward of (B, T) to device buffers, through host
  // staging memory; checks them against the vocabulary. Returns the device pointers.
  struct StagedTokens {
    const int32_t* tokens = nullptr;
    const int32_t* targets = nullptr;    // null when the forward has none
    const int32_t* doc_ids = nullptr;    // null when the forward has none
    const int32_t* positions = nullptr;  // (B, T): t, or restarting at 0 at each document
  };
  // Positions are pos_offset + t (decoding a continuation) when there are no doc_ids.
  StagedTokens stage_tokens(const int32_t* inputs, const int32_t* targets, const int32_t* doc_ids, int B, int T,
                            int vocab, int pos_offset = 0);
  // The device copy of the per-token loss weights of the last forward's targets (weight, 0
  // where there is no target), staged like the tokens.
  const float* stage_loss_weights(float loss_weight);
  // Per-token losses (device, (N) fp32) to the host, zeroed where there is no target;
  // returns their mean over the positions with a target. Sets loss_tokens().
  double finish_losses(const float* losses_dev, const int32_t* targets, int N);
  bool has_targets() const { return !targets_.empty(); }
  // (Re)allocates the token buffers for N positions; queued device work must be done
  // (callers synchronize before replacing activations).
  void ensure_token_buffers(int64_t N);
  // Sequence parallelism: throws, naming the keys, unless tp divides the B*T rows.
  void check_sp_rows(int B, int T) const;

  // Decoding state for the architectures that implement it: begin_decode checks (B,
  // max_len), releases the token buffers and records them; start_decode checks a decode
  // call of n_new positions (naming the cache's max_len and model.seq_len) and returns the
  // first new position; finish_decode advances the length. kv_cache_ holds k, v per layer.
  void set_decode_shape(int B, int max_len);
  // Parameter p's local slice from its init rule into host memory dst (p.numel floats).
  void init_param(const ParamInfo& p, uint64_t seed, float* dst) const;
  int start_decode(int B, int n_new);
  void finish_decode(int n_new) { decode_len_ += n_new; }
  std::vector<core::Tensor> kv_cache_;  // 2 per layer: k, v (B, NKVl, max_len, HS)

  core::ModelConfig cfg_;
  TpGroup tp_;
  Recompute recompute_ = Recompute::None;
  bool sp_ = false;
  bool sp_rows_ = false;  // set by the architectures' forward (sp_) and decode (false)

 private:
  std::shared_ptr<const Architecture> arch_;
  kernels::Ops* ops_;
  core::DType wdt_;
  std::vector<ParamInfo> info_;
  StageLayers stage_layers_;
  std::vector<int> local_of_full_;  // param_specs() index -> info_ index or -1
  int held_ = 0;
  bool shared_ = false;
  int64_t total_ = 0;
  core::Tensor params_, grads_, work_;
  bool own_params_ = true, own_grads_ = true;
  std::vector<ParamUnit> units_;
  std::vector<int> unit_of_;     // param -> unit
  std::vector<char*> unit_w_;    // per unit: working-dtype parameters at its begin
  std::vector<float*> unit_g_;   // per unit: fp32 gradients at its begin
  ParamResidence* residence_ = nullptr;
  core::Tensor replica_scratch_;  // sum_replicated_grad: the replicated blocks, full size
  std::vector<std::vector<Partition::ReplicatedRun>> replica_runs_;  // per parameter, this rank's
  bool work_is_master_ = true;
  // token staging: host staging memory holds inputs | targets | doc_ids | positions (int32) |
  // loss weights (fp32), N each; device copies of each
  core::Tensor tokens_d_, targets_d_, doc_ids_d_, positions_d_, dloss_d_;
  core::HostBuffer stage_;
  std::unique_ptr<core::Event> stage_free_;  // recorded after the copies out of stage_
  int64_t staged_n_ = 0;
  std::vector<int32_t> targets_;  // host copy of the last forward's targets
  std::vector<float> losses_host_;
  int64_t loss_tokens_ = 0;
  int decode_B_ = 0, decode_max_len_ = 0, decode_len_ = 0;
  DistillTarget distill_;
  bool distill_on_ = false;
  const float* kd_ce_dev_ = nullptr;  // set by a distilled forward's loss, consumed by finish_losses
  const float* kd_kl_dev_ = nullptr;
  double kd_ce_sum_ = 0, kd_kl_sum_ = 0;
  std::vector<float> kd_host_;
};

}  // namespace mt::parallel
