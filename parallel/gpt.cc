// What: GPT forward/backward over a tensor-parallel group (see gpt.h for the partition).
// Shapes use N = B*T tokens; suffix l marks a tp rank's local slice (Cl = C/tp, Fl = 4C/tp,
// Vl = Vp/tp). Every kernel is a CPU reference kernel from kernels/cpu.
#include "parallel/gpt.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/cpu/kernels.h"
#include "parallel/communicator.h"

namespace mt::parallel {

namespace k = mt::kernels::cpu;
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

Gpt::Gpt(const core::ModelConfig& cfg, int tp, int tp_rank, Communicator* tp_comm, int64_t flat_align)
    : cfg_(cfg), d_(make_gpt_dims(cfg, tp, tp_rank)), tp_comm_(tp_comm) {
  MT_CHECK(tp == 1 || tp_comm != nullptr, "tp = {} needs a tensor-parallel communicator", tp);
  int64_t total = 0;
  info_ = gpt_param_layout(cfg, d_, flat_align, &total);
  params_ = Tensor::zeros({total});
  grads_ = Tensor::zeros({total});
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
  for (const auto& p : info_) init_param(p, params_.f32() + p.offset, seed);
  grads_.zero_();
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

void Gpt::tp_sum(float* x, int64_t n) {
  if (d_.tp > 1) tp_comm_->all_reduce(x, static_cast<size_t>(n), DType::F32, ReduceOp::Sum);
}
void Gpt::tp_max(float* x, int64_t n) {
  if (d_.tp > 1) tp_comm_->all_reduce(x, static_cast<size_t>(n), DType::F32, ReduceOp::Max);
}

void Gpt::ensure_acts(int B, int T) {
  MT_CHECK(T >= 1 && T <= d_.maxT, "sequence length {} exceeds model.seq_len {}", T, d_.maxT);
  if (B == B_ && T == T_) return;
  B_ = B;
  T_ = T;
  const int64_t N = static_cast<int64_t>(B) * T, C = d_.C;
  encoded_ = Tensor::empty({N, C});
  acts_.assign(d_.L, LayerActs{});
  for (auto& a : acts_) {
    a.ln1 = Tensor::empty({N, C});
    a.ln1_mean = Tensor::empty({N});
    a.ln1_rstd = Tensor::empty({N});
    a.qkv = Tensor::empty({N, 3 * d_.Cl});
    a.att = Tensor::empty({B, d_.NHl, T, T});
    a.atty = Tensor::empty({N, d_.Cl});
    a.res2 = Tensor::empty({N, C});
    a.ln2 = Tensor::empty({N, C});
    a.ln2_mean = Tensor::empty({N});
    a.ln2_rstd = Tensor::empty({N});
    a.fch = Tensor::empty({N, d_.Fl});
    a.fch_gelu = Tensor::empty({N, d_.Fl});
    a.res3 = Tensor::empty({N, C});
  }
  lnf_ = Tensor::empty({N, C});
  lnf_mean_ = Tensor::empty({N});
  lnf_rstd_ = Tensor::empty({N});
  logits_ = Tensor::empty({N, d_.Vl});
  rowmax_ = Tensor::empty({N});
  sumexp_ = Tensor::empty({N});
  tgt_logit_ = Tensor::empty({N});
  losses_ = Tensor::empty({N});
  dres_ = Tensor::empty({N, C});
  dln_ = Tensor::empty({N, C});
  dproj_in_ = Tensor::empty({N, d_.Cl});
  dfch_ = Tensor::empty({N, d_.Fl});
  dfch_gelu_ = Tensor::empty({N, d_.Fl});
  dqkv_ = Tensor::empty({N, 3 * d_.Cl});
  dlogits_ = Tensor::empty({N, d_.Vl});
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

namespace {
// out: (N, OC) += bias: (OC)  (row-parallel bias, added once after the all-reduce)
void add_bias(float* out, const float* bias, int64_t N, int OC) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) out[n * OC + o] += bias[o];
}
// dbias: (OC) += sum_n dout: (N, OC), summed per channel in token order (thread-count independent)
void bias_backward(float* dbias, const float* dout, int64_t N, int OC) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < OC; ++o) {
    float s = 0.0f;
    for (int64_t n = 0; n < N; ++n) s += dout[n * OC + o];
    dbias[o] += s;
  }
}
}  // namespace

double Gpt::forward(const int32_t* inputs, const int32_t* targets, int B, int T,
                    const int32_t* doc_ids) {
  ensure_acts(B, T);
  const int N = B * T, C = d_.C;
  inputs_.assign(inputs, inputs + N);
  for (int i = 0; i < N; ++i) {
    MT_CHECK(inputs[i] >= 0 && inputs[i] < d_.V, "token id {} at position {} outside vocab [0, {})",
             inputs[i], i, d_.V);
  }
  // embeddings: x = wte[tokens] (vocab-parallel, summed over tp) + wpe[t]
  float* x = encoded_.f32();
  k::token_embedding_forward(x, inputs, param(wte_idx()), N, C, d_.v_start, d_.Vl);
  tp_sum(x, static_cast<int64_t>(N) * C);
  k::position_embedding_forward(x, param(wpe_idx()), B, T, C);

  for (int l = 0; l < d_.L; ++l) {
    LayerActs& a = acts_[l];
    // attention block: res2 = x + proj(attn(ln1(x)))
    k::layernorm_forward(a.ln1.f32(), a.ln1_mean.f32(), a.ln1_rstd.f32(), x, param(pidx(l, LN1W)),
                         param(pidx(l, LN1B)), N, C);
    k::matmul_forward(a.qkv.f32(), a.ln1.f32(), param(pidx(l, QKVW)), param(pidx(l, QKVB)), N, C, 3 * d_.Cl);
    k::attention_forward(a.atty.f32(), a.att.f32(), a.qkv.f32(), doc_ids, B, T, d_.Cl, d_.NHl);
    float* proj = a.res2.f32();  // (N, C) partial projection, then the residual sum in place
    k::matmul_forward(proj, a.atty.f32(), param(pidx(l, ATTPW)), nullptr, N, d_.Cl, C);
    tp_sum(proj, static_cast<int64_t>(N) * C);
    add_bias(proj, param(pidx(l, ATTPB)), N, C);
    k::residual_forward(a.res2.f32(), x, proj, static_cast<int64_t>(N) * C);
    // MLP block: res3 = res2 + proj(gelu(fc(ln2(res2))))
    k::layernorm_forward(a.ln2.f32(), a.ln2_mean.f32(), a.ln2_rstd.f32(), a.res2.f32(),
                         param(pidx(l, LN2W)), param(pidx(l, LN2B)), N, C);
    k::matmul_forward(a.fch.f32(), a.ln2.f32(), param(pidx(l, FCW)), param(pidx(l, FCB)), N, C, d_.Fl);
    k::gelu_forward(a.fch_gelu.f32(), a.fch.f32(), static_cast<int64_t>(N) * d_.Fl);
    float* mlp = a.res3.f32();
    k::matmul_forward(mlp, a.fch_gelu.f32(), param(pidx(l, FCPW)), nullptr, N, d_.Fl, C);
    tp_sum(mlp, static_cast<int64_t>(N) * C);
    add_bias(mlp, param(pidx(l, FCPB)), N, C);
    k::residual_forward(a.res3.f32(), a.res2.f32(), mlp, static_cast<int64_t>(N) * C);
    x = a.res3.f32();
  }
  k::layernorm_forward(lnf_.f32(), lnf_mean_.f32(), lnf_rstd_.f32(), x, param(lnfw_idx()),
                       param(lnfb_idx()), N, C);
  // logits for the local vocab slice: (N, Vl) = lnf @ wte_l^T
  k::matmul_forward(logits_.f32(), lnf_.f32(), param(wte_idx()), nullptr, N, C, d_.Vl);
  loss_tokens_ = 0;
  if (!targets) {
    targets_.clear();
    return 0.0;
  }
  targets_.assign(targets, targets + N);
  for (int i = 0; i < N; ++i) {
    MT_CHECK(targets[i] >= -1 && targets[i] < d_.V, "target id {} outside vocab [0, {}) (-1 = no loss)",
             targets[i], d_.V);
    loss_tokens_ += targets[i] >= 0;
  }
  // vocab-parallel cross-entropy: global max, global sum of exp, the owner's target logit
  k::xent_row_max(rowmax_.f32(), logits_.f32(), N, d_.Vl, d_.v_valid);
  tp_max(rowmax_.f32(), N);
  k::xent_sum_exp(sumexp_.f32(), logits_.f32(), rowmax_.f32(), N, d_.Vl, d_.v_valid);
  tp_sum(sumexp_.f32(), N);
  k::xent_target_logit(tgt_logit_.f32(), logits_.f32(), targets, N, d_.Vl, d_.v_start, d_.v_valid);
  tp_sum(tgt_logit_.f32(), N);
  k::xent_loss(losses_.f32(), rowmax_.f32(), sumexp_.f32(), tgt_logit_.f32(), N);
  // positions without a target own no logit: their "loss" is meaningless, zero it
  double sum = 0.0;
  for (int i = 0; i < N; ++i) {
    if (targets[i] < 0) losses_.f32()[i] = 0.0f;
    sum += losses_.f32()[i];
  }
  return loss_tokens_ > 0 ? sum / loss_tokens_ : 0.0;
}

void Gpt::backward(float loss_weight, const GradReadyFn& on_ready) {
  MT_CHECK(!targets_.empty(), "backward() needs a forward() with targets");
  const int B = B_, T = T_, N = B * T, C = d_.C;
  const int64_t NC = static_cast<int64_t>(N) * C;
  auto ready = [&](int i) {
    if (on_ready) on_ready(i);
  };
  // loss -> logits (local slice)
  std::vector<float> dloss(N);
  for (int i = 0; i < N; ++i) dloss[i] = targets_[i] >= 0 ? loss_weight : 0.0f;
  k::xent_backward(dlogits_.f32(), logits_.f32(), rowmax_.f32(), sumexp_.f32(), targets_.data(),
                   dloss.data(), N, d_.Vl, d_.v_start, d_.v_valid);
  // logits = lnf @ wte_l^T: dlnf is a partial sum over vocab slices
  std::memset(dln_.f32(), 0, NC * sizeof(float));
  k::matmul_backward(dln_.f32(), grad(wte_idx()), nullptr, dlogits_.f32(), lnf_.f32(),
                     param(wte_idx()), N, C, d_.Vl);
  tp_sum(dln_.f32(), NC);
  // final layernorm; dres_ becomes d(residual stream) = d(res3 of the last block)
  std::memset(dres_.f32(), 0, NC * sizeof(float));
  const float* x_last = d_.L > 0 ? acts_[d_.L - 1].res3.f32() : encoded_.f32();
  k::layernorm_backward(dres_.f32(), grad(lnfw_idx()), grad(lnfb_idx()), dln_.f32(), x_last,
                        param(lnfw_idx()), lnf_mean_.f32(), lnf_rstd_.f32(), N, C);
  ready(lnfb_idx());
  ready(lnfw_idx());

  float* dres = dres_.f32();
  for (int l = d_.L - 1; l >= 0; --l) {
    LayerActs& a = acts_[l];
    const float* x = l > 0 ? acts_[l - 1].res3.f32() : encoded_.f32();
    // res3 = res2 + mlp: d(mlp) = d(res2) = dres
    // mlp = gelu(fch) @ W_proj^T (row-parallel): local input grad, no all-reduce needed
    bias_backward(grad(pidx(l, FCPB)), dres, N, C);
    std::memset(dfch_gelu_.f32(), 0, sizeof(float) * N * d_.Fl);
    k::matmul_backward(dfch_gelu_.f32(), grad(pidx(l, FCPW)), nullptr, dres, a.fch_gelu.f32(),
                       param(pidx(l, FCPW)), N, d_.Fl, C);
    ready(pidx(l, FCPB));
    ready(pidx(l, FCPW));
    std::memset(dfch_.f32(), 0, sizeof(float) * N * d_.Fl);
    k::gelu_backward(dfch_.f32(), a.fch.f32(), dfch_gelu_.f32(), static_cast<int64_t>(N) * d_.Fl);
    // fch = ln2 @ W_fc^T + b (column-parallel): d(ln2) partial -> all-reduce
    std::memset(dln_.f32(), 0, NC * sizeof(float));
    k::matmul_backward(dln_.f32(), grad(pidx(l, FCW)), grad(pidx(l, FCB)), dfch_.f32(), a.ln2.f32(),
                       param(pidx(l, FCW)), N, C, d_.Fl);
    ready(pidx(l, FCB));
    ready(pidx(l, FCW));
    tp_sum(dln_.f32(), NC);
    k::layernorm_backward(dres, grad(pidx(l, LN2W)), grad(pidx(l, LN2B)), dln_.f32(), a.res2.f32(),
                          param(pidx(l, LN2W)), a.ln2_mean.f32(), a.ln2_rstd.f32(), N, C);
    ready(pidx(l, LN2B));
    ready(pidx(l, LN2W));
    // res2 = x + attn: d(attn) = dres; attn = atty @ W_proj^T (row-parallel)
    bias_backward(grad(pidx(l, ATTPB)), dres, N, C);
    std::memset(dproj_in_.f32(), 0, sizeof(float) * N * d_.Cl);
    k::matmul_backward(dproj_in_.f32(), grad(pidx(l, ATTPW)), nullptr, dres, a.atty.f32(),
                       param(pidx(l, ATTPW)), N, d_.Cl, C);
    ready(pidx(l, ATTPB));
    ready(pidx(l, ATTPW));
    std::memset(dqkv_.f32(), 0, sizeof(float) * N * 3 * d_.Cl);
    k::attention_backward(dqkv_.f32(), dproj_in_.f32(), a.qkv.f32(), a.att.f32(), B, T, d_.Cl, d_.NHl);
    // qkv = ln1 @ W_qkv^T + b (column-parallel)
    std::memset(dln_.f32(), 0, NC * sizeof(float));
    k::matmul_backward(dln_.f32(), grad(pidx(l, QKVW)), grad(pidx(l, QKVB)), dqkv_.f32(), a.ln1.f32(),
                       param(pidx(l, QKVW)), N, C, 3 * d_.Cl);
    ready(pidx(l, QKVB));
    ready(pidx(l, QKVW));
    tp_sum(dln_.f32(), NC);
    k::layernorm_backward(dres, grad(pidx(l, LN1W)), grad(pidx(l, LN1B)), dln_.f32(), x,
                          param(pidx(l, LN1W)), a.ln1_mean.f32(), a.ln1_rstd.f32(), N, C);
    ready(pidx(l, LN1B));
    ready(pidx(l, LN1W));
  }
  // embeddings
  k::position_embedding_backward(grad(wpe_idx()), dres, B, T, C);
  ready(wpe_idx());
  k::token_embedding_backward(grad(wte_idx()), dres, inputs_.data(), N, C, d_.v_start, d_.Vl);
  ready(wte_idx());
}

}  // namespace mt::parallel
