// What: the GPT-2 model (pre-LayerNorm blocks, learned positions, 4x GELU MLP, final
// LayerNorm, output projection tied to the token embedding) with explicit forward and
// backward per layer, written for a tensor-parallel group of size tp (tp = 1 is the plain
// model). Megatron-style partition of a layer's weights across the tp ranks of a group, for
// a linear Y = X A (A = W^T, W stored (out, in) like nn.Linear):
//   column-parallel  A = [A_1 .. A_tp] split by columns (W by rows): rank r computes
//                    Y_r = X A_r from the replicated X. Forward: identity on X (no
//                    communication). Backward: dX = sum_r dY_r A_r^T, an all-reduce.
//   row-parallel     A = [A_1; ..; A_tp] split by rows (W by columns), X = [X_1 .. X_tp]
//                    split by columns: Y = sum_r X_r A_r. Forward: all-reduce of Y (then the
//                    replicated bias). Backward: identity (dY is replicated; dX_r = dY A_r^T).
//   A column-parallel layer feeding a row-parallel one needs no communication between them,
//   so each block costs one all-reduce forward and one backward:
//   attention  QKV   column-parallel: rank r holds heads [r*NH/tp, (r+1)*NH/tp) of q, k, v
//              proj  row-parallel
//   MLP        fc    column-parallel (GELU is elementwise, so it runs on the local slice)
//              proj  row-parallel
//   embedding  vocab-parallel rows: E = sum_r onehot(x)_r E_r (an all-reduce); the tied
//              output projection gives each rank only its logits slice Z_r = H E_r^T; the
//              loss logsumexp(Z) - Z[target] uses a max all-reduce, a sum-of-exp all-reduce
//              and a target-logit all-reduce, and never materialises (tokens x vocab) on one
//              rank; dH = sum_r dZ_r E_r is an all-reduce.
//   LayerNorms, position embedding, row-parallel biases: replicated; their gradients are
//   computed from replicated (all-reduced) values, so they agree on every tp rank.
// Why: one model file serves every layout; all parameters live in ONE flat buffer (and all
// gradients in another) so data-parallel buckets, ZeRO shards and checkpoints are ranges.
// Devices: every op is a kernels::Ops call, so the same code runs on the CPU (reference
// kernels, fp32) and on CUDA. All buffers live on ops.device(). With mixed precision the
// fp32 flat parameter buffer is the MASTER copy (the optimizer updates it) and a second flat
// buffer in the working dtype (bf16) is what the forward reads; activations and their
// gradients are in the working dtype too; parameter gradients stay fp32. With fp32 the
// working copy IS the master buffer. Token ids arrive in host memory and are staged through
// host staging memory (page-locked on CUDA) and copied asynchronously on the device stream.
// Initialisation draws each element from a counter-based RNG at its index in the FULL
// tensor, so the same seed gives the same model whatever tp is.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "core/tensor.h"
#include "kernels/ops.h"

namespace mt::parallel {

class Communicator;

// How a parameter is partitioned across the tensor-parallel group.
enum class TpSplit {
  Replicated,  // every tp rank holds the whole tensor
  Rows,        // (OC, C) weight or (OC) bias split along OC: column-parallel linear
  Cols,        // (OC, C) weight split along C: row-parallel linear
  Qkv,         // (3C, C) / (3C): q, k and v row blocks each split by heads
  Vocab,       // (Vp, C) embedding split by vocabulary rows
};

struct ParamInfo {
  std::string name;            // "h3.attn.qkv.w"
  core::Shape full_shape;      // shape in the unpartitioned model (vocab padded)
  core::Shape local_shape;     // this rank's slice
  TpSplit split = TpSplit::Replicated;
  bool weight_decay = false;   // matrices decay, biases and norms do not
  float init_std = 0.0f;       // 0 -> constant init_value
  float init_value = 0.0f;
  int64_t offset = 0;          // element offset in the flat parameter/gradient buffers
  int64_t numel = 0;           // local elements
  int layer = -1;              // block index; -1 embeddings, n_layer for the final norm
};

// Model sizes, global and local to a tp rank.
struct GptDims {
  int L = 0, NH = 0, C = 0, V = 0, Vp = 0, maxT = 0, HS = 0;
  int tp = 1, tp_rank = 0;
  int NHl = 0;       // local heads
  int Cl = 0;        // local attention width = NHl * HS
  int Fl = 0;        // local MLP width = 4C / tp
  int Vl = 0;        // local vocab rows = Vp / tp
  int v_start = 0;   // first global vocab row on this rank
  int v_valid = 0;   // local rows that are real tokens (< V)
};
GptDims make_gpt_dims(const core::ModelConfig& cfg, int tp, int tp_rank);
constexpr int kVocabAlign = 64;  // Vp = V rounded up to a multiple of kVocabAlign * tp

// The parameters of a tp rank's slice, in flat-buffer order with offsets; *total_out gets
// the flat buffer length padded to a multiple of flat_align. (Used by Gpt and by checkpoint
// resharding, which needs the layout of other tp sizes without allocating them.)
std::vector<ParamInfo> gpt_param_layout(const core::ModelConfig& cfg, const GptDims& d, int64_t flat_align,
                                        int64_t* total_out);
// Position (row, col) in the FULL tensor of element (r, c) of parameter p's local slice
// (1-D parameters use col 0).
std::pair<int64_t, int64_t> full_position(const ParamInfo& p, const GptDims& d, int64_t r, int64_t c);

// Called during backward with the index of a parameter whose gradient is final.
using GradReadyFn = std::function<void(int param_index)>;

class Gpt {
 public:
  // tp_comm may be null when tp == 1; it must work on ops' device memory (for CUDA a
  // device communicator, parallel::make_device_communicator). The flat buffers are padded
  // with zeros to a multiple of flat_align elements (data-parallel buckets need multiples of
  // the dp size). ops: the kernels (and thereby the device and working dtype); null = the
  // CPU reference kernels. Not owned; must outlive the model.
  Gpt(const core::ModelConfig& cfg, int tp, int tp_rank, Communicator* tp_comm, int64_t flat_align = 1,
      kernels::Ops* ops = nullptr);
  ~Gpt();

  const GptDims& dims() const { return d_; }
  const std::vector<ParamInfo>& params_info() const { return info_; }
  kernels::Ops& ops() const { return *ops_; }
  core::Device& device() const { return ops_->device(); }
  core::Tensor& params() { return params_; }  // flat fp32 master parameters (device memory)
  core::Tensor& grads() { return grads_; }    // flat fp32 gradients, same layout
  float* param(int i) { return params_.f32() + info_[i].offset; }
  float* grad(int i) { return grads_.f32() + info_[i].offset; }
  // The working copy in the working dtype when it is a separate buffer (bf16), else null
  // (fp32: the forward reads the master buffer itself).
  void* working_copy() { return work_is_master_ ? nullptr : work_.raw(); }
  // Re-derives the working copy from the master parameters (after the master changed other
  // than through an optimizer that writes both: init, checkpoint load, ZeRO all-gather).
  // No-op when they are the same buffer.
  void refresh_working_params();
  int64_t num_local_params() const { return params_.numel(); }
  int64_t num_full_params() const;   // the unpartitioned model, unpadded vocab

  // GPT-2 init: N(0, init_std); residual projections N(0, init_std / sqrt(2 L)); norms 1, 0.
  void init_weights(uint64_t seed);

  // inputs, targets: (B, T) token ids; targets may be null (no loss); a target < 0 marks a
  // position without loss (padding). doc_ids: (B, T) or null: attention stays within
  // positions of the same document id (packed documents). Returns the mean loss over the
  // positions with a target (0 if none). Keeps activations for backward.
  double forward(const int32_t* inputs, const int32_t* targets, int B, int T,
                 const int32_t* doc_ids = nullptr);
  // Positions with a target (>= 0) in the last forward.
  int64_t loss_tokens() const { return loss_tokens_; }
  // Accumulates gradients for the last forward into grads(); each token's loss is weighted by
  // loss_weight (e.g. 1 / tokens in the global batch). Calls on_ready(i) once a parameter's
  // gradient is final for this backward (in reverse order of the forward).
  void backward(float loss_weight, const GradReadyFn& on_ready = {});
  void zero_grads() { grads_.zero_(); }

  // Per-token losses of the last forward with targets, in host memory: (B*T).
  const float* losses() const { return losses_host_.data(); }

  // Model FLOPs per token for forward+backward at context T: 6 * matmul params + attention.
  double flops_per_token(int T) const;
  size_t activation_bytes() const;
  size_t working_copy_bytes() const { return work_is_master_ ? 0 : work_.nbytes(); }

 private:
  struct LayerActs {
    core::Tensor ln1, ln1_mean, ln1_rstd, qkv, att, atty, res2, ln2, ln2_mean, ln2_rstd, fch,
        fch_gelu, res3;
  };
  enum P { LN1W, LN1B, QKVW, QKVB, ATTPW, ATTPB, LN2W, LN2B, FCW, FCB, FCPW, FCPB, kPerLayer };
  int pidx(int layer, int p) const { return 2 + layer * kPerLayer + p; }
  int wte_idx() const { return 0; }
  int wpe_idx() const { return 1; }
  int lnfw_idx() const { return 2 + d_.L * kPerLayer; }
  int lnfb_idx() const { return lnfw_idx() + 1; }

  void ensure_acts(int B, int T);
  // Copies the host token ids into the device buffers (through the staging memory).
  void stage_tokens(const int32_t* inputs, const int32_t* targets, const int32_t* doc_ids, int N);
  // Parameter i in the working dtype (what the forward reads).
  const void* wparam(int i) const;
  // all-reduce over the tp group (no-op at tp = 1): working-dtype activations, fp32 pieces.
  void tp_sum(void* x, int64_t n);
  void tp_sum_f32(float* x, int64_t n);
  void tp_max_f32(float* x, int64_t n);
  void sync_tp();  // tp_comm_->synchronize() before a host wait on the device (no-op at tp = 1)
  void init_param(const ParamInfo& p, float* dst, uint64_t seed) const;

  core::ModelConfig cfg_;
  GptDims d_;
  Communicator* tp_comm_;
  kernels::Ops* ops_;
  core::DType wdt_;  // working dtype
  std::vector<ParamInfo> info_;
  core::Tensor params_, grads_, work_;
  bool work_is_master_ = true;

  // activations for the current (B, T)
  int B_ = 0, T_ = 0;
  std::vector<int32_t> targets_;       // host copy (loss weights of the backward)
  bool has_doc_ids_ = false;           // the last forward had doc_ids (backward needs them)
  core::Tensor tokens_d_, targets_d_, doc_ids_d_, dloss_d_;  // device: (N) each
  core::HostBuffer stage_;             // host staging: inputs | targets | doc_ids | dloss
  std::unique_ptr<core::Event> stage_free_;  // recorded after the copies out of stage_
  std::vector<float> losses_host_;
  int64_t loss_tokens_ = 0;
  core::Tensor encoded_;
  std::vector<LayerActs> acts_;
  core::Tensor lnf_, lnf_mean_, lnf_rstd_, logits_, rowmax_, sumexp_, tgt_logit_, losses_;
  // backward scratch, reused across layers
  core::Tensor dres_, dln_, dproj_in_, dfch_, dfch_gelu_, dqkv_, dlogits_;
};

}  // namespace mt::parallel
