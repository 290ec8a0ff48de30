// What: Llama as an Architecture and its Model (see llama.h). Shapes use N = B*T tokens; an
// `l` suffix marks a tp rank's local slice (NHl = n_head/tp query heads, NKVl kv heads, HS
// channels per head, Fl = ffn_dim/tp, Vl vocabulary rows).
#include "parallel/models/llama.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"
#include "parallel/models/blocks.h"

namespace mt::parallel {

using core::Tensor;

namespace {
core::Error key_error(const std::string& key, const std::string& msg, const std::string& hint) {
  core::Error e(msg);
  e.with_yaml(key).with_hint(hint);
  return e;
}
}  // namespace

int LlamaArchitecture::default_ffn_dim(int n_embd, int multiple_of) {
  const int hidden = 2 * (4 * n_embd) / 3;  // int(2 * hidden / 3) of Llama's reference code
  return (hidden + multiple_of - 1) / multiple_of * multiple_of;
}

LlamaArchitecture::LlamaArchitecture(const core::ModelConfig& cfg) : Architecture(cfg) {
  n_kv_ = cfg.n_kv_head > 0 ? cfg.n_kv_head : cfg.n_head;
  ffn_ = cfg.ffn_dim > 0 ? cfg.ffn_dim : default_ffn_dim(cfg.n_embd, cfg.ffn_multiple_of);
  if (cfg.n_head < 1 || cfg.n_embd % cfg.n_head != 0) {
    throw key_error("model.n_embd", fmt::format("n_embd = {} is not divisible by n_head = {}", cfg.n_embd, cfg.n_head),
                    "the head size is n_embd / n_head");
  }
  if (cfg.n_head % n_kv_ != 0) {
    throw key_error("model.n_kv_head",
                    fmt::format("n_kv_head = {} does not divide n_head = {}", n_kv_, cfg.n_head),
                    "grouped-query attention shares each key/value head among n_head / n_kv_head query heads");
  }
  if ((cfg.n_embd / cfg.n_head) % 2 != 0) {
    throw key_error("model.n_head",
                    fmt::format("the head size n_embd / n_head = {} / {} = {} is odd", cfg.n_embd, cfg.n_head,
                                cfg.n_embd / cfg.n_head),
                    "rotary embedding rotates channel pairs: choose an even head size");
  }
}

std::string LlamaArchitecture::tp_violation(int tp) const {
  const core::ModelConfig& m = config();
  if (tp < 1 || m.n_head % tp != 0) {
    return fmt::format("parallel.tp = {} does not divide model.n_head = {} (query heads are split across the "
                       "tensor-parallel group)", tp, m.n_head);
  }
  if (n_kv_ % tp != 0 && tp % n_kv_ != 0) {
    return fmt::format("parallel.tp = {} neither divides nor is a multiple of model.n_kv_head = {} (key/value heads "
                       "are split across the group, or each replicated on tp / n_kv_head ranks)", tp, n_kv_);
  }
  if (ffn_ % tp != 0) {
    return fmt::format("parallel.tp = {} does not divide model.ffn_dim = {} (the SwiGLU width is split across the "
                       "tensor-parallel group)", tp, ffn_);
  }
  return "";
}

std::string LlamaArchitecture::tp_constraint() const {
  return fmt::format("model.n_head = {}, model.n_kv_head = {}, model.ffn_dim = {}", config().n_head, n_kv_, ffn_);
}

std::vector<ParamSpec> LlamaArchitecture::param_specs() const {
  const core::ModelConfig& m = config();
  const int64_t C = m.n_embd, L = m.n_layer, HS = head_size(), F = ffn_;
  const int64_t Q = m.n_head * HS, KV = n_kv_ * HS;
  const float std = static_cast<float>(m.init_std);
  const float proj_std = std / std::sqrt(2.0f * static_cast<float>(L));  // residual projections
  std::vector<ParamSpec> v;
  auto add = [&](std::string name, core::Shape full, Partition part, bool decay, float sd, float value, int layer) {
    v.push_back({std::move(name), std::move(full), std::move(part), decay, sd, value, layer});
  };
  const Partition rep, cols = Partition::cols();
  add("tok_emb", {m.vocab_size, C}, Partition::vocab(kVocabAlign), true, std, 0, -1);
  v.back().tied_head = m.tie_embeddings;
  for (int l = 0; l < L; ++l) {
    const std::string h = "h" + std::to_string(l) + ".";
    add(h + "attn_norm.w", {C}, rep, false, 0, 1, l);
    add(h + "attn.qkv.w", {Q + 2 * KV, C}, Partition::rows({Q, KV, KV}, HS), true, std, 0, l);
    add(h + "attn.o.w", {C, Q}, cols, true, proj_std, 0, l);
    add(h + "mlp_norm.w", {C}, rep, false, 0, 1, l);
    add(h + "mlp.gate_up.w", {2 * F, C}, Partition::rows({F, F}), true, std, 0, l);
    add(h + "mlp.down.w", {C, F}, cols, true, proj_std, 0, l);
  }
  add("norm.w", {C}, rep, false, 0, 1, static_cast<int>(L));
  if (!m.tie_embeddings) add("lm_head", {m.vocab_size, C}, Partition::vocab(kVocabAlign), true, std, 0, static_cast<int>(L));
  return v;
}

double LlamaArchitecture::flops_per_token(int T) const {
  // 6 FLOPs per multiply-accumulate weight per token: every matrix but the token table, which
  // counts once more when it is the (tied) head; attention scores and mixing over n_head
  // heads of HS channels add 12 * L * (n_head * HS) * T (PaLM appendix B, no causal halving).
  double matmul_params = 0;
  for (const auto& p : param_specs()) {
    if (p.full_shape.size() == 2 && p.name != "tok_emb") matmul_params += static_cast<double>(core::shape_numel(p.full_shape));
  }
  const core::ModelConfig& m = config();
  if (m.tie_embeddings) matmul_params += static_cast<double>(m.vocab_size) * m.n_embd;
  return 6.0 * matmul_params + 12.0 * m.n_layer * m.n_embd * static_cast<double>(T);
}

Architecture::TpTraffic LlamaArchitecture::tp_traffic(int64_t tokens, int elem_bytes) const {
  // as GPT-2: activations (tokens, C) for the embedding and two per block forward, the head's
  // input gradient and two per block backward; the cross-entropy's three (tokens) fp32
  // pieces. Not counted: with more tp ranks than kv heads, the sum of the k and v weight
  // gradients over the group (2 x n_kv_head x head size x n_embd fp32 per layer; tp_traffic
  // does not know tp)
  const core::ModelConfig& m = config();
  const int64_t act = 4 * static_cast<int64_t>(m.n_layer) + 2;
  TpTraffic t;
  t.all_reduces = act + 3;
  t.bytes = static_cast<double>(act) * tokens * m.n_embd * elem_bytes + 3.0 * tokens * 4;
  return t;
}

Architecture::SampleCost LlamaArchitecture::sample_cost() const {
  // GPT-2's model (gpt2.cc) with Llama's matrices: linear layers grow with the length,
  // attention with its square, scaled by the reference attention kernel's slowdown.
  constexpr double kAttentionSlowdown = 4.0;
  const core::ModelConfig& m = config();
  const double L = m.n_layer, C = m.n_embd, V = m.vocab_size;
  const double HS = head_size(), per_layer = C * (m.n_head * HS + 2.0 * n_kv_ * HS) + C * m.n_head * HS + 3.0 * C * ffn_;
  SampleCost c;
  c.per_token = 6.0 * (L * per_layer + V * C) * 1e-6;
  c.per_token_sq = kAttentionSlowdown * 6.0 * L * C * 1e-6;
  return c;
}

std::vector<std::pair<std::string, int64_t>> LlamaArchitecture::shape_keys() const {
  const core::ModelConfig& m = config();
  return {{"n_layer", m.n_layer}, {"n_head", m.n_head},     {"n_kv_head", n_kv_},
          {"n_embd", m.n_embd},   {"ffn_dim", ffn_},        {"vocab_size", m.vocab_size},
          {"tie_embeddings", m.tie_embeddings ? 1 : 0}};
}

double LlamaArchitecture::activation_bytes(int B, int T, int tp, int elem_bytes, int att_state_per_row,
                                           Recompute recompute, bool sp) const {
  // mirrors LlamaModel::ensure_acts: per block its internals and its output res3 (N, C); with
  // full recomputation one block's internals shared by all, and every block's output; with
  // selective every block's but one attention state and one SwiGLU output, shared by all.
  // Sequence parallelism: the norms and the residual stream hold R = N/tp rows, plus two
  // (N, C) buffers for the gathers and an (R, C) reduce-scattered input gradient.
  const core::ModelConfig& m = config();
  const double N = static_cast<double>(B) * T, C = m.n_embd, HS = head_size(), W = elem_bytes;
  const double R = sp ? N / tp : N;
  const double NHl = m.n_head / tp, NKVl = std::max(1, n_kv_ / tp), Fl = ffn_ / tp;
  const auto emb = layout_params({param_specs().front()}, tp, 1, nullptr).front();
  const double Vl = static_cast<double>(emb.local_shape[0]);
  const double inner = std::max({NHl * HS, (NHl + 2 * NKVl) * HS, 2 * Fl});
  const double norm = R * C * W + R * 4;
  const double per_block = norm + N * (NHl + 2 * NKVl) * HS * W + B * NHl * T * att_state_per_row * 4.0 +
                           N * NHl * HS * W + R * C * W + norm + N * 3 * Fl * W + R * C * W;
  const double recomputed = B * NHl * T * att_state_per_row * 4.0 + N * Fl * W;  // att, act
  const double blocks = recompute == Recompute::Full        ? per_block + (m.n_layer - 1) * R * C * W
                        : recompute == Recompute::Selective ? m.n_layer * per_block - (m.n_layer - 1) * recomputed
                                                            : m.n_layer * per_block;
  return blocks + R * C * W /*encoded*/ + norm + 2 * N * Vl * W /*logits, dlogits*/ +
         4 * N * 4 /*cross-entropy*/ + R * C * W + N * C * W /*dres, dln*/ + 2 * N * inner * W /*dmid, dmid2*/ +
         (sp ? 2 * N * C * W + R * C * W : 0) /*gathers, local dln*/;
}

std::string LlamaArchitecture::describe(int tp) const {
  const core::ModelConfig& m = config();
  const auto emb = layout_params({param_specs().front()}, tp, 1, nullptr).front();
  return fmt::format("llama, {} parameters ({} layers, {} heads / {} kv heads, width {}, ffn {}, vocab {} padded to {}, "
                     "{} head), seq_len {}, rope theta {}",
                     num_params(), m.n_layer, m.n_head, n_kv_, m.n_embd, ffn_, m.vocab_size,
                     emb.partition.padded_rows(emb.full_shape, tp), m.tie_embeddings ? "tied" : "untied", m.seq_len,
                     m.rope_theta);
}

namespace {

// One transformer block: its layers and the residual stream after each half.
struct LlamaBlock {
  RmsNormLayer attn_norm;
  LlamaAttention attn;
  Tensor res2;  // (N, C) = x + attention
  RmsNormLayer mlp_norm;
  SwiGluMlp mlp;
  Tensor res3;  // (N, C) = res2 + MLP: the block's output
};

// Recompute::Full: `to` uses `from`'s internal activations (everything but res3).
void share_internals(LlamaBlock& to, const LlamaBlock& from) {
  to.attn_norm.out = from.attn_norm.out, to.attn_norm.rstd = from.attn_norm.rstd;
  to.attn.qkv_out = from.attn.qkv_out, to.attn.att = from.attn.att, to.attn.atty = from.attn.atty;
  to.res2 = from.res2;
  to.mlp_norm.out = from.mlp_norm.out, to.mlp_norm.rstd = from.mlp_norm.rstd;
  to.mlp.gu = from.mlp.gu, to.mlp.act = from.mlp.act;
}

// Recompute::Selective: `to` uses `from`'s attention state and SwiGLU output, keeping the rest.
void share_recomputed(LlamaBlock& to, const LlamaBlock& from) {
  to.attn.att = from.attn.att;
  to.mlp.act = from.mlp.act;
}
size_t recomputed_bytes(const LlamaBlock& b) { return b.attn.att.nbytes() + b.mlp.act.nbytes(); }

class LlamaModel final : public Model {
 public:
  LlamaModel(std::shared_ptr<const LlamaArchitecture> arch, const ModelContext& ctx) : Model(arch, ctx) {
    const int C = cfg_.n_embd, tp = tp_.size(), HS = arch->head_size();
    const float eps = static_cast<float>(cfg_.norm_eps);
    const int NHl = cfg_.n_head / tp;
    const int NKVl = std::max(1, arch->n_kv_head() / tp);  // replicated when tp > n_kv_head
    const int Fl = arch->ffn_dim() / tp;
    rope_.init(device(), cfg_.seq_len, HS, cfg_.rope_theta);
    // full parameter indices follow param_specs(): tok_emb, 6 per block, norm.w, [lm_head]; a
    // pipeline stage holds some of them (local_param: their index in this rank's layout)
    constexpr int kPerLayer = 6;
    const auto at = [this](int full) { return local_param(full); };
    const auto slice = [&](int local) { return VocabSlice::of(params_info()[static_cast<size_t>(local)], tp, tp_.rank()); };
    if (at(0) >= 0) embed_ = {at(0), C, slice(at(0))};  // (a tied head's copy on the last stage)
    blocks_.resize(static_cast<size_t>(cfg_.n_layer));
    for (int c = 0; c < num_chunks(); ++c) {
      for (int l = chunk_layers(c).first; l < chunk_layers(c).second; ++l) {
        const int p = 1 + l * kPerLayer;
        LlamaBlock& b = blocks_[static_cast<size_t>(l)];
        b.attn_norm = {at(p + 0), C, eps};
        b.attn.qkv = {at(p + 1), -1, C, (NHl + 2 * NKVl) * HS, false};
        b.attn.o = {at(p + 2), -1, NHl * HS, C};
        b.attn.NHl = NHl;
        b.attn.NKVl = NKVl;
        b.attn.HS = HS;
        b.attn.rope = &rope_;
        b.mlp_norm = {at(p + 3), C, eps};
        b.mlp.gate_up = {at(p + 4), -1, C, 2 * Fl, false};
        b.mlp.down = {at(p + 5), -1, Fl, C};
        b.mlp.Fl = Fl;
        held_.push_back(l);
      }
    }
    if (stage().head) {
      const int nf = 1 + cfg_.n_layer * kPerLayer;
      norm_ = {at(nf), C, eps};
      const bool tied = cfg_.tie_embeddings;
      // tied to the embedding: on a pipeline's last stage the copy's gradient is final here
      const VocabSlice vs = tied ? embed_.vs : slice(at(nf + 1));
      head_ = {tied ? at(0) : at(nf + 1), -1, C, vs.Vl, /*tied=*/tied && stage().embed};
      if (!tied && stage().embed) MT_CHECK(vs.Vl == embed_.vs.Vl, "lm_head slice");
      xent_.vs = vs;
      head_vl_ = vs.Vl;
    }
    chunk_in_.resize(static_cast<size_t>(num_chunks()));
    chunk_out_.assign(static_cast<size_t>(num_chunks()), nullptr);
    dres_.resize(static_cast<size_t>(num_chunks()));
    max_inner_ = std::max({NHl * HS, (NHl + 2 * NKVl) * HS, 2 * Fl});
    nhl_ = NHl, nkvl_ = NKVl, hs_ = HS, fl_ = Fl;
  }

  double forward(const int32_t* inputs, const int32_t* targets, int B, int T, const int32_t* doc_ids) override {
    MT_CHECK(stage().whole(), "forward() of a pipeline stage: use forward_chunk");
    return forward_chunk(0, inputs, targets, B, T, doc_ids);
  }
  void backward(float loss_weight, const GradReadyFn& ready) override {
    MT_CHECK(stage().whole(), "backward() of a pipeline stage: use backward_chunk");
    backward_chunk(0, loss_weight, ready);
  }

  const void* head_logits_any() const override { return stage().head && logits_.defined() ? logits_.raw() : nullptr; }
  int head_vocab_rows() const override { return stage().head ? head_vl_ : 0; }

  void* chunk_input(int c, int B, int T) override {
    ensure_acts(B, T);
    return chunk_in_[static_cast<size_t>(c)].raw();
  }
  const void* chunk_output(int c) const override { return chunk_out_[static_cast<size_t>(c)]; }
  void* chunk_output_grad(int c) override { return dres_[static_cast<size_t>(c)].raw(); }
  const void* chunk_input_grad(int c) const override { return dres_[static_cast<size_t>(c)].raw(); }

  double forward_chunk(int c, const int32_t* inputs, const int32_t* targets, int B, int T,
                       const int32_t* doc_ids) override {
    ensure_acts(B, T);
    sp_rows_ = sp_;
    const int N = B * T, R = seq_.R;  // R: the rows of the residual stream on this rank
    const int64_t NC = static_cast<int64_t>(R) * cfg_.n_embd;
    if (c == 0) {  // every block needs the rotary positions (and documents): staged on every stage
      const StagedTokens tok = stage_tokens(inputs, targets, doc_ids, B, T, cfg_.vocab_size);
      tokens_ = tok.tokens;
      targets_d_ = tok.targets;
      doc_ids_ = tok.doc_ids;
      pos_ = tok.positions;
    }
    kernels::Ops& k = ops();
    void* x = chunk_in_[static_cast<size_t>(c)].raw();
    if (chunk_embeds(c)) {
      if (sp_) {  // this rank's rows of the summed token rows
        embed_.forward(*this, seq_.a.raw(), tokens_, N);
        sp_scatter(*this, x, seq_.a.raw(), N, cfg_.n_embd);
      } else {
        embed_.forward(*this, x, tokens_, N);
      }
    }
    const auto [l0, l1] = chunk_layers(c);
    for (int l = l0; l < l1; ++l) {
      LlamaBlock& b = blocks_[static_cast<size_t>(l)];
      enter_block(l, Pass::Forward);  // (ZeRO-3: gathers its parameters)
      b.attn_norm.forward(*this, x, R);
      const void* a_in = seq_.col_in(*this, b.attn_norm.out.raw());  // rotary positions: of all N rows
      b.attn.forward(*this, seq_.row_out(b.res2.raw()), a_in, pos_, doc_ids_, B, T);
      seq_.row_done(*this, b.res2.raw(), b.attn.o);
      k.residual_forward(b.res2.raw(), x, b.res2.raw(), NC);
      b.mlp_norm.forward(*this, b.res2.raw(), R);
      const void* m_in = seq_.col_in(*this, b.mlp_norm.out.raw());
      b.mlp.forward(*this, seq_.row_out(b.res3.raw()), m_in, N);
      seq_.row_done(*this, b.res3.raw(), b.mlp.down);
      k.residual_forward(b.res3.raw(), b.res2.raw(), b.res3.raw(), NC);
      x = b.res3.raw();
    }
    live_ = l1 - 1;  // (recomputation: the shared internals hold the chunk's last block's)
    chunk_out_[static_cast<size_t>(c)] = x;
    if (!chunk_has_head(c)) return 0.0;
    norm_.forward(*this, x, R);
    head_.forward(*this, logits_.raw(), seq_.col_in(*this, norm_.out.raw()), N);  // (N, Vl) = norm @ lm_head_l^T
    if (!targets_d_) return 0.0;
    xent_.forward(*this, logits_.raw(), targets_d_, N);
    return finish_losses(xent_.losses.f32(), targets, N);
  }

  void backward_chunk(int c, float loss_weight, const GradReadyFn& ready) override {
    const int B = B_, T = T_, N = B * T, R = seq_.R;
    sp_rows_ = sp_;
    Tensor& dres_t = dres_[static_cast<size_t>(c)];  // d(residual stream), from the chunk's output down
    void* dres = dres_t.raw();
    const void* dln = nullptr;
    if (chunk_has_head(c)) {
      MT_CHECK(has_targets(), "backward() needs a forward() with targets");
      const float* dloss = stage_loss_weights(loss_weight);
      xent_.backward(*this, dlogits_.raw(), logits_.raw(), targets_d_, dloss, N);
      // (sp: every statement issues at most one tp collective, so all ranks issue them in order)
      const void* head_in = seq_.col_in(*this, norm_.out.raw());
      head_.backward(*this, scratch_.dln, dlogits_.raw(), head_in, N, ready);
      dres_t.zero_();
      dln = seq_.col_grad(*this, scratch_);
      norm_.backward(*this, dres, dln, chunk_out_[static_cast<size_t>(c)], R, ready);
    }
    const auto [l0, l1] = chunk_layers(c);
    for (int l = l1 - 1; l >= l0; --l) {
      const LlamaBlock& b = blocks_[static_cast<size_t>(l)];
      const void* x = l > l0 ? blocks_[static_cast<size_t>(l) - 1].res3.raw() : chunk_in_[static_cast<size_t>(c)].raw();
      enter_block(l, Pass::Backward);  // (ZeRO-3: its parameters; ZeRO-2/3: its gradient buffer)
      if (recompute() != Recompute::None && l != live_) recompute_block(l, x);
      const void* dout = seq_.row_grad(*this, dres);
      const void* m_in = seq_.col_in(*this, b.mlp_norm.out.raw());
      b.mlp.backward(*this, scratch_, dout, m_in, N, ready);
      dln = seq_.col_grad(*this, scratch_);
      b.mlp_norm.backward(*this, dres, dln, b.res2.raw(), R, ready);
      dout = seq_.row_grad(*this, dres);
      const void* a_in = seq_.col_in(*this, b.attn_norm.out.raw());
      b.attn.backward(*this, scratch_, dout, a_in, pos_, doc_ids_, B, T, ready);
      dln = seq_.col_grad(*this, scratch_);
      b.attn_norm.backward(*this, dres, dln, x, R, ready);
    }
    live_ = -1;
    if (chunk_embeds(c)) {
      const void* dx = seq_.row_grad(*this, dres);  // all rows: the embedding's gradient is then complete
      embed_.backward(*this, dx, tokens_, N, ready);
    }
    tp_.host_wait();  // the caller's next host wait must not outlive a dead tp peer
  }

  // ---- decoding (model.h): the forward above on the new positions only, layer by layer in
  // the shared DecodeScratch, attention against the per-layer key/value cache
  void begin_decode(int B, int max_len) override {
    MT_CHECK(stage().whole(), "decoding needs the whole model on one rank (parallel.pp = 1)");
    set_decode_shape(B, max_len);
    free_acts();
    kv_cache_ = alloc_kv_cache(*this, cfg_.n_layer, B, nkvl_, max_len, hs_);
  }

  void decode(const int32_t* tokens, int B, int n, float* logits_out, bool all_positions) override {
    sp_rows_ = false;  // decoding runs on all rows (all-reduces)
    const int past = start_decode(B, n);
    const int N = B * n, C = cfg_.n_embd;
    const int64_t NC = static_cast<int64_t>(N) * C;
    const int qkv_w = (nhl_ + 2 * nkvl_) * hs_;
    dec_.ensure(*this, N, C, qkv_w, nhl_ * hs_, 2 * fl_, fl_, embed_.vs.Vl);
    ensure_token_buffers(N);
    const StagedTokens tok = stage_tokens(tokens, nullptr, nullptr, B, n, cfg_.vocab_size, past);
    kernels::Ops& k = ops();
    DecodeScratch& d = dec_;
    void* x = d.x.raw();
    embed_.forward(*this, x, tok.tokens, N);
    for (size_t l = 0; l < blocks_.size(); ++l) {
      const LlamaBlock& b = blocks_[l];
      enter_block(static_cast<int>(l), Pass::Forward);
      b.attn_norm.apply(*this, d.norm.raw(), d.rstd.f32(), x, N);
      b.attn.decode(*this, d.out.raw(), d.norm.raw(), tok.positions, kv_cache_[2 * l].raw(),
                    kv_cache_[2 * l + 1].raw(), d, B, n, past, decode_max_len());
      k.residual_forward(x, x, d.out.raw(), NC);
      b.mlp_norm.apply(*this, d.norm.raw(), d.rstd.f32(), x, N);
      b.mlp.apply(*this, d.out.raw(), d.norm.raw(), N, d.h1.raw(), d.h2.raw());
      k.residual_forward(x, x, d.out.raw(), NC);
    }
    const int M = all_positions ? N : B;
    norm_.apply(*this, d.norm.raw(), d.rstd.f32(), decode_rows(*this, d, x, B, n, C, all_positions), M);
    decode_logits(*this, head_, embed_.vs, d, d.norm.raw(), M, logits_out);
    finish_decode(n);
  }

  void end_decode() override {
    Model::end_decode();
    dec_.free();
  }

  HeadLogits head_logits() const override {
    if (!stage().head || !has_targets() || !logits_.defined()) return {};
    return {logits_.raw(), static_cast<int64_t>(B_) * T_, xent_.vs.Vl, xent_.vs.v_start, xent_.vs.v_valid};
  }

  size_t activation_bytes() const override {
    if (B_ == 0) return 0;  // none allocated (before the first forward, or decoding)
    size_t n = 0;
    for (size_t i = 0; i < held_.size(); ++i) {  // shared internals (recomputation) count once
      const LlamaBlock& b = blocks_[static_cast<size_t>(held_[i])];
      if (i == 0 || recompute() != Recompute::Full)
        n += b.attn_norm.bytes() + b.attn.bytes() + b.res2.nbytes() + b.mlp_norm.bytes() + b.mlp.bytes();
      if (i > 0 && recompute() == Recompute::Selective) n -= recomputed_bytes(b);
      n += b.res3.nbytes();
    }
    for (const Tensor* t : {&logits_, &dlogits_, &scratch_.dln, &scratch_.dmid, &scratch_.dmid2})
      if (t->defined()) n += t->nbytes();
    for (size_t c = 0; c < chunk_in_.size(); ++c) n += chunk_in_[c].nbytes() + dres_[c].nbytes();
    return n + norm_.bytes() + xent_.bytes() + seq_.bytes();
  }

 private:
  // Drops the training activations (decoding does not use them); ensure_acts makes new ones.
  void free_acts() {
    tp_.host_wait();
    device().synchronize();
    B_ = T_ = 0;
    logits_ = dlogits_ = Tensor();
    for (Tensor& t : chunk_in_) t = Tensor();
    for (Tensor& t : dres_) t = Tensor();
    seq_.free();
    scratch_ = Scratch();
    for (LlamaBlock& b : blocks_) {
      b.attn_norm.free();
      b.attn.free();
      b.mlp_norm.free();
      b.mlp.free();
      b.res2 = b.res3 = Tensor();
    }
    norm_.free();
    xent_.free();
  }

  // Recompute::Full: block l's forward from its input x into the shared internals, as
  // forward() ran it (same kernels, same tp all-reduces in the same order), up to what its
  // backward reads: the MLP's down projection (and all-reduce) and res3 are not needed.
  // Recompute::Selective: only its attention state (from its kept, rotated qkv) and SwiGLU
  // output (from its kept gu) into the shared buffers; local kernels, no tp collective.
  void recompute_block(int l, const void* x) {
    LlamaBlock& b = blocks_[static_cast<size_t>(l)];
    const int N = B_ * T_, R = seq_.R;
    if (recompute() == Recompute::Selective) {
      b.attn.recompute_state(*this, doc_ids_, B_, T_);
      b.mlp.recompute_activation(*this, N);
      live_ = l;
      return;
    }
    b.attn_norm.forward(*this, x, R);
    const void* a_in = seq_.col_in(*this, b.attn_norm.out.raw());
    b.attn.forward(*this, seq_.row_out(b.res2.raw()), a_in, pos_, doc_ids_, B_, T_);
    seq_.row_done(*this, b.res2.raw(), b.attn.o);
    ops().residual_forward(b.res2.raw(), x, b.res2.raw(), static_cast<int64_t>(R) * cfg_.n_embd);
    b.mlp_norm.forward(*this, b.res2.raw(), R);
    b.mlp.forward_hidden(*this, seq_.col_in(*this, b.mlp_norm.out.raw()), N);
    live_ = l;
  }

  void ensure_acts(int B, int T) {
    MT_CHECK(T >= 1 && T <= cfg_.seq_len, "sequence length {} exceeds model.seq_len {}", T, cfg_.seq_len);
    if (B == B_ && T == T_) return;
    core::Device& dev = device();
    tp_.host_wait();
    dev.synchronize();  // queued work may still use the buffers (and staging memory) replaced here
    check_sp_rows(B, T);
    B_ = B;
    T_ = T;
    seq_.alloc(*this, B * T, cfg_.n_embd);
    const int64_t N = static_cast<int64_t>(B) * T, C = cfg_.n_embd, R = seq_.R;
    const core::DType W = working_dtype();
    for (size_t c = 0; c < chunk_in_.size(); ++c) {
      chunk_in_[c] = Tensor::empty({R, C}, W, dev);  // (the embedding's output, or the received stream)
      dres_[c] = Tensor::empty({R, C}, W, dev);
    }
    for (size_t i = 0; i < held_.size(); ++i) {
      LlamaBlock& b = blocks_[static_cast<size_t>(held_[i])];
      const LlamaBlock& first = blocks_[static_cast<size_t>(held_[0])];
      const bool own = i == 0 || recompute() == Recompute::None;  // else shares the first held block's
      if (!own && recompute() == Recompute::Full) {
        share_internals(b, first);
      } else {
        b.attn_norm.alloc(dev, W, R);
        b.attn.alloc(ops(), W, B, T, own);
        b.res2 = Tensor::empty({R, C}, W, dev);
        b.mlp_norm.alloc(dev, W, R);
        b.mlp.alloc(dev, W, N, own);
        if (!own) share_recomputed(b, first);
      }
      b.res3 = Tensor::empty({R, C}, W, dev);
    }
    live_ = -1;
    if (stage().head) {
      norm_.alloc(dev, W, R);
      logits_ = Tensor::empty({N, head_vl_}, W, dev);
      dlogits_ = Tensor::empty({N, head_vl_}, W, dev);
      xent_.alloc(dev, N);
    }
    scratch_.dln = Tensor::empty({N, C}, W, dev);
    scratch_.dmid = Tensor::empty({N * max_inner_}, W, dev);
    scratch_.dmid2 = Tensor::empty({N * max_inner_}, W, dev);
    ensure_token_buffers(N);
  }

  RopeTables rope_;
  VocabEmbedding embed_;
  std::vector<LlamaBlock> blocks_;
  RmsNormLayer norm_;
  ColumnLinear head_;  // lm_head, or the token embedding when tied
  VocabCrossEntropy xent_;
  int64_t max_inner_ = 0;  // the widest local activation a backward scratch holds
  int nhl_ = 0, nkvl_ = 0, hs_ = 0, fl_ = 0;  // local query heads, kv heads, head size, SwiGLU width
  DecodeScratch dec_;
  int B_ = 0, T_ = 0;
  int live_ = -1;  // recomputation: the block whose values the shared tensors hold (-1: none)
  std::vector<int> held_;  // the blocks this rank holds, ascending
  int head_vl_ = 0;        // the head's local vocabulary rows (head stage)
  Tensor logits_, dlogits_;
  std::vector<Tensor> chunk_in_, dres_;  // per chunk: its input stream (R, C), d(stream) (R, C)
  std::vector<const void*> chunk_out_;   // per chunk: its output stream (the last block's res3)
  SeqParallel seq_;  // sequence parallelism: the residual stream's rows R, the gather buffers
  Scratch scratch_;
  const int32_t* tokens_ = nullptr;
  const int32_t* targets_d_ = nullptr;
  const int32_t* doc_ids_ = nullptr;
  const int32_t* pos_ = nullptr;
};

}  // namespace

std::unique_ptr<Model> LlamaArchitecture::build(const ModelContext& ctx) const {
  return std::make_unique<LlamaModel>(std::static_pointer_cast<const LlamaArchitecture>(shared_from_this()), ctx);
}

}  // namespace mt::parallel
