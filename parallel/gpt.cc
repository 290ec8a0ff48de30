// What: GPT forward/backward over a tensor-parallel group (see gpt.h for the partition).
// Shapes use N = B*T tokens; suffix l marks a tp rank's local slice (Cl = C/tp, Fl = 4C/tp,
// Vl = Vp/tp). Every kernel is a kernels::Ops call (kernels/ops.h): the CPU reference kernels
// or the CUDA kernels, whichever device the model lives on; `void*` activations are in the
// working dtype, `float*` statistics and gradients in fp32.
#include "parallel/gpt.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "parallel/communicator.h"

namespace mt::parallel {

using core::Shape;
using core::Tensor;

GptDims make_gpt_dims(const core::ModelConfig& cfg, int tp, int tp_rank) {
  GptDims d;
  d.L = cfg.n_layer;
  d.NH = cfg.n_head;
  d.C = cfg.n_embd;
  d.V = cfg.vocab_size;
  d.maxT = cfg.seq_len;
  MT_CHECK(d.C % d.NH == 0, "n_embd {} not divisible by n_head {}", d.C, d.NH);
  MT_CHECK(tp >= 1 && d.NH % tp == 0, "tensor-parallel size {} does not divide n_head {}", tp, d.NH);
  d.HS = d.C / d.NH;
  const int align = kVocabAlign * tp;
  d.Vp = (d.V + align - 1) / align * align;
  d.tp = tp;
  d.tp_rank = tp_rank;
  d.NHl = d.NH / tp;
  d.Cl = d.NHl * d.HS;
  MT_CHECK((4 * d.C) % tp == 0, "tensor-parallel size {} does not divide 4*n_embd {}", tp, 4 * d.C);
  d.Fl = 4 * d.C / tp;
  d.Vl = d.Vp / tp;
  d.v_start = tp_rank * d.Vl;
  d.v_valid = std::max(0, std::min(d.Vl, d.V - d.v_start));
  return d;
}

namespace {
ParamInfo make_param(const std::string& name, core::Shape full, core::Shape local, TpSplit split, bool decay,
                     float std, float value, int layer) {
  ParamInfo p;
  p.name = name;
  p.full_shape = std::move(full);
  p.local_shape = std::move(local);
  p.split = split;
  p.weight_decay = decay;
  p.init_std = std;
  p.init_value = value;
  p.numel = core::shape_numel(p.local_shape);
  p.layer = layer;
  return p;
}
}  // namespace

std::vector<ParamInfo> gpt_param_layout(const core::ModelConfig& cfg, const GptDims& d, int64_t flat_align,
                                        int64_t* total_out) {
  std::vector<ParamInfo> v;
  const int C = d.C, L = d.L;
  const float std = static_cast<float>(cfg.init_std);
  const float proj_std = std / std::sqrt(2.0f * L);
  v.push_back(make_param("wte", {d.Vp, C}, {d.Vl, C}, TpSplit::Vocab, true, std, 0, -1));
  v.push_back(make_param("wpe", {d.maxT, C}, {d.maxT, C}, TpSplit::Replicated, true, std, 0, -1));
  for (int l = 0; l < L; ++l) {
    const std::string h = "h" + std::to_string(l) + ".";
    v.push_back(make_param(h + "ln1.w", {C}, {C}, TpSplit::Replicated, false, 0, 1, l));
    v.push_back(make_param(h + "ln1.b", {C}, {C}, TpSplit::Replicated, false, 0, 0, l));
    v.push_back(make_param(h + "attn.qkv.w", {3 * C, C}, {3 * d.Cl, C}, TpSplit::Qkv, true, std, 0, l));
    v.push_back(make_param(h + "attn.qkv.b", {3 * C}, {3 * d.Cl}, TpSplit::Qkv, false, 0, 0, l));
    v.push_back(make_param(h + "attn.proj.w", {C, C}, {C, d.Cl}, TpSplit::Cols, true, proj_std, 0, l));
    v.push_back(make_param(h + "attn.proj.b", {C}, {C}, TpSplit::Replicated, false, 0, 0, l));
    v.push_back(make_param(h + "ln2.w", {C}, {C}, TpSplit::Replicated, false, 0, 1, l));
    v.push_back(make_param(h + "ln2.b", {C}, {C}, TpSplit::Replicated, false, 0, 0, l));
    v.push_back(make_param(h + "mlp.fc.w", {4 * C, C}, {d.Fl, C}, TpSplit::Rows, true, std, 0, l));
    v.push_back(make_param(h + "mlp.fc.b", {4 * C}, {d.Fl}, TpSplit::Rows, false, 0, 0, l));
    v.push_back(make_param(h + "mlp.proj.w", {C, 4 * C}, {C, d.Fl}, TpSplit::Cols, true, proj_std, 0, l));
    v.push_back(make_param(h + "mlp.proj.b", {C}, {C}, TpSplit::Replicated, false, 0, 0, l));
  }
  v.push_back(make_param("lnf.w", {C}, {C}, TpSplit::Replicated, false, 0, 1, L));
  v.push_back(make_param("lnf.b", {C}, {C}, TpSplit::Replicated, false, 0, 0, L));
  int64_t total = 0;
  for (auto& p : v) {
    p.offset = total;
    total += p.numel;
  }
  if (total_out) *total_out = (total + flat_align - 1) / flat_align * flat_align;
  return v;
}

std::pair<int64_t, int64_t> full_position(const ParamInfo& p, const GptDims& d, int64_t r, int64_t c) {
  const int64_t rows = p.local_shape[0];
  const int64_t cols = p.local_shape.size() > 1 ? p.local_shape[1] : 1;
  switch (p.split) {
    case TpSplit::Replicated: return {r, c};
    case TpSplit::Rows:
    case TpSplit::Vocab: return {d.tp_rank * rows + r, c};
    case TpSplit::Cols: return {r, d.tp_rank * cols + c};
    case TpSplit::Qkv: {
      const int64_t part = rows / 3;
      return {(r / part) * d.C + d.tp_rank * part + r % part, c};
    }
  }
  return {r, c};
}

Gpt::Gpt(const core::ModelConfig& cfg, int tp, int tp_rank, Communicator* tp_comm, int64_t flat_align,
         kernels::Ops* ops)
    : cfg_(cfg), d_(make_gpt_dims(cfg, tp, tp_rank)), tp_comm_(tp_comm), ops_(ops ? ops : &kernels::cpu_ops()) {
  MT_CHECK(tp == 1 || tp_comm != nullptr, "tp = {} needs a tensor-parallel communicator", tp);
  wdt_ = ops_->working_dtype();
  core::Device& dev = ops_->device();
  int64_t total = 0;
  info_ = gpt_param_layout(cfg, d_, flat_align, &total);
  params_ = Tensor::zeros({total}, core::DType::F32, dev);
  grads_ = Tensor::zeros({total}, core::DType::F32, dev);
  work_is_master_ = wdt_ == core::DType::F32;
  work_ = work_is_master_ ? params_ : Tensor::zeros({total}, wdt_, dev);
  stage_free_ = dev.create_event();
}

Gpt::~Gpt() {
  // Queued work may still read the staging memory or the buffers: let it finish first.
  try {
    device().synchronize();
  } catch (...) {
  }
}

int64_t Gpt::num_full_params() const {
  int64_t n = 0;
  for (const auto& p : info_) {
    int64_t full = core::shape_numel(p.full_shape);
    if (p.split == TpSplit::Vocab) full = full / d_.Vp * d_.V;  // padding rows are not parameters
    n += full;
  }
  return n;
}

// Each local element draws normal01(seed, hash(name), index in the FULL tensor).
void Gpt::init_param(const ParamInfo& p, float* dst, uint64_t seed) const {
  if (p.init_std == 0.0f) {
    for (int64_t i = 0; i < p.numel; ++i) dst[i] = p.init_value;
    return;
  }
  const uint64_t stream = core::hash_string(p.name.c_str());
  const int64_t rows = p.local_shape[0];
  const int64_t cols = p.local_shape.size() > 1 ? p.local_shape[1] : 1;
  const int64_t full_cols = p.full_shape.size() > 1 ? p.full_shape[1] : 1;
  const int r = d_.tp_rank;
  switch (p.split) {
    case TpSplit::Replicated:
      core::fill_normal_block(dst, rows, cols, 0, 0, full_cols, p.init_std, seed, stream);
      break;
    case TpSplit::Rows:
    case TpSplit::Vocab:
      core::fill_normal_block(dst, rows, cols, r * rows, 0, full_cols, p.init_std, seed, stream);
      break;
    case TpSplit::Cols:
      core::fill_normal_block(dst, rows, cols, 0, r * cols, full_cols, p.init_std, seed, stream);
      break;
    case TpSplit::Qkv: {
      // local rows [q_l | k_l | v_l], each Cl rows, from full blocks at j*C + r*Cl
      const int64_t part = rows / 3;
      for (int j = 0; j < 3; ++j) {
        core::fill_normal_block(dst + j * part * cols, part, cols, j * d_.C + r * part, 0,
                                full_cols, p.init_std, seed, stream);
      }
      break;
    }
  }
}

void Gpt::init_weights(uint64_t seed) {
  // Host memory first (the RNG runs on the host), then one copy to the device. On the CPU the
  // parameter buffer is host memory already.
  core::Device& dev = device();
  const bool host_params = dev.kind() == core::DeviceKind::CPU;
  std::vector<float> staging(host_params ? 0 : static_cast<size_t>(params_.numel()), 0.0f);
  float* dst = host_params ? params_.f32() : staging.data();
  for (const auto& p : info_) init_param(p, dst + p.offset, seed);
  if (!host_params) dev.copy(params_.raw(), staging.data(), params_.nbytes());
  refresh_working_params();
  grads_.zero_();
}

void Gpt::refresh_working_params() {
  if (!work_is_master_) ops_->cast(work_.raw(), wdt_, params_.raw(), core::DType::F32, params_.numel());
}

const void* Gpt::wparam(int i) const {
  return static_cast<const char*>(work_.raw()) + info_[i].offset * static_cast<int64_t>(core::dtype_size(wdt_));
}

double Gpt::flops_per_token(int T) const {
  // 6 FLOPs per multiply-accumulate weight per token (fwd 2 + bwd 4), counting the tied output
  // projection (V x C) but not the position table; attention scores and mixing add
  // 12 * L * C * T per token (PaLM appendix B, without the causal halving).
  double matmul_params = 0;
  for (const auto& p : info_) {
    if (p.name == "wpe") continue;
    matmul_params += core::shape_numel(p.full_shape);
  }
  matmul_params -= static_cast<double>(d_.Vp - d_.V) * d_.C;
  return 6.0 * matmul_params + 12.0 * d_.L * d_.C * static_cast<double>(T);
}

namespace {
DType comm_dtype(core::DType t) {
  switch (t) {
    case core::DType::F32: return DType::F32;
    case core::DType::BF16: return DType::BF16;
    default: MT_FAIL("no communicator type for {}", core::dtype_name(t));
  }
}
}  // namespace

void Gpt::tp_sum(void* x, int64_t n) {
  if (d_.tp > 1) tp_comm_->all_reduce(x, static_cast<size_t>(n), comm_dtype(wdt_), ReduceOp::Sum);
}
void Gpt::tp_sum_f32(float* x, int64_t n) {
  if (d_.tp > 1) tp_comm_->all_reduce(x, static_cast<size_t>(n), DType::F32, ReduceOp::Sum);
}
void Gpt::tp_max_f32(float* x, int64_t n) {
  if (d_.tp > 1) tp_comm_->all_reduce(x, static_cast<size_t>(n), DType::F32, ReduceOp::Max);
}
// On a device communicator (NCCL) all_reduce() only makes the compute stream wait for the op;
// a host wait on the device (Device::copy, synchronize) behind such an op would block in
// cudaStreamSynchronize forever if a peer died. synchronize() waits for the ops with the
// communicator's deadline and asynchronous-error polling (ncclCommAbort, then an Error), so
// every host wait on the device below is preceded by it. A no-op on host backends.
void Gpt::sync_tp() {
  if (d_.tp > 1) tp_comm_->synchronize();
}

void Gpt::ensure_acts(int B, int T) {
  MT_CHECK(T >= 1 && T <= d_.maxT, "sequence length {} exceeds model.seq_len {}", T, d_.maxT);
  if (B == B_ && T == T_) return;
  core::Device& dev = device();
  sync_tp();
  dev.synchronize();  // queued work may still use the buffers (and staging memory) replaced here
  B_ = B;
  T_ = T;
  const int64_t N = static_cast<int64_t>(B) * T, C = d_.C;
  const core::DType W = wdt_, F = core::DType::F32;
  auto act = [&](const Shape& s) { return Tensor::empty(s, W, dev); };
  auto f32 = [&](const Shape& s) { return Tensor::empty(s, F, dev); };
  encoded_ = act({N, C});
  acts_.assign(d_.L, LayerActs{});
  for (auto& a : acts_) {
    a.ln1 = act({N, C});
    a.ln1_mean = f32({N});
    a.ln1_rstd = f32({N});
    a.qkv = act({N, 3 * d_.Cl});
    a.att = f32({ops_->attention_state_elems(B, T, d_.NHl)});
    a.atty = act({N, d_.Cl});
    a.res2 = act({N, C});
    a.ln2 = act({N, C});
    a.ln2_mean = f32({N});
    a.ln2_rstd = f32({N});
    a.fch = act({N, d_.Fl});
    a.fch_gelu = act({N, d_.Fl});
    a.res3 = act({N, C});
  }
  lnf_ = act({N, C});
  lnf_mean_ = f32({N});
  lnf_rstd_ = f32({N});
  logits_ = act({N, d_.Vl});
  rowmax_ = f32({N});
  sumexp_ = f32({N});
  tgt_logit_ = f32({N});
  losses_ = f32({N});
  dres_ = act({N, C});
  dln_ = act({N, C});
  dproj_in_ = act({N, d_.Cl});
  dfch_ = act({N, d_.Fl});
  dfch_gelu_ = act({N, d_.Fl});
  dqkv_ = act({N, 3 * d_.Cl});
  dlogits_ = act({N, d_.Vl});
  tokens_d_ = Tensor::empty({N}, core::DType::I32, dev);
  targets_d_ = Tensor::empty({N}, core::DType::I32, dev);
  doc_ids_d_ = Tensor::empty({N}, core::DType::I32, dev);
  dloss_d_ = f32({N});
  // staging memory only grows (page-locked allocations are slow; eval alternates shapes)
  const size_t stage_bytes = static_cast<size_t>(4 * N) * sizeof(int32_t);
  if (stage_.bytes() < stage_bytes) stage_ = core::HostBuffer(dev, stage_bytes);
  losses_host_.assign(static_cast<size_t>(N), 0.0f);
}

size_t Gpt::activation_bytes() const {
  size_t b = 0;
  for (const auto& a : acts_) {
    for (const Tensor* t : {&a.ln1, &a.ln1_mean, &a.ln1_rstd, &a.qkv, &a.att, &a.atty, &a.res2, &a.ln2,
                            &a.ln2_mean, &a.ln2_rstd, &a.fch, &a.fch_gelu, &a.res3})
      b += t->nbytes();
  }
  for (const Tensor* t : {&encoded_, &lnf_, &logits_, &dres_, &dln_, &dproj_in_, &dfch_, &dfch_gelu_,
                          &dqkv_, &dlogits_})
    if (t->defined()) b += t->nbytes();
  return b;
}

// The staging memory holds four (N) arrays: inputs | targets | doc_ids (int32) | dloss (fp32).
// Before it is rewritten, the copies queued out of it by the previous call must be done.
void Gpt::stage_tokens(const int32_t* inputs, const int32_t* targets, const int32_t* doc_ids, int N) {
  core::Device& dev = device();
  const size_t bytes = static_cast<size_t>(N) * sizeof(int32_t);
  int32_t* stage = static_cast<int32_t*>(stage_.data());
  stage_free_->synchronize();
  std::memcpy(stage, inputs, bytes);
  dev.copy_async(tokens_d_.raw(), stage, bytes);
  if (targets) {
    std::memcpy(stage + N, targets, bytes);
    dev.copy_async(targets_d_.raw(), stage + N, bytes);
  }
  if (doc_ids) {
    std::memcpy(stage + 2 * N, doc_ids, bytes);
    dev.copy_async(doc_ids_d_.raw(), stage + 2 * N, bytes);
  }
  stage_free_->record();
}

double Gpt::forward(const int32_t* inputs, const int32_t* targets, int B, int T,
                    const int32_t* doc_ids) {
  ensure_acts(B, T);
  const int N = B * T, C = d_.C;
  const int64_t NC = static_cast<int64_t>(N) * C;
  for (int i = 0; i < N; ++i) {
    MT_CHECK(inputs[i] >= 0 && inputs[i] < d_.V, "token id {} at position {} outside vocab [0, {})",
             inputs[i], i, d_.V);
  }
  if (targets) {
    for (int i = 0; i < N; ++i) {
      MT_CHECK(targets[i] >= -1 && targets[i] < d_.V, "target id {} outside vocab [0, {}) (-1 = no loss)",
               targets[i], d_.V);
    }
  }
  stage_tokens(inputs, targets, doc_ids, N);
  has_doc_ids_ = doc_ids != nullptr;
  const int32_t* tokens = static_cast<const int32_t*>(tokens_d_.raw());
  const int32_t* docs = has_doc_ids_ ? static_cast<const int32_t*>(doc_ids_d_.raw()) : nullptr;
  kernels::Ops& k = *ops_;

  // embeddings: x = wte[tokens] (vocab-parallel, summed over tp) + wpe[t]
  void* x = encoded_.raw();
  k.token_embedding_forward(x, tokens, wparam(wte_idx()), N, C, d_.v_start, d_.Vl);
  tp_sum(x, NC);
  k.position_embedding_forward(x, wparam(wpe_idx()), B, T, C);

  for (int l = 0; l < d_.L; ++l) {
    LayerActs& a = acts_[l];
    // attention block: res2 = x + proj(attn(ln1(x)))
    k.layernorm_forward(a.ln1.raw(), a.ln1_mean.f32(), a.ln1_rstd.f32(), x, wparam(pidx(l, LN1W)),
                        wparam(pidx(l, LN1B)), N, C);
    k.matmul_forward(a.qkv.raw(), a.ln1.raw(), wparam(pidx(l, QKVW)), wparam(pidx(l, QKVB)), N, C, 3 * d_.Cl);
    k.attention_forward(a.atty.raw(), a.att.f32(), a.qkv.raw(), docs, B, T, d_.Cl, d_.NHl);
    void* proj = a.res2.raw();  // (N, C) partial projection, then the residual sum in place
    k.matmul_forward(proj, a.atty.raw(), wparam(pidx(l, ATTPW)), nullptr, N, d_.Cl, C);
    tp_sum(proj, NC);
    k.add_bias(proj, wparam(pidx(l, ATTPB)), N, C);
    k.residual_forward(a.res2.raw(), x, proj, NC);
    // MLP block: res3 = res2 + proj(gelu(fc(ln2(res2))))
    k.layernorm_forward(a.ln2.raw(), a.ln2_mean.f32(), a.ln2_rstd.f32(), a.res2.raw(), wparam(pidx(l, LN2W)),
                        wparam(pidx(l, LN2B)), N, C);
    k.matmul_forward(a.fch.raw(), a.ln2.raw(), wparam(pidx(l, FCW)), wparam(pidx(l, FCB)), N, C, d_.Fl);
    k.gelu_forward(a.fch_gelu.raw(), a.fch.raw(), static_cast<int64_t>(N) * d_.Fl);
    void* mlp = a.res3.raw();
    k.matmul_forward(mlp, a.fch_gelu.raw(), wparam(pidx(l, FCPW)), nullptr, N, d_.Fl, C);
    tp_sum(mlp, NC);
    k.add_bias(mlp, wparam(pidx(l, FCPB)), N, C);
    k.residual_forward(a.res3.raw(), a.res2.raw(), mlp, NC);
    x = a.res3.raw();
  }
  k.layernorm_forward(lnf_.raw(), lnf_mean_.f32(), lnf_rstd_.f32(), x, wparam(lnfw_idx()), wparam(lnfb_idx()), N,
                      C);
  // logits for the local vocab slice: (N, Vl) = lnf @ wte_l^T
  k.matmul_forward(logits_.raw(), lnf_.raw(), wparam(wte_idx()), nullptr, N, C, d_.Vl);
  loss_tokens_ = 0;
  if (!targets) {
    targets_.clear();
    return 0.0;
  }
  targets_.assign(targets, targets + N);
  for (int i = 0; i < N; ++i) loss_tokens_ += targets[i] >= 0;
  const int32_t* tgt = static_cast<const int32_t*>(targets_d_.raw());
  // vocab-parallel cross-entropy: global max, global sum of exp, the owner's target logit
  k.xent_row_max(rowmax_.f32(), logits_.raw(), N, d_.Vl, d_.v_valid);
  tp_max_f32(rowmax_.f32(), N);
  k.xent_sum_exp(sumexp_.f32(), logits_.raw(), rowmax_.f32(), N, d_.Vl, d_.v_valid);
  tp_sum_f32(sumexp_.f32(), N);
  k.xent_target_logit(tgt_logit_.f32(), logits_.raw(), tgt, N, d_.Vl, d_.v_start, d_.v_valid);
  tp_sum_f32(tgt_logit_.f32(), N);
  k.xent_loss(losses_.f32(), rowmax_.f32(), sumexp_.f32(), tgt_logit_.f32(), N);
  // the per-token losses to the host (waits for the forward); positions without a target own
  // no logit: their "loss" is meaningless, zero it
  sync_tp();
  device().copy(losses_host_.data(), losses_.raw(), static_cast<size_t>(N) * sizeof(float));
  double sum = 0.0;
  for (int i = 0; i < N; ++i) {
    if (targets[i] < 0) losses_host_[i] = 0.0f;
    sum += losses_host_[i];
  }
  return loss_tokens_ > 0 ? sum / loss_tokens_ : 0.0;
}

void Gpt::backward(float loss_weight, const GradReadyFn& on_ready) {
  MT_CHECK(!targets_.empty(), "backward() needs a forward() with targets");
  const int B = B_, T = T_, N = B * T, C = d_.C;
  const int64_t NC = static_cast<int64_t>(N) * C;
  kernels::Ops& k = *ops_;
  auto ready = [&](int i) {
    if (on_ready) on_ready(i);
  };
  const int32_t* tokens = static_cast<const int32_t*>(tokens_d_.raw());
  const int32_t* tgt = static_cast<const int32_t*>(targets_d_.raw());
  const int32_t* docs = has_doc_ids_ ? static_cast<const int32_t*>(doc_ids_d_.raw()) : nullptr;
  // loss -> logits (local slice); each token's loss weight staged like the token ids
  {
    float* dloss = reinterpret_cast<float*>(static_cast<int32_t*>(stage_.data()) + 3 * N);
    stage_free_->synchronize();
    for (int i = 0; i < N; ++i) dloss[i] = targets_[i] >= 0 ? loss_weight : 0.0f;
    device().copy_async(dloss_d_.raw(), dloss, static_cast<size_t>(N) * sizeof(float));
    stage_free_->record();
  }
  k.xent_backward(dlogits_.raw(), logits_.raw(), rowmax_.f32(), sumexp_.f32(), tgt, dloss_d_.f32(), N, d_.Vl,
                  d_.v_start, d_.v_valid);
  // logits = lnf @ wte_l^T: dlnf is a partial sum over vocab slices
  dln_.zero_();
  k.matmul_backward(dln_.raw(), grad(wte_idx()), nullptr, dlogits_.raw(), lnf_.raw(), wparam(wte_idx()), N, C,
                    d_.Vl);
  tp_sum(dln_.raw(), NC);
  // final layernorm; dres_ becomes d(residual stream) = d(res3 of the last block)
  dres_.zero_();
  const void* x_last = d_.L > 0 ? acts_[d_.L - 1].res3.raw() : encoded_.raw();
  k.layernorm_backward(dres_.raw(), grad(lnfw_idx()), grad(lnfb_idx()), dln_.raw(), x_last, wparam(lnfw_idx()),
                       lnf_mean_.f32(), lnf_rstd_.f32(), N, C);
  ready(lnfb_idx());
  ready(lnfw_idx());

  void* dres = dres_.raw();
  for (int l = d_.L - 1; l >= 0; --l) {
    LayerActs& a = acts_[l];
    const void* x = l > 0 ? acts_[l - 1].res3.raw() : encoded_.raw();
    // res3 = res2 + mlp: d(mlp) = d(res2) = dres
    // mlp = gelu(fch) @ W_proj^T (row-parallel): local input grad, no all-reduce needed
    k.bias_backward(grad(pidx(l, FCPB)), dres, N, C);
    dfch_gelu_.zero_();
    k.matmul_backward(dfch_gelu_.raw(), grad(pidx(l, FCPW)), nullptr, dres, a.fch_gelu.raw(), wparam(pidx(l, FCPW)),
                      N, d_.Fl, C);
    ready(pidx(l, FCPB));
    ready(pidx(l, FCPW));
    dfch_.zero_();
    k.gelu_backward(dfch_.raw(), a.fch.raw(), dfch_gelu_.raw(), static_cast<int64_t>(N) * d_.Fl);
    // fch = ln2 @ W_fc^T + b (column-parallel): d(ln2) partial -> all-reduce
    dln_.zero_();
    k.matmul_backward(dln_.raw(), grad(pidx(l, FCW)), grad(pidx(l, FCB)), dfch_.raw(), a.ln2.raw(),
                      wparam(pidx(l, FCW)), N, C, d_.Fl);
    ready(pidx(l, FCB));
    ready(pidx(l, FCW));
    tp_sum(dln_.raw(), NC);
    k.layernorm_backward(dres, grad(pidx(l, LN2W)), grad(pidx(l, LN2B)), dln_.raw(), a.res2.raw(),
                         wparam(pidx(l, LN2W)), a.ln2_mean.f32(), a.ln2_rstd.f32(), N, C);
    ready(pidx(l, LN2B));
    ready(pidx(l, LN2W));
    // res2 = x + attn: d(attn) = dres; attn = atty @ W_proj^T (row-parallel)
    k.bias_backward(grad(pidx(l, ATTPB)), dres, N, C);
    dproj_in_.zero_();
    k.matmul_backward(dproj_in_.raw(), grad(pidx(l, ATTPW)), nullptr, dres, a.atty.raw(), wparam(pidx(l, ATTPW)), N,
                      d_.Cl, C);
    ready(pidx(l, ATTPB));
    ready(pidx(l, ATTPW));
    dqkv_.zero_();
    k.attention_backward(dqkv_.raw(), dproj_in_.raw(), a.qkv.raw(), a.atty.raw(), a.att.f32(), docs, B, T, d_.Cl,
                         d_.NHl);
    // qkv = ln1 @ W_qkv^T + b (column-parallel)
    dln_.zero_();
    k.matmul_backward(dln_.raw(), grad(pidx(l, QKVW)), grad(pidx(l, QKVB)), dqkv_.raw(), a.ln1.raw(),
                      wparam(pidx(l, QKVW)), N, C, 3 * d_.Cl);
    ready(pidx(l, QKVB));
    ready(pidx(l, QKVW));
    tp_sum(dln_.raw(), NC);
    k.layernorm_backward(dres, grad(pidx(l, LN1W)), grad(pidx(l, LN1B)), dln_.raw(), x, wparam(pidx(l, LN1W)),
                         a.ln1_mean.f32(), a.ln1_rstd.f32(), N, C);
    ready(pidx(l, LN1B));
    ready(pidx(l, LN1W));
  }
  // embeddings
  k.position_embedding_backward(grad(wpe_idx()), dres, B, T, C);
  ready(wpe_idx());
  k.token_embedding_backward(grad(wte_idx()), dres, tokens, N, C, d_.v_start, d_.Vl);
  ready(wte_idx());
  // the caller's next host wait on the device (end of step) must not outlive a dead tp peer
  sync_tp();
}

}  // namespace mt::parallel
