// What: the layers of blocks.h. Every kernel is a kernels::Ops call; `void*` activations are
// in the working dtype, `float*` statistics and gradients in fp32. Shapes: N = B*T tokens,
// an `l` suffix marks a tp rank's local slice.
#include "parallel/models/blocks.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace mt::parallel {

using core::Tensor;

namespace {
// The first n elements of a scratch tensor as an (n) tensor.
Tensor first(const Tensor& t, int64_t n) {
  MT_CHECK(n <= t.numel(), "scratch of {} elements used for {}", t.numel(), n);
  return t.view(0, {n});
}

// Sequence parallelism: a norm's weight gradient from this rank's rows is a partial sum. The
// ranks other than 0 zero it before the op (rank 0 keeps what earlier micro-batches
// accumulated) and the group sums it after, so every rank holds the accumulated full sum.
void begin_row_grad(Model& m, int i) {
  if (!m.sp_rows() || i < 0 || m.tp().rank() == 0) return;
  m.device().memset_zero(m.grad(i), static_cast<size_t>(m.params_info()[static_cast<size_t>(i)].numel) * sizeof(float));
}
void sum_row_grad(Model& m, int i) {
  if (m.sp_rows() && i >= 0) m.tp().sum_f32(m.grad(i), m.params_info()[static_cast<size_t>(i)].numel);
}
}  // namespace

// ------------------------------------------------------------------ linear layers
void ColumnLinear::forward(Model& m, void* out, const void* inp, int N) const {
  m.ops().matmul_forward(out, inp, m.wparam(w), b >= 0 ? m.wparam(b) : nullptr, N, C, OCl);
}

void ColumnLinear::backward(Model& m, Tensor& dinp, const void* dout, const void* inp, int N,
                            const GradReadyFn& ready) const {
  // the input is replicated: each rank's contribution is a partial sum over its columns.
  // Output rows held by several ranks (kv heads replicated over tp) get partial weight
  // gradients: summed over the group before they are final.
  dinp.zero_();
  m.begin_replicated_grad(w);
  m.ops().matmul_backward(dinp.raw(), m.grad(w), b >= 0 ? m.grad(b) : nullptr, dout, inp, m.wparam(w), N, C, OCl);
  m.sum_replicated_grad(w);
  report_ready(ready, b);
  if (!tied) report_ready(ready, w);
  if (!m.sp_rows()) m.tp().sum(dinp.raw(), static_cast<int64_t>(N) * C, m.working_dtype());
}

void RowLinear::forward(Model& m, void* out, const void* inp, int N) const {
  kernels::Ops& k = m.ops();
  k.matmul_forward(out, inp, m.wparam(w), nullptr, N, ICl, C);  // this rank's partial sum
  if (m.sp_rows()) return;  // the model reduce-scatters and adds the bias (sp_row_output)
  m.tp().sum(out, static_cast<int64_t>(N) * C, m.working_dtype());
  if (b >= 0) k.add_bias(out, m.wparam(b), N, C);
}

void RowLinear::backward(Model& m, Tensor& dinp, const void* dout, const void* inp, int N,
                         const GradReadyFn& ready) const {
  kernels::Ops& k = m.ops();
  if (b >= 0) k.bias_backward(m.grad(b), dout, N, C);
  dinp.zero_();
  k.matmul_backward(dinp.raw(), m.grad(w), nullptr, dout, inp, m.wparam(w), N, ICl, C);
  report_ready(ready, b);
  report_ready(ready, w);
}

// ------------------------------------------------------------------ layernorm
void LayerNormLayer::alloc(core::Device& dev, core::DType wdt, int64_t N) {
  out = Tensor::empty({N, C}, wdt, dev);
  mean = Tensor::empty({N}, core::DType::F32, dev);
  rstd = Tensor::empty({N}, core::DType::F32, dev);
}

void LayerNormLayer::apply(Model& m, void* y, float* mean_out, float* rstd_out, const void* x, int N) const {
  m.ops().layernorm_forward(y, mean_out, rstd_out, x, m.wparam(w), m.wparam(b), N, C);
}

void LayerNormLayer::backward(Model& m, void* dx, const void* dout, const void* x, int N,
                              const GradReadyFn& ready) const {
  begin_row_grad(m, w);
  begin_row_grad(m, b);
  m.ops().layernorm_backward(dx, m.grad(w), m.grad(b), dout, x, m.wparam(w), mean.f32(), rstd.f32(), N, C);
  sum_row_grad(m, w);
  sum_row_grad(m, b);
  report_ready(ready, b);
  report_ready(ready, w);
}

// ------------------------------------------------------------------ attention
void Gpt2Attention::alloc(kernels::Ops& k, core::DType wdt, int B, int T, bool with_state) {
  const int64_t N = static_cast<int64_t>(B) * T;
  core::Device& dev = k.device();
  qkv_out = Tensor::empty({N, 3 * Cl}, wdt, dev);
  att = with_state ? Tensor::empty({k.attention_state_elems(B, T, NHl)}, core::DType::F32, dev) : Tensor();
  atty = Tensor::empty({N, Cl}, wdt, dev);
}

void Gpt2Attention::forward(Model& m, void* out, const void* x, const int32_t* doc_ids, int B, int T) {
  const int N = B * T;
  qkv.forward(m, qkv_out.raw(), x, N);
  m.ops().attention_forward(atty.raw(), att.f32(), qkv_out.raw(), doc_ids, B, T, Cl, NHl, NHl);
  proj.forward(m, out, atty.raw(), N);
}

void Gpt2Attention::recompute_state(Model& m, const int32_t* doc_ids, int B, int T) {
  m.ops().attention_forward(atty.raw(), att.f32(), qkv_out.raw(), doc_ids, B, T, Cl, NHl, NHl);
}

void Gpt2Attention::backward(Model& m, Scratch& s, const void* dout, const void* x, const int32_t* doc_ids, int B,
                             int T, const GradReadyFn& ready) const {
  const int N = B * T;
  Tensor dproj_in = first(s.dmid, static_cast<int64_t>(N) * Cl);
  proj.backward(m, dproj_in, dout, atty.raw(), N, ready);
  Tensor dqkv = first(s.dmid2, static_cast<int64_t>(N) * 3 * Cl);
  dqkv.zero_();
  m.ops().attention_backward(dqkv.raw(), dproj_in.raw(), qkv_out.raw(), atty.raw(), att.f32(), doc_ids, B, T, Cl,
                             NHl, NHl);
  qkv.backward(m, s.dln, dqkv.raw(), x, N, ready);
}

void Gpt2Attention::decode(Model& m, void* out, const void* x, void* k, void* v, DecodeScratch& s, int B, int n,
                           int past, int max_len) const {
  const int N = B * n, HS = Cl / NHl;
  kernels::Ops& ops = m.ops();
  qkv.forward(m, s.qkv.raw(), x, N);
  ops.kv_cache_append(k, v, s.qkv.raw(), B, n, past, max_len, NHl, NHl, HS);
  ops.attention_decode(s.atty.raw(), s.qkv.raw(), k, v, B, n, past, max_len, NHl, NHl, HS);
  proj.forward(m, out, s.atty.raw(), N);
}

// ------------------------------------------------------------------ MLP
void GeluMlp::alloc(core::Device& dev, core::DType wdt, int64_t N, bool with_activation) {
  fch = Tensor::empty({N, Fl}, wdt, dev);
  fch_gelu = with_activation ? Tensor::empty({N, Fl}, wdt, dev) : Tensor();
}

void GeluMlp::apply(Model& m, void* out, const void* x, int N, void* h, void* h_gelu) const {
  fc.forward(m, h, x, N);
  m.ops().gelu_forward(h_gelu, h, static_cast<int64_t>(N) * Fl);
  proj.forward(m, out, h_gelu, N);
}

void GeluMlp::forward_hidden(Model& m, const void* x, int N) {
  fc.forward(m, fch.raw(), x, N);
  m.ops().gelu_forward(fch_gelu.raw(), fch.raw(), static_cast<int64_t>(N) * Fl);
}

void GeluMlp::recompute_activation(Model& m, int N) {
  m.ops().gelu_forward(fch_gelu.raw(), fch.raw(), static_cast<int64_t>(N) * Fl);
}

void GeluMlp::backward(Model& m, Scratch& s, const void* dout, const void* x, int N, const GradReadyFn& ready) const {
  const int64_t NF = static_cast<int64_t>(N) * Fl;
  Tensor dfch_gelu = first(s.dmid, NF);
  proj.backward(m, dfch_gelu, dout, fch_gelu.raw(), N, ready);
  Tensor dfch = first(s.dmid2, NF);
  dfch.zero_();
  m.ops().gelu_backward(dfch.raw(), fch.raw(), dfch_gelu.raw(), NF);
  fc.backward(m, s.dln, dfch.raw(), x, N, ready);
}

// ------------------------------------------------------------------ Llama blocks
void RmsNormLayer::alloc(core::Device& dev, core::DType wdt, int64_t N) {
  out = Tensor::empty({N, C}, wdt, dev);
  rstd = Tensor::empty({N}, core::DType::F32, dev);
}

void RmsNormLayer::apply(Model& m, void* y, float* rstd_out, const void* x, int N) const {
  m.ops().rmsnorm_forward(y, rstd_out, x, m.wparam(w), N, C, eps);
}

void RmsNormLayer::backward(Model& m, void* dx, const void* dout, const void* x, int N,
                            const GradReadyFn& ready) const {
  begin_row_grad(m, w);
  m.ops().rmsnorm_backward(dx, m.grad(w), dout, x, m.wparam(w), rstd.f32(), N, C);
  sum_row_grad(m, w);
  report_ready(ready, w);
}

void RopeTables::init(core::Device& dev, int max_pos, int HS_, double theta) {
  HS = HS_;
  const int H = HS / 2;
  std::vector<float> c(static_cast<size_t>(max_pos) * H), s(c.size());
  for (int p = 0; p < max_pos; ++p) {
    for (int i = 0; i < H; ++i) {
      // fp32 as transformers' LlamaRotaryEmbedding: inv_freq, then pos * inv_freq
      const float inv = 1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(HS));
      const float ang = static_cast<float>(p) * inv;
      c[static_cast<size_t>(p) * H + i] = static_cast<float>(std::cos(static_cast<double>(ang)));
      s[static_cast<size_t>(p) * H + i] = static_cast<float>(std::sin(static_cast<double>(ang)));
    }
  }
  cos = Tensor::empty({max_pos, H}, core::DType::F32, dev);
  sin = Tensor::empty({max_pos, H}, core::DType::F32, dev);
  dev.copy(cos.raw(), c.data(), c.size() * sizeof(float));
  dev.copy(sin.raw(), s.data(), s.size() * sizeof(float));
}

void LlamaAttention::alloc(kernels::Ops& k, core::DType wdt, int B, int T, bool with_state) {
  const int64_t N = static_cast<int64_t>(B) * T;
  core::Device& dev = k.device();
  qkv_out = Tensor::empty({N, qkv_width()}, wdt, dev);
  att = with_state ? Tensor::empty({k.attention_state_elems(B, T, NHl)}, core::DType::F32, dev) : Tensor();
  atty = Tensor::empty({N, static_cast<int64_t>(NHl) * HS}, wdt, dev);
}

void LlamaAttention::forward(Model& m, void* out, const void* x, const int32_t* pos, const int32_t* doc_ids, int B,
                             int T) {
  const int N = B * T;
  kernels::Ops& k = m.ops();
  qkv.forward(m, qkv_out.raw(), x, N);
  // q and k heads are adjacent at the start of each row: rotate NHl + NKVl heads
  k.rope_forward(qkv_out.raw(), rope->cos.f32(), rope->sin.f32(), pos, N, qkv_width(), NHl + NKVl, HS);
  k.attention_forward(atty.raw(), att.f32(), qkv_out.raw(), doc_ids, B, T, NHl * HS, NHl, NKVl);
  o.forward(m, out, atty.raw(), N);
}

void LlamaAttention::decode(Model& m, void* out, const void* x, const int32_t* pos, void* k, void* v,
                            DecodeScratch& s, int B, int n, int past, int max_len) const {
  const int N = B * n;
  kernels::Ops& ops = m.ops();
  qkv.forward(m, s.qkv.raw(), x, N);
  ops.rope_forward(s.qkv.raw(), rope->cos.f32(), rope->sin.f32(), pos, N, qkv_width(), NHl + NKVl, HS);
  ops.kv_cache_append(k, v, s.qkv.raw(), B, n, past, max_len, NHl, NKVl, HS);
  ops.attention_decode(s.atty.raw(), s.qkv.raw(), k, v, B, n, past, max_len, NHl, NKVl, HS);
  o.forward(m, out, s.atty.raw(), N);
}

void LlamaAttention::recompute_state(Model& m, const int32_t* doc_ids, int B, int T) {
  m.ops().attention_forward(atty.raw(), att.f32(), qkv_out.raw(), doc_ids, B, T, NHl * HS, NHl, NKVl);
}

void LlamaAttention::backward(Model& m, Scratch& s, const void* dout, const void* x, const int32_t* pos,
                              const int32_t* doc_ids, int B, int T, const GradReadyFn& ready) const {
  const int N = B * T;
  kernels::Ops& k = m.ops();
  Tensor datty = first(s.dmid, static_cast<int64_t>(N) * NHl * HS);
  o.backward(m, datty, dout, atty.raw(), N, ready);
  Tensor dqkv = first(s.dmid2, static_cast<int64_t>(N) * qkv_width());
  dqkv.zero_();
  k.attention_backward(dqkv.raw(), datty.raw(), qkv_out.raw(), atty.raw(), att.f32(), doc_ids, B, T, NHl * HS, NHl,
                       NKVl);
  k.rope_backward(dqkv.raw(), rope->cos.f32(), rope->sin.f32(), pos, N, qkv_width(), NHl + NKVl, HS);
  qkv.backward(m, s.dln, dqkv.raw(), x, N, ready);  // (sums the shared kv heads' weight gradient)
}

void SwiGluMlp::alloc(core::Device& dev, core::DType wdt, int64_t N, bool with_activation) {
  gu = Tensor::empty({N, 2 * static_cast<int64_t>(Fl)}, wdt, dev);
  act = with_activation ? Tensor::empty({N, Fl}, wdt, dev) : Tensor();
}

void SwiGluMlp::apply(Model& m, void* out, const void* x, int N, void* gu_out, void* act_out) const {
  gate_up.forward(m, gu_out, x, N);
  m.ops().swiglu_forward(act_out, gu_out, N, Fl);
  down.forward(m, out, act_out, N);
}

void SwiGluMlp::forward_hidden(Model& m, const void* x, int N) {
  gate_up.forward(m, gu.raw(), x, N);
  m.ops().swiglu_forward(act.raw(), gu.raw(), N, Fl);
}

void SwiGluMlp::recompute_activation(Model& m, int N) {
  m.ops().swiglu_forward(act.raw(), gu.raw(), N, Fl);
}

void SwiGluMlp::backward(Model& m, Scratch& s, const void* dout, const void* x, int N,
                         const GradReadyFn& ready) const {
  Tensor dact = first(s.dmid, static_cast<int64_t>(N) * Fl);
  down.backward(m, dact, dout, act.raw(), N, ready);
  Tensor dgu = first(s.dmid2, static_cast<int64_t>(N) * 2 * Fl);
  dgu.zero_();
  m.ops().swiglu_backward(dgu.raw(), gu.raw(), dact.raw(), N, Fl);
  gate_up.backward(m, s.dln, dgu.raw(), x, N, ready);
}

// ------------------------------------------------------------------ embeddings
VocabSlice VocabSlice::of(const ParamInfo& e, int tp, int tp_rank) {
  VocabSlice v;
  v.V = static_cast<int>(e.full_shape[0]);
  v.Vp = static_cast<int>(e.partition.padded_rows(e.full_shape, tp));
  v.Vl = static_cast<int>(e.local_shape[0]);
  v.v_start = tp_rank * v.Vl;
  v.v_valid = std::max(0, std::min(v.Vl, v.V - v.v_start));
  return v;
}

void VocabEmbedding::forward(Model& m, void* x, const int32_t* tokens, int N) const {
  m.ops().token_embedding_forward(x, tokens, m.wparam(w), N, C, vs.v_start, vs.Vl);
  if (!m.sp_rows()) m.tp().sum(x, static_cast<int64_t>(N) * C, m.working_dtype());
}

void VocabEmbedding::backward(Model& m, const void* dx, const int32_t* tokens, int N, const GradReadyFn& ready) const {
  m.ops().token_embedding_backward(m.grad(w), dx, tokens, N, C, vs.v_start, vs.Vl);
  report_ready(ready, w);
}

void PositionEmbedding::forward(Model& m, void* x, const int32_t* pos, int B, int T) const {
  m.ops().position_embedding_forward(x, m.wparam(w), pos, B, T, C);
}

void PositionEmbedding::backward(Model& m, const void* dx, const int32_t* pos, int B, int T,
                                 const GradReadyFn& ready) const {
  m.ops().position_embedding_backward(m.grad(w), dx, pos, B, T, C);
  report_ready(ready, w);
}

// ------------------------------------------------------------------ sequence parallelism
const void* sp_gather(Model& m, Tensor& full, const void* local, int N, int C) {
  const int64_t n = static_cast<int64_t>(N / m.tp().size()) * C;
  MT_CHECK(full.numel() >= n * m.tp().size(), "sequence-parallel buffer of {} elements for {} rows", full.numel(), N);
  m.tp().gather(local, full.raw(), n, m.working_dtype());
  return full.raw();
}

void sp_scatter(Model& m, void* local, const void* part, int N, int C) {
  m.tp().scatter_sum(part, local, static_cast<int64_t>(N / m.tp().size()) * C, m.working_dtype());
}

void sp_row_output(Model& m, void* local, const void* part, const RowLinear& row, int N) {
  sp_scatter(m, local, part, N, row.C);
  if (row.b >= 0) m.ops().add_bias(local, m.wparam(row.b), N / m.tp().size(), row.C);
}

void SeqParallel::alloc(Model& m, int N_, int C_) {
  on = m.seq_parallel();
  N = N_, C = C_, R = on ? N / m.tp().size() : N;
  if (!on) return free();
  a = Tensor::empty({static_cast<int64_t>(N), C}, m.working_dtype(), m.device());
  b = Tensor::empty({static_cast<int64_t>(N), C}, m.working_dtype(), m.device());
  dln = Tensor::empty({static_cast<int64_t>(R), C}, m.working_dtype(), m.device());
}

const void* SeqParallel::col_in(Model& m, const void* y) { return on ? sp_gather(m, a, y, N, C) : y; }

void SeqParallel::row_done(Model& m, void* out, const RowLinear& r) {
  if (on) sp_row_output(m, out, b.raw(), r, N);
}

const void* SeqParallel::row_grad(Model& m, const void* dres) { return on ? sp_gather(m, b, dres, N, C) : dres; }

const void* SeqParallel::col_grad(Model& m, const Scratch& s) {
  if (!on) return s.dln.raw();
  sp_scatter(m, dln.raw(), s.dln.raw(), N, C);
  return dln.raw();
}

// ------------------------------------------------------------------ cross-entropy
void VocabCrossEntropy::alloc(core::Device& dev, int64_t N) {
  rowmax = Tensor::empty({N}, core::DType::F32, dev);
  sumexp = Tensor::empty({N}, core::DType::F32, dev);
  tgt_logit = Tensor::empty({N}, core::DType::F32, dev);
  losses = Tensor::empty({N}, core::DType::F32, dev);
}

void VocabCrossEntropy::forward(Model& m, const void* logits, const int32_t* targets, int N) {
  kernels::Ops& k = m.ops();
  // global max, global sum of exp, the owner's target logit
  k.xent_row_max(rowmax.f32(), logits, N, vs.Vl, vs.v_valid);
  m.tp().max_f32(rowmax.f32(), N);
  k.xent_sum_exp(sumexp.f32(), logits, rowmax.f32(), N, vs.Vl, vs.v_valid);
  m.tp().sum_f32(sumexp.f32(), N);
  k.xent_target_logit(tgt_logit.f32(), logits, targets, N, vs.Vl, vs.v_start, vs.v_valid);
  m.tp().sum_f32(tgt_logit.f32(), N);
  kd_on = m.distill() != nullptr;
  if (!kd_on) {
    k.xent_loss(losses.f32(), rowmax.f32(), sumexp.f32(), tgt_logit.f32(), N);
    return;
  }
  // distillation: the cross-entropy into tgt_logit (xent_loss may alias it), then the teacher's
  // global row max, the three sums over the vocabulary, and the mixed loss
  kd = *m.distill();
  MT_CHECK(kd.teacher_logits != nullptr, "distillation without the teacher's logits");
  if (!tmax.defined() || tmax.numel() < N) {
    tmax = core::Tensor::empty({N}, core::DType::F32, m.device());
    kd_sums = core::Tensor::empty({3 * static_cast<int64_t>(N)}, core::DType::F32, m.device());
    kl = core::Tensor::empty({N}, core::DType::F32, m.device());
  }
  k.xent_loss(tgt_logit.f32(), rowmax.f32(), sumexp.f32(), tgt_logit.f32(), N);
  k.xent_row_max(tmax.f32(), kd.teacher_logits, N, vs.Vl, vs.v_valid);
  m.tp().max_f32(tmax.f32(), N);
  k.kd_sums(kd_sums.f32(), logits, kd.teacher_logits, rowmax.f32(), tmax.f32(), N, vs.Vl, vs.v_valid,
            kd.temperature);
  m.tp().sum_f32(kd_sums.f32(), 3 * N);
  k.kd_loss(losses.f32(), kl.f32(), tgt_logit.f32(), kd_sums.f32(), rowmax.f32(), tmax.f32(), N, kd.alpha,
            kd.temperature);
  m.note_distill_parts(tgt_logit.f32(), kl.f32());
}

void VocabCrossEntropy::backward(Model& m, void* dlogits, const void* logits, const int32_t* targets,
                                 const float* dloss, int N) const {
  m.ops().xent_backward(dlogits, logits, rowmax.f32(), sumexp.f32(), targets, dloss, N, vs.Vl, vs.v_start,
                        vs.v_valid);
  if (kd_on) {
    m.ops().kd_backward(dlogits, logits, kd.teacher_logits, rowmax.f32(), tmax.f32(), kd_sums.f32(), dloss, N, vs.Vl,
                        vs.v_valid, kd.alpha, kd.temperature);
  }
}

// ------------------------------------------------------------------ decoding
void DecodeScratch::ensure(Model& m, int64_t N, int C, int qkv_w, int att_w, int h1_w, int h2_w, int Vl) {
  if (N <= rows) return;
  core::Device& dev = m.device();
  m.tp().host_wait();
  dev.synchronize();  // earlier decode calls may still read the buffers replaced here
  const core::DType W = m.working_dtype(), F = core::DType::F32;
  rows = N;
  x = Tensor::empty({N, C}, W, dev);
  norm = Tensor::empty({N, C}, W, dev);
  out = Tensor::empty({N, C}, W, dev);
  last = Tensor::empty({N, C}, W, dev);
  mean = Tensor::empty({N}, F, dev);
  rstd = Tensor::empty({N}, F, dev);
  qkv = Tensor::empty({N, qkv_w}, W, dev);
  atty = Tensor::empty({N, att_w}, W, dev);
  h1 = Tensor::empty({N, h1_w}, W, dev);
  h2 = Tensor::empty({N, h2_w}, W, dev);
  logits = Tensor::empty({N, Vl}, W, dev);
  logits32 = W == F ? logits : Tensor::empty({N, Vl}, F, dev);
  gathered = m.tp().size() > 1 ? Tensor::empty({m.tp().size() * N * Vl}, F, dev) : logits32;
}

std::vector<Tensor> alloc_kv_cache(Model& m, int n_layer, int B, int NKVl, int max_len, int HS) {
  std::vector<Tensor> cache;
  for (int l = 0; l < 2 * n_layer; ++l)
    cache.push_back(Tensor::empty({B, NKVl, max_len, HS}, m.working_dtype(), m.device()));
  return cache;
}

const void* decode_rows(Model& m, DecodeScratch& s, const void* x, int B, int n, int C, bool all_positions) {
  if (all_positions || n == 1) return x;
  const size_t row_bytes = static_cast<size_t>(C) * core::dtype_size(m.working_dtype());
  for (int b = 0; b < B; ++b) {
    m.device().copy_async(static_cast<char*>(s.last.raw()) + b * row_bytes,
                          static_cast<const char*>(x) + (static_cast<int64_t>(b) * n + n - 1) * row_bytes, row_bytes);
  }
  return s.last.raw();
}

void decode_logits(Model& m, const ColumnLinear& head, const VocabSlice& vs, DecodeScratch& s, const void* y, int M,
                   float* out) {
  const int tp = m.tp().size();
  const int64_t local = static_cast<int64_t>(M) * vs.Vl;
  head.forward(m, s.logits.raw(), y, M);  // (M, Vl) this rank's vocabulary rows
  if (m.working_dtype() != core::DType::F32)
    m.ops().cast(s.logits32.raw(), core::DType::F32, s.logits.raw(), m.working_dtype(), local);
  // rank r's block (M, Vl) holds padded vocabulary columns [r Vl, (r + 1) Vl)
  if (tp > 1) m.tp().gather_f32(s.logits32.f32(), s.gathered.f32(), local);
  s.host.resize(static_cast<size_t>(tp * local));
  m.device().copy(s.host.data(), s.gathered.f32(), s.host.size() * sizeof(float));
  for (int r = 0; r < tp; ++r) {
    const int v0 = r * vs.Vl;
    const int valid = std::max(0, std::min(vs.Vl, vs.V - v0));
    for (int i = 0; i < M; ++i) {
      const float* src = s.host.data() + (static_cast<int64_t>(r) * M + i) * vs.Vl;
      std::copy(src, src + valid, out + static_cast<int64_t>(i) * vs.V + v0);
    }
  }
}

}  // namespace mt::parallel
