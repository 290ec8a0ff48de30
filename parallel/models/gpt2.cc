// What: GPT-2 as an Architecture and its Model (see gpt2.h). Shapes use N = B*T tokens; an
// `l` suffix marks a tp rank's local slice (Cl = C/tp attention width, Fl = 4C/tp MLP width,
// Vl = Vp/tp vocabulary rows).
#include "parallel/models/gpt2.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"
#include "parallel/models/blocks.h"

namespace mt::parallel {

using core::Tensor;

Gpt2Architecture::Gpt2Architecture(const core::ModelConfig& cfg) : Architecture(cfg) {
  MT_CHECK(cfg.n_head >= 1 && cfg.n_embd % cfg.n_head == 0, "model.n_embd {} not divisible by model.n_head {}",
           cfg.n_embd, cfg.n_head);
}

std::string Gpt2Architecture::tp_violation(int tp) const {
  if (tp >= 1 && config().n_head % tp == 0) return "";
  return fmt::format("parallel.tp = {} does not divide model.n_head = {} (attention heads are split across the "
                     "tensor-parallel group)", tp, config().n_head);
}

std::string Gpt2Architecture::tp_constraint() const { return fmt::format("model.n_head = {}", config().n_head); }

std::vector<ParamSpec> Gpt2Architecture::param_specs() const {
  const core::ModelConfig& m = config();
  const int64_t C = m.n_embd, L = m.n_layer;
  const float std = static_cast<float>(m.init_std);
  const float proj_std = std / std::sqrt(2.0f * static_cast<float>(L));  // residual projections
  std::vector<ParamSpec> v;
  auto add = [&](std::string name, core::Shape full, Partition part, bool decay, float sd, float value, int layer) {
    v.push_back({std::move(name), std::move(full), std::move(part), decay, sd, value, layer});
  };
  const Partition rep, rows = Partition::rows(), cols = Partition::cols(), qkv = Partition::rows({C, C, C});
  add("wte", {m.vocab_size, C}, Partition::vocab(kVocabAlign), true, std, 0, -1);
  v.back().tied_head = true;  // the head's output projection
  add("wpe", {m.seq_len, C}, rep, true, std, 0, -1);
  for (int l = 0; l < L; ++l) {
    const std::string h = "h" + std::to_string(l) + ".";
    add(h + "ln1.w", {C}, rep, false, 0, 1, l);
    add(h + "ln1.b", {C}, rep, false, 0, 0, l);
    add(h + "attn.qkv.w", {3 * C, C}, qkv, true, std, 0, l);
    add(h + "attn.qkv.b", {3 * C}, qkv, false, 0, 0, l);
    add(h + "attn.proj.w", {C, C}, cols, true, proj_std, 0, l);
    add(h + "attn.proj.b", {C}, rep, false, 0, 0, l);
    add(h + "ln2.w", {C}, rep, false, 0, 1, l);
    add(h + "ln2.b", {C}, rep, false, 0, 0, l);
    add(h + "mlp.fc.w", {4 * C, C}, rows, true, std, 0, l);
    add(h + "mlp.fc.b", {4 * C}, rows, false, 0, 0, l);
    add(h + "mlp.proj.w", {C, 4 * C}, cols, true, proj_std, 0, l);
    add(h + "mlp.proj.b", {C}, rep, false, 0, 0, l);
  }
  add("lnf.w", {C}, rep, false, 0, 1, static_cast<int>(L));
  add("lnf.b", {C}, rep, false, 0, 0, static_cast<int>(L));
  return v;
}

double Gpt2Architecture::flops_per_token(int T) const {
  // 6 FLOPs per multiply-accumulate weight per token (fwd 2 + bwd 4), counting the tied output
  // projection (V x C) but not the position table; attention scores and mixing add
  // 12 * L * C * T per token (PaLM appendix B, without the causal halving).
  double matmul_params = 0;
  for (const auto& p : param_specs()) {
    if (p.name != "wpe") matmul_params += static_cast<double>(core::shape_numel(p.full_shape));
  }
  const core::ModelConfig& m = config();
  return 6.0 * matmul_params + 12.0 * m.n_layer * m.n_embd * static_cast<double>(T);
}

Architecture::TpTraffic Gpt2Architecture::tp_traffic(int64_t tokens, int elem_bytes) const {
  // activations (tokens, C): the embedding and two per block forward, the head's input
  // gradient and two per block backward; the cross-entropy's three (tokens) fp32 pieces
  const core::ModelConfig& m = config();
  const int64_t act = 4 * static_cast<int64_t>(m.n_layer) + 2;
  TpTraffic t;
  t.all_reduces = act + 3;
  t.bytes = static_cast<double>(act) * tokens * m.n_embd * elem_bytes + 3.0 * tokens * 4;
  return t;
}

Architecture::SampleCost Gpt2Architecture::sample_cost() const {
  // Linear layers grow with the length, attention with its square: FLOPs, the attention term
  // scaled by how much slower a FLOP of attention runs than one of matmul: the reference
  // kernel (kernels/cpu/attention.cc) uses plain loops, not a blocked matmul. Measured (bench
  // step, 2 layers, width 128, vocab 512, 1 thread, 2048 positions per micro-batch as 64 x 32,
  // 16 x 128, 4 x 512: 131, 147, 272 ms): time per position grows by ~0.0024 of its
  // T-independent part per unit of T, 4.3x the FLOP ratio 5.6e-4. The figure only shapes the
  // balance (docs/dataset-format.md). Units: matmul FLOPs / 1e6.
  constexpr double kAttentionSlowdown = 4.0;
  const core::ModelConfig& m = config();
  const double L = m.n_layer, C = m.n_embd, V = m.vocab_size;
  SampleCost c;
  c.per_token = 6.0 * (12.0 * L * C * C + V * C) * 1e-6;
  c.per_token_sq = kAttentionSlowdown * 6.0 * L * C * 1e-6;
  return c;
}

std::vector<std::pair<std::string, int64_t>> Gpt2Architecture::shape_keys() const {
  const core::ModelConfig& m = config();
  return {{"n_layer", m.n_layer}, {"n_head", m.n_head}, {"n_embd", m.n_embd}, {"vocab_size", m.vocab_size},
          {"seq_len", m.seq_len}};
}

double Gpt2Architecture::activation_bytes(int B, int T, int tp, int elem_bytes, int att_state_per_row,
                                          Recompute recompute, bool sp) const {
  // mirrors Gpt2Model::ensure_acts: per block its internals and its output res3 (N, C); with
  // full recomputation one block's internals shared by all, and every block's output; with
  // selective every block's but one attention state and one GELU output, shared by all.
  // Sequence parallelism: the norms and the residual stream hold R = N/tp rows, plus two
  // (N, C) buffers for the gathers and an (R, C) reduce-scattered input gradient.
  const core::ModelConfig& m = config();
  const double N = static_cast<double>(B) * T, C = m.n_embd, W = elem_bytes;
  const double R = sp ? N / tp : N;
  const double NHl = m.n_head / tp, Cl = C / tp, Fl = 4 * C / tp;
  const auto wte = layout_params({param_specs().front()}, tp, 1, nullptr).front();
  const double Vl = static_cast<double>(wte.local_shape[0]);
  const double ln = R * C * W + 2 * R * 4;
  const double per_block = ln + N * 3 * Cl * W + B * NHl * T * att_state_per_row * 4.0 + N * Cl * W + R * C * W + ln +
                           2 * N * Fl * W + R * C * W;
  const double recomputed = B * NHl * T * att_state_per_row * 4.0 + N * Fl * W;  // att, fch_gelu
  const double blocks = recompute == Recompute::Full        ? per_block + (m.n_layer - 1) * R * C * W
                        : recompute == Recompute::Selective ? m.n_layer * per_block - (m.n_layer - 1) * recomputed
                                                            : m.n_layer * per_block;
  return blocks + R * C * W + ln + 2 * N * Vl * W + 4 * N * 4 + R * C * W + N * C * W +
         N * std::max(Cl, Fl) * W + N * std::max(3 * Cl, Fl) * W + (sp ? 2 * N * C * W + R * C * W : 0);
}

std::string Gpt2Architecture::describe(int tp) const {
  const core::ModelConfig& m = config();
  const auto wte = layout_params({param_specs().front()}, tp, 1, nullptr).front();
  return fmt::format("gpt2, {} parameters ({} layers, {} heads, width {}, vocab {} padded to {}), seq_len {}", num_params(),
                     m.n_layer, m.n_head, m.n_embd, m.vocab_size, wte.partition.padded_rows(wte.full_shape, tp),
                     m.seq_len);
}

namespace {

// One transformer block: its layers and the residual stream after each half.
struct Gpt2Block {
  LayerNormLayer ln1;
  Gpt2Attention attn;
  Tensor res2;  // (N, C) = x + attention
  LayerNormLayer ln2;
  GeluMlp mlp;
  Tensor res3;  // (N, C) = res2 + MLP: the block's output
};

// Recompute::Full: `to` uses `from`'s internal activations (everything but res3).
void share_internals(Gpt2Block& to, const Gpt2Block& from) {
  to.ln1.out = from.ln1.out, to.ln1.mean = from.ln1.mean, to.ln1.rstd = from.ln1.rstd;
  to.attn.qkv_out = from.attn.qkv_out, to.attn.att = from.attn.att, to.attn.atty = from.attn.atty;
  to.res2 = from.res2;
  to.ln2.out = from.ln2.out, to.ln2.mean = from.ln2.mean, to.ln2.rstd = from.ln2.rstd;
  to.mlp.fch = from.mlp.fch, to.mlp.fch_gelu = from.mlp.fch_gelu;
}

// Recompute::Selective: `to` uses `from`'s attention state and GELU output, keeping the rest.
void share_recomputed(Gpt2Block& to, const Gpt2Block& from) {
  to.attn.att = from.attn.att;
  to.mlp.fch_gelu = from.mlp.fch_gelu;
}
size_t recomputed_bytes(const Gpt2Block& b) { return b.attn.att.nbytes() + b.mlp.fch_gelu.nbytes(); }

class Gpt2Model final : public Model {
 public:
  Gpt2Model(std::shared_ptr<const Gpt2Architecture> arch, const ModelContext& ctx) : Model(std::move(arch), ctx) {
    const int C = cfg_.n_embd, tp = tp_.size();
    const int Cl = C / tp;
    // full parameter indices follow param_specs(): wte, wpe, 12 per block, lnf.w, lnf.b; a
    // pipeline stage holds some of them (local_param: their index in this rank's layout)
    constexpr int kPerLayer = 12;
    const auto at = [this](int full) { return local_param(full); };
    if (at(0) >= 0) embed_ = {at(0), C, VocabSlice::of(params_info()[static_cast<size_t>(at(0))], tp, tp_.rank())};
    if (stage().embed) pos_ = {at(1), C};
    blocks_.resize(static_cast<size_t>(cfg_.n_layer));
    for (int c = 0; c < num_chunks(); ++c) {
      for (int l = chunk_layers(c).first; l < chunk_layers(c).second; ++l) {
        const int p = 2 + l * kPerLayer;
        Gpt2Block& b = blocks_[static_cast<size_t>(l)];
        b.ln1 = {at(p + 0), at(p + 1), C};
        b.attn.qkv = {at(p + 2), at(p + 3), C, 3 * Cl, false};
        b.attn.proj = {at(p + 4), at(p + 5), Cl, C};
        b.attn.NHl = cfg_.n_head / tp;
        b.attn.Cl = Cl;
        b.ln2 = {at(p + 6), at(p + 7), C};
        b.mlp.fc = {at(p + 8), at(p + 9), C, 4 * C / tp, false};
        b.mlp.proj = {at(p + 10), at(p + 11), 4 * C / tp, C};
        b.mlp.Fl = 4 * C / tp;
        held_.push_back(l);
      }
    }
    if (stage().head) {
      const int lnf = 2 + cfg_.n_layer * kPerLayer;
      lnf_ = {at(lnf), at(lnf + 1), C};
      // tied to the embedding: on a pipeline's last stage the copy's gradient is final here
      head_ = {at(0), -1, C, embed_.vs.Vl, /*tied=*/stage().embed};
      xent_.vs = embed_.vs;
    }
    chunk_in_.resize(static_cast<size_t>(num_chunks()));
    chunk_out_.assign(static_cast<size_t>(num_chunks()), nullptr);
    dres_.resize(static_cast<size_t>(num_chunks()));
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
  int head_vocab_rows() const override { return stage().head ? embed_.vs.Vl : 0; }

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
    if (c == 0) {
      const StagedTokens tok = stage_tokens(inputs, targets, doc_ids, B, T, cfg_.vocab_size);
      tokens_ = tok.tokens;
      targets_d_ = tok.targets;
      doc_ids_ = tok.doc_ids;
      positions_ = tok.doc_ids ? tok.positions : nullptr;  // packed documents restart at 0
      all_positions_ = tok.positions;
    }
    kernels::Ops& k = ops();
    void* x = chunk_in_[static_cast<size_t>(c)].raw();
    if (chunk_embeds(c)) {
      if (sp_) {  // this rank's rows of the summed token rows, then their positions
        embed_.forward(*this, seq_.a.raw(), tokens_, N);
        sp_scatter(*this, x, seq_.a.raw(), N, cfg_.n_embd);
        pos_.forward(*this, x, all_positions_ + static_cast<int64_t>(tp_.rank()) * R, 1, R);
      } else {
        embed_.forward(*this, x, tokens_, N);
        pos_.forward(*this, x, positions_, B, T);
      }
    }
    const auto [l0, l1] = chunk_layers(c);
    for (int l = l0; l < l1; ++l) {
      Gpt2Block& b = blocks_[static_cast<size_t>(l)];
      enter_block(l, Pass::Forward);  // (ZeRO-3: gathers its parameters)
      b.ln1.forward(*this, x, R);
      const void* a_in = seq_.col_in(*this, b.ln1.out.raw());
      b.attn.forward(*this, seq_.row_out(b.res2.raw()), a_in, doc_ids_, B, T);
      seq_.row_done(*this, b.res2.raw(), b.attn.proj);
      k.residual_forward(b.res2.raw(), x, b.res2.raw(), NC);
      b.ln2.forward(*this, b.res2.raw(), R);
      const void* m_in = seq_.col_in(*this, b.ln2.out.raw());
      b.mlp.forward(*this, seq_.row_out(b.res3.raw()), m_in, N);
      seq_.row_done(*this, b.res3.raw(), b.mlp.proj);
      k.residual_forward(b.res3.raw(), b.res2.raw(), b.res3.raw(), NC);
      x = b.res3.raw();
    }
    live_ = l1 - 1;  // (recomputation: the shared internals hold the chunk's last block's)
    chunk_out_[static_cast<size_t>(c)] = x;
    if (!chunk_has_head(c)) return 0.0;
    lnf_.forward(*this, x, R);
    head_.forward(*this, logits_.raw(), seq_.col_in(*this, lnf_.out.raw()), N);  // (N, Vl) = lnf @ wte_l^T
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
      const void* head_in = seq_.col_in(*this, lnf_.out.raw());
      head_.backward(*this, scratch_.dln, dlogits_.raw(), head_in, N, ready);  // partial sums over slices
      dres_t.zero_();
      dln = seq_.col_grad(*this, scratch_);
      lnf_.backward(*this, dres, dln, chunk_out_[static_cast<size_t>(c)], R, ready);
    }
    const auto [l0, l1] = chunk_layers(c);
    for (int l = l1 - 1; l >= l0; --l) {
      const Gpt2Block& b = blocks_[static_cast<size_t>(l)];
      const void* x = l > l0 ? blocks_[static_cast<size_t>(l) - 1].res3.raw() : chunk_in_[static_cast<size_t>(c)].raw();
      enter_block(l, Pass::Backward);  // (ZeRO-3: its parameters; ZeRO-2/3: its gradient buffer)
      if (recompute() != Recompute::None && l != live_) recompute_block(l, x);
      // res3 = res2 + mlp(ln2(res2)): d(mlp) = d(res3) = dres; dres += the path through ln2
      const void* dout = seq_.row_grad(*this, dres);
      const void* m_in = seq_.col_in(*this, b.ln2.out.raw());
      b.mlp.backward(*this, scratch_, dout, m_in, N, ready);
      dln = seq_.col_grad(*this, scratch_);
      b.ln2.backward(*this, dres, dln, b.res2.raw(), R, ready);
      // res2 = x + attn(ln1(x))
      dout = seq_.row_grad(*this, dres);
      const void* a_in = seq_.col_in(*this, b.ln1.out.raw());
      b.attn.backward(*this, scratch_, dout, a_in, doc_ids_, B, T, ready);
      dln = seq_.col_grad(*this, scratch_);
      b.ln1.backward(*this, dres, dln, x, R, ready);
    }
    live_ = -1;
    if (chunk_embeds(c)) {
      const void* dx = seq_.row_grad(*this, dres);  // all rows: the embeddings' gradients are then complete
      pos_.backward(*this, dx, positions_, B, T, ready);
      embed_.backward(*this, dx, tokens_, N, ready);
    }
    // the caller's next host wait on the device (end of step) must not outlive a dead tp peer
    tp_.host_wait();
  }

  // ---- decoding (model.h): the forward above on the new positions only, layer by layer in
  // the shared DecodeScratch, attention against the per-layer key/value cache
  void begin_decode(int B, int max_len) override {
    MT_CHECK(stage().whole(), "decoding needs the whole model on one rank (parallel.pp = 1)");
    set_decode_shape(B, max_len);
    free_acts();
    const int NHl = cfg_.n_head / tp_.size();
    kv_cache_ = alloc_kv_cache(*this, cfg_.n_layer, B, NHl, max_len, cfg_.n_embd / cfg_.n_head);
  }

  void decode(const int32_t* tokens, int B, int n, float* logits_out, bool all_positions) override {
    sp_rows_ = false;  // decoding runs on all rows (all-reduces)
    const int past = start_decode(B, n);
    const int N = B * n, C = cfg_.n_embd, Cl = C / tp_.size(), Fl = 4 * C / tp_.size();
    const int64_t NC = static_cast<int64_t>(N) * C;
    dec_.ensure(*this, N, C, 3 * Cl, Cl, Fl, Fl, embed_.vs.Vl);
    ensure_token_buffers(N);
    const StagedTokens tok = stage_tokens(tokens, nullptr, nullptr, B, n, cfg_.vocab_size, past);
    kernels::Ops& k = ops();
    DecodeScratch& d = dec_;
    void* x = d.x.raw();
    embed_.forward(*this, x, tok.tokens, N);
    pos_.forward(*this, x, tok.positions, B, n);  // wpe[past + i]
    for (size_t l = 0; l < blocks_.size(); ++l) {
      const Gpt2Block& b = blocks_[l];
      enter_block(static_cast<int>(l), Pass::Forward);
      b.ln1.apply(*this, d.norm.raw(), d.mean.f32(), d.rstd.f32(), x, N);
      b.attn.decode(*this, d.out.raw(), d.norm.raw(), kv_cache_[2 * l].raw(), kv_cache_[2 * l + 1].raw(), d, B, n,
                    past, decode_max_len());
      k.residual_forward(x, x, d.out.raw(), NC);
      b.ln2.apply(*this, d.norm.raw(), d.mean.f32(), d.rstd.f32(), x, N);
      b.mlp.apply(*this, d.out.raw(), d.norm.raw(), N, d.h1.raw(), d.h2.raw());
      k.residual_forward(x, x, d.out.raw(), NC);
    }
    const int M = all_positions ? N : B;
    lnf_.apply(*this, d.norm.raw(), d.mean.f32(), d.rstd.f32(), decode_rows(*this, d, x, B, n, C, all_positions), M);
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
      const Gpt2Block& b = blocks_[static_cast<size_t>(held_[i])];
      if (i == 0 || recompute() != Recompute::Full)
        n += b.ln1.bytes() + b.attn.bytes() + b.res2.nbytes() + b.ln2.bytes() + b.mlp.bytes();
      if (i > 0 && recompute() == Recompute::Selective) n -= recomputed_bytes(b);
      n += b.res3.nbytes();
    }
    for (const Tensor* t : {&logits_, &dlogits_, &scratch_.dln, &scratch_.dmid, &scratch_.dmid2})
      if (t->defined()) n += t->nbytes();
    for (size_t c = 0; c < chunk_in_.size(); ++c) n += chunk_in_[c].nbytes() + dres_[c].nbytes();
    return n + lnf_.bytes() + xent_.bytes() + seq_.bytes();
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
    for (Gpt2Block& b : blocks_) {
      b.ln1.free();
      b.attn.free();
      b.ln2.free();
      b.mlp.free();
      b.res2 = b.res3 = Tensor();
    }
    lnf_.free();
    xent_.free();
  }

  // Recompute::Full: block l's forward from its input x into the shared internals, as
  // forward() ran it (same kernels, same tp all-reduces in the same order), up to what its
  // backward reads: the MLP's output projection (and all-reduce) and res3 are not needed.
  // Recompute::Selective: only its attention state (from its kept qkv) and GELU output (from
  // its kept fch) into the shared buffers; local kernels, no tp collective.
  void recompute_block(int l, const void* x) {
    Gpt2Block& b = blocks_[static_cast<size_t>(l)];
    const int N = B_ * T_, R = seq_.R;
    if (recompute() == Recompute::Selective) {
      b.attn.recompute_state(*this, doc_ids_, B_, T_);
      b.mlp.recompute_activation(*this, N);
      live_ = l;
      return;
    }
    b.ln1.forward(*this, x, R);
    const void* a_in = seq_.col_in(*this, b.ln1.out.raw());
    b.attn.forward(*this, seq_.row_out(b.res2.raw()), a_in, doc_ids_, B_, T_);
    seq_.row_done(*this, b.res2.raw(), b.attn.proj);
    ops().residual_forward(b.res2.raw(), x, b.res2.raw(), static_cast<int64_t>(R) * cfg_.n_embd);
    b.ln2.forward(*this, b.res2.raw(), R);
    b.mlp.forward_hidden(*this, seq_.col_in(*this, b.ln2.out.raw()), N);
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
      Gpt2Block& b = blocks_[static_cast<size_t>(held_[i])];
      Gpt2Block& first = blocks_[static_cast<size_t>(held_[0])];
      const bool own = i == 0 || recompute() == Recompute::None;  // else shares the first held block's
      if (!own && recompute() == Recompute::Full) {
        share_internals(b, first);
      } else {
        b.ln1.alloc(dev, W, R);
        b.attn.alloc(ops(), W, B, T, own);
        b.res2 = Tensor::empty({R, C}, W, dev);
        b.ln2.alloc(dev, W, R);
        b.mlp.alloc(dev, W, N, own);
        if (!own) share_recomputed(b, first);
      }
      b.res3 = Tensor::empty({R, C}, W, dev);
    }
    live_ = -1;
    if (stage().head) {
      lnf_.alloc(dev, W, R);
      logits_ = Tensor::empty({N, embed_.vs.Vl}, W, dev);
      dlogits_ = Tensor::empty({N, embed_.vs.Vl}, W, dev);
      xent_.alloc(dev, N);
    }
    const int64_t Cl = C / tp_.size(), Fl = 4 * C / tp_.size();
    scratch_.dln = Tensor::empty({N, C}, W, dev);
    scratch_.dmid = Tensor::empty({N * std::max(Cl, Fl)}, W, dev);
    scratch_.dmid2 = Tensor::empty({N * std::max(3 * Cl, Fl)}, W, dev);
    ensure_token_buffers(N);
  }

  VocabEmbedding embed_;
  PositionEmbedding pos_;
  std::vector<Gpt2Block> blocks_;
  LayerNormLayer lnf_;
  ColumnLinear head_;  // tied to the embedding
  VocabCrossEntropy xent_;
  // activations for the current (B, T)
  int B_ = 0, T_ = 0;
  int live_ = -1;  // recomputation: the block whose values the shared tensors hold (-1: none)
  std::vector<int> held_;  // the blocks this rank holds, ascending
  Tensor logits_, dlogits_;
  std::vector<Tensor> chunk_in_, dres_;  // per chunk: its input stream (R, C), d(stream) (R, C)
  std::vector<const void*> chunk_out_;   // per chunk: its output stream (the last block's res3)
  SeqParallel seq_;  // sequence parallelism: the residual stream's rows R, the gather buffers
  Scratch scratch_;
  DecodeScratch dec_;
  const int32_t* tokens_ = nullptr;
  const int32_t* targets_d_ = nullptr;
  const int32_t* doc_ids_ = nullptr;
  const int32_t* positions_ = nullptr;
  const int32_t* all_positions_ = nullptr;  // (sp) every row's position
};

}  // namespace

std::unique_ptr<Model> Gpt2Architecture::build(const ModelContext& ctx) const {
  return std::make_unique<Gpt2Model>(std::static_pointer_cast<const Gpt2Architecture>(shared_from_this()), ctx);
}

}  // namespace mt::parallel
