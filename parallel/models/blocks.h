// What: the reusable tensor-parallel layers models are composed of, each with an explicit
// forward and backward (llm.c style) over N = B*T tokens of width C. Megatron's partition of
// a linear Y = X A (A = W^T, W stored (out, in) like nn.Linear):
//   ColumnLinear  W split by rows (Partition::rows, fused blocks allowed): rank r computes its
//                 output columns Y_r = X A_r from the replicated X. Forward: no communication.
//                 Backward: dX = sum_r dY_r A_r^T, an all-reduce over the tp group.
//   RowLinear     W split by columns (Partition::cols), X split by columns: Y = sum_r X_r A_r.
//                 Forward: all-reduce of Y, then the replicated bias. Backward: none (dY is
//                 replicated; dX_r = dY A_r^T).
//   A ColumnLinear feeding a RowLinear needs no communication between them, so an attention
//   or MLP block costs one all-reduce forward and one backward.
//   VocabEmbedding  vocabulary rows split (Partition::vocab): x = sum_r onehot(tokens)_r E_r,
//                 an all-reduce; PositionEmbedding: learned positions, replicated.
//   VocabCrossEntropy  the loss over vocabulary-sliced logits: a max all-reduce, a sum-of-exp
//                 all-reduce and a target-logit all-reduce; (tokens x vocab) never exists on
//                 one rank.
//   Sequence parallelism (Model::sp_rows(), parallel.sp): the residual stream and the norms
//                 hold this rank's N/tp rows. ColumnLinear's input is all-gathered by the
//                 model (sp_gather) and its input gradient left a partial sum the model
//                 reduce-scatters (sp_scatter); RowLinear's output is left a partial sum the
//                 model reduce-scatters, then adds the bias (sp_row_output), and its output
//                 gradient is gathered by the model; VocabEmbedding leaves the partial rows to
//                 be reduce-scattered; norms sum their weight gradients over the group.
//   LayerNormLayer, Gpt2Attention (causal, heads split across ranks), GeluMlp (GPT-2);
//   RmsNormLayer, LlamaAttention (grouped kv heads, rotary positions), SwiGluMlp (Llama).
// Parameters are indices into the Model's flat buffers; layers read the working copy
// (Model::wparam), accumulate fp32 gradients (Model::grad) and report each parameter's
// gradient final through `ready` in the order they finish. Activations a layer keeps for its
// backward are its own tensors; backward scratch is shared across layers (Scratch).
// Decoding (Model::begin_decode / decode): the same layers run without keeping activations,
// through their stateless apply() (outputs in a DecodeScratch shared by every layer), and the
// attention layers' decode() reads and appends a per-layer key/value cache (KvCache).
// Why: a second architecture composes these instead of copying a model file.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "parallel/models/model.h"

namespace mt::parallel {

struct DecodeScratch;

// Notifies the hook, if any, that parameter i's gradient is final.
inline void report_ready(const GradReadyFn& ready, int i) {
  if (ready && i >= 0) ready(i);
}

// Column-parallel linear: out (N, OCl) = inp (N, C) @ W_l^T + b_l. b may be -1 (no bias).
// tied: W is another layer's parameter whose gradient is not final here (no ready report).
struct ColumnLinear {
  int w = -1, b = -1;
  int C = 0, OCl = 0;
  bool tied = false;
  void forward(Model& m, void* out, const void* inp, int N) const;
  // dinp (N, C) = the all-reduced input gradient (overwritten); W and b gradients accumulate.
  void backward(Model& m, core::Tensor& dinp, const void* dout, const void* inp, int N, const GradReadyFn& ready) const;
};

// Row-parallel linear: out (N, C) = sum over tp of inp_l (N, ICl) @ W_l^T, + b (replicated).
struct RowLinear {
  int w = -1, b = -1;
  int ICl = 0, C = 0;
  void forward(Model& m, void* out, const void* inp, int N) const;
  // dinp (N, ICl) = the local input gradient (overwritten); dout (N, C) is replicated.
  void backward(Model& m, core::Tensor& dinp, const void* dout, const void* inp, int N, const GradReadyFn& ready) const;
};

// LayerNorm (eps 1e-5) with weight w and bias b over C; keeps out, mean, rstd.
struct LayerNormLayer {
  LayerNormLayer() = default;
  LayerNormLayer(int w_, int b_, int C_) : w(w_), b(b_), C(C_) {}
  int w = -1, b = -1, C = 0;
  core::Tensor out, mean, rstd;
  void alloc(core::Device& dev, core::DType wdt, int64_t N);
  void free() { out = mean = rstd = core::Tensor(); }
  void forward(Model& m, const void* x, int N) { apply(m, out.raw(), mean.f32(), rstd.f32(), x, N); }
  // forward into given buffers: y (N, C), mean, rstd (N) fp32
  void apply(Model& m, void* y, float* mean_out, float* rstd_out, const void* x, int N) const;
  // dx (N, C) += the input gradient of dout (N, C); x is the forward's input.
  void backward(Model& m, void* dx, const void* dout, const void* x, int N, const GradReadyFn& ready) const;
  size_t bytes() const { return out.nbytes() + mean.nbytes() + rstd.nbytes(); }
};

// Backward scratch shared by the blocks of one model (sized for the largest use).
struct Scratch {
  core::Tensor dln;       // (N, C): gradient of a block's normalised input, all-reduced
  core::Tensor dmid;      // (N, max local inner width): a row-parallel input gradient
  core::Tensor dmid2;     // (N, max local inner width): one op further back
};

// Causal self-attention with NHl local heads of HS channels (Cl = NHl * HS): fused q|k|v
// column-parallel, attention over the local heads, output projection row-parallel.
struct Gpt2Attention {
  ColumnLinear qkv;  // OCl = 3 Cl
  RowLinear proj;    // ICl = Cl
  int NHl = 0, Cl = 0;
  core::Tensor qkv_out, att, atty;  // (N, 3Cl), attention state, (N, Cl)
  // with_state false: att is left for the caller to set (Recompute::Selective shares one)
  void alloc(kernels::Ops& k, core::DType wdt, int B, int T, bool with_state = true);
  void free() { qkv_out = att = atty = core::Tensor(); }
  // out (N, C) = the block's output (all-reduced, bias added); x the normalised input.
  void forward(Model& m, void* out, const void* x, const int32_t* doc_ids, int B, int T);
  // Decoding n new positions per row after `past` cached ones: out (B*n, C) as forward's for
  // those rows; k, v: this layer's cache (B, NHl, max_len, HS), appended to.
  void decode(Model& m, void* out, const void* x, void* k, void* v, DecodeScratch& s, int B, int n, int past,
              int max_len) const;
  // Recompute::Selective: att again from the kept qkv_out, by the forward's attention kernel
  // (atty is rewritten with the same values, so the backward reads a consistent pair)
  void recompute_state(Model& m, const int32_t* doc_ids, int B, int T);
  // dx (scratch.dln) = the all-reduced gradient of x, from dout (N, C).
  void backward(Model& m, Scratch& s, const void* dout, const void* x, const int32_t* doc_ids, int B, int T,
                const GradReadyFn& ready) const;
  size_t bytes() const { return qkv_out.nbytes() + att.nbytes() + atty.nbytes(); }
};

// MLP: fc column-parallel (Fl = F / tp), GELU on the local slice, proj row-parallel.
struct GeluMlp {
  ColumnLinear fc;
  RowLinear proj;
  int Fl = 0;
  core::Tensor fch, fch_gelu;  // (N, Fl) each
  // with_activation false: fch_gelu is left for the caller to set (Recompute::Selective)
  void alloc(core::Device& dev, core::DType wdt, int64_t N, bool with_activation = true);
  void free() { fch = fch_gelu = core::Tensor(); }
  void forward(Model& m, void* out, const void* x, int N) { apply(m, out, x, N, fch.raw(), fch_gelu.raw()); }
  // forward with the hidden activations in given buffers h, h_gelu (N, Fl)
  void apply(Model& m, void* out, const void* x, int N, void* h, void* h_gelu) const;
  // the forward up to what backward reads (fch, fch_gelu), without the output projection and
  // its all-reduce: activation recomputation (Recompute::Full)
  void forward_hidden(Model& m, const void* x, int N);
  // fch_gelu again from the kept fch (Recompute::Selective)
  void recompute_activation(Model& m, int N);
  void backward(Model& m, Scratch& s, const void* dout, const void* x, int N, const GradReadyFn& ready) const;
  size_t bytes() const { return fch.nbytes() + fch_gelu.nbytes(); }
};

// RMSNorm (Llama) with weight w over C; keeps out, rstd.
struct RmsNormLayer {
  RmsNormLayer() = default;
  RmsNormLayer(int w_, int C_, float eps_) : w(w_), C(C_), eps(eps_) {}
  int w = -1, C = 0;
  float eps = 1e-5f;
  core::Tensor out, rstd;
  void alloc(core::Device& dev, core::DType wdt, int64_t N);
  void free() { out = rstd = core::Tensor(); }
  void forward(Model& m, const void* x, int N) { apply(m, out.raw(), rstd.f32(), x, N); }
  void apply(Model& m, void* y, float* rstd_out, const void* x, int N) const;
  // dx (N, C) += the input gradient of dout (N, C); x is the forward's input.
  void backward(Model& m, void* dx, const void* dout, const void* x, int N, const GradReadyFn& ready) const;
  size_t bytes() const { return out.nbytes() + rstd.nbytes(); }
};

// Rotary tables of a model: cos, sin (max_pos, HS/2) fp32 on the device, computed once as
// Hugging Face does (inv_freq = 1 / theta^(2i/HS) and angle = pos * inv_freq in fp32).
struct RopeTables {
  core::Tensor cos, sin;
  int HS = 0;
  void init(core::Device& dev, int max_pos, int HS, double theta);
};

// Causal self-attention with grouped kv heads (Llama): fused q|k|v column-parallel by heads
// (NHl query heads, NKVl kv heads of HS channels on this rank; kv heads fewer than tp ranks
// are replicated, their weight gradient summed over the group), rotary embedding of q and k
// at each token's position, attention, o row-parallel. No biases.
struct LlamaAttention {
  ColumnLinear qkv;  // OCl = (NHl + 2 NKVl) HS
  RowLinear o;       // ICl = NHl HS
  int NHl = 0, NKVl = 0, HS = 0;
  const RopeTables* rope = nullptr;
  core::Tensor qkv_out, att, atty;  // (N, (NHl + 2 NKVl) HS) rotated, attention state, (N, NHl HS)
  int qkv_width() const { return (NHl + 2 * NKVl) * HS; }
  // with_state false: att is left for the caller to set (Recompute::Selective shares one)
  void alloc(kernels::Ops& k, core::DType wdt, int B, int T, bool with_state = true);
  void free() { qkv_out = att = atty = core::Tensor(); }
  // out (N, C) = the block's output (all-reduced); x the normalised input; pos (N) positions.
  void forward(Model& m, void* out, const void* x, const int32_t* pos, const int32_t* doc_ids, int B, int T);
  // Decoding n new positions per row (pos (B*n): past + i) after `past` cached ones; k, v:
  // this layer's cache (B, NKVl, max_len, HS), appended to (rotated keys, as forward's).
  void decode(Model& m, void* out, const void* x, const int32_t* pos, void* k, void* v, DecodeScratch& s, int B,
              int n, int past, int max_len) const;
  // Recompute::Selective: att again from the kept (rotated) qkv_out, by the forward's
  // attention kernel (atty rewritten with the same values)
  void recompute_state(Model& m, const int32_t* doc_ids, int B, int T);
  // dx (scratch.dln) = the all-reduced gradient of x, from dout (N, C).
  void backward(Model& m, Scratch& s, const void* dout, const void* x, const int32_t* pos, const int32_t* doc_ids,
                int B, int T, const GradReadyFn& ready) const;
  size_t bytes() const { return qkv_out.nbytes() + att.nbytes() + atty.nbytes(); }
};

// SwiGLU MLP (Llama): down(silu(gate(x)) * up(x)); gate|up fused column-parallel (local rows
// [gate_l | up_l], Fl = F / tp each), down row-parallel. No biases.
struct SwiGluMlp {
  ColumnLinear gate_up;  // OCl = 2 Fl
  RowLinear down;        // ICl = Fl
  int Fl = 0;
  core::Tensor gu, act;  // (N, 2Fl), (N, Fl)
  // with_activation false: act is left for the caller to set (Recompute::Selective)
  void alloc(core::Device& dev, core::DType wdt, int64_t N, bool with_activation = true);
  void free() { gu = act = core::Tensor(); }
  void forward(Model& m, void* out, const void* x, int N) { apply(m, out, x, N, gu.raw(), act.raw()); }
  void apply(Model& m, void* out, const void* x, int N, void* gu_out, void* act_out) const;
  // the forward up to what backward reads (gu, act): activation recomputation
  void forward_hidden(Model& m, const void* x, int N);
  // act again from the kept gu (Recompute::Selective)
  void recompute_activation(Model& m, int N);
  void backward(Model& m, Scratch& s, const void* dout, const void* x, int N, const GradReadyFn& ready) const;
  size_t bytes() const { return gu.nbytes() + act.nbytes(); }
};

// The vocabulary slice of a tp rank: rows [v_start, v_start + Vl) of the padded vocabulary,
// of which v_valid are real tokens (< V).
struct VocabSlice {
  int V = 0, Vp = 0, Vl = 0, v_start = 0, v_valid = 0;
  static VocabSlice of(const ParamInfo& embedding, int tp, int tp_rank);
};

// Token embedding over a vocabulary-parallel table w (Vl, C): x (N, C) = summed over tp.
struct VocabEmbedding {
  int w = -1, C = 0;
  VocabSlice vs;
  void forward(Model& m, void* x, const int32_t* tokens, int N) const;
  void backward(Model& m, const void* dx, const int32_t* tokens, int N, const GradReadyFn& ready) const;
};

// Learned positions w (maxT, C), replicated: x (B, T, C) += w[pos] (pos (B, T) device ids,
// or null for t).
struct PositionEmbedding {
  int w = -1, C = 0;
  void forward(Model& m, void* x, const int32_t* pos, int B, int T) const;
  void backward(Model& m, const void* dx, const int32_t* pos, int B, int T, const GradReadyFn& ready) const;
};

// A model's sequence-parallel state for N = B*T rows of width C (on: ModelContext::sp; off:
// every function is the identity and nothing is allocated). R = N/tp rows of the residual
// stream on this rank. Each function issues at most one tp collective: call them in separate
// statements so every rank issues them in the same order.
struct SeqParallel {
  bool on = false;
  int N = 0, C = 0, R = 0;
  core::Tensor a, b, dln;  // (N, C) gathered rows, (N, C) partial output or gathered gradient, (R, C)
  void alloc(Model& m, int N, int C);
  void free() { a = b = dln = core::Tensor(); }
  size_t bytes() const { return a.defined() ? a.nbytes() + b.nbytes() + dln.nbytes() : 0; }
  // The input (N, C) of a column-parallel linear from the normalised rows y (R, C).
  const void* col_in(Model& m, const void* y);
  // Where a row-parallel linear whose output belongs in out (R, C) writes; then row_done puts
  // this rank's rows of the sum, plus the bias, into out.
  void* row_out(void* out) { return on ? b.raw() : out; }
  void row_done(Model& m, void* out, const RowLinear& r);
  // The output gradient (N, C) of a row-parallel linear from the residual gradient (R, C).
  const void* row_grad(Model& m, const void* dres);
  // The column-parallel input gradient s.dln (N, C) (partial sums) as this rank's rows (R, C).
  const void* col_grad(Model& m, const Scratch& s);
};

// Sequence parallelism (see the top): full (at least N x C) = every rank's local rows
// (N/tp, C) in rank order, returns full.raw(); local (N/tp, C) = this rank's rows of the
// partial sums part (N, C) summed over tp; sp_row_output: that for a RowLinear's partial
// output, plus its bias.
const void* sp_gather(Model& m, core::Tensor& full, const void* local, int N, int C);
void sp_scatter(Model& m, void* local, const void* part, int N, int C);
void sp_row_output(Model& m, void* local, const void* part, const RowLinear& row, int N);

// Cross-entropy over vocabulary-sliced logits (N, Vl): per-token losses (N) fp32. With the
// model's distill() set (Model::set_distill) the losses are distillation's mix of the
// cross-entropy and the KL divergence from the teacher's logits of the same vocabulary slice
// (kernels/cpu/distill.cc), whose buffers are allocated on the first distilled forward; the
// backward uses the target of its forward.
struct VocabCrossEntropy {
  VocabSlice vs;
  core::Tensor rowmax, sumexp, tgt_logit, losses;  // (N) fp32 each
  core::Tensor tmax, kd_sums, kl;                   // distillation: (N), (3, N), (N) fp32
  DistillTarget kd;                                 // of the last forward
  bool kd_on = false;
  void alloc(core::Device& dev, int64_t N);
  void free() { rowmax = sumexp = tgt_logit = losses = tmax = kd_sums = kl = core::Tensor(); }
  size_t bytes() const {
    size_t n = rowmax.defined() ? rowmax.nbytes() + sumexp.nbytes() + tgt_logit.nbytes() + losses.nbytes() : 0;
    if (tmax.defined()) n += tmax.nbytes() + kd_sums.nbytes() + kl.nbytes();
    return n;
  }
  void forward(Model& m, const void* logits, const int32_t* targets, int N);
  // dlogits (N, Vl) written from the per-token loss weights dloss (N).
  void backward(Model& m, void* dlogits, const void* logits, const int32_t* targets, const float* dloss,
                int N) const;
};

// ------------------------------------------------------------------ decoding
// The buffers of one decode call of N = B * n rows, shared by every layer (grown on demand;
// widths are the largest of any layer): the residual stream x, a normalised copy, its
// statistics, a sub-block's output, the attention's qkv and output, two MLP hiddens, and the
// head's logits (local slice, fp32 copy, gathered over tp).
struct DecodeScratch {
  core::Tensor x, norm, out, mean, rstd, qkv, atty, h1, h2, last;
  core::Tensor logits, logits32, gathered;
  std::vector<float> host;  // the gathered logits on the host
  int64_t rows = 0;
  // Sizes for N rows of widths C (residual), qkv_w, att_w (attention), h1_w, h2_w (MLP), and
  // the head's Vl local vocabulary rows over tp ranks.
  void ensure(Model& m, int64_t N, int C, int qkv_w, int att_w, int h1_w, int h2_w, int Vl);
  void free() { *this = DecodeScratch(); }
};

// The k and v caches of n_layer layers, (B, NKVl, max_len, HS) each, in the working dtype.
std::vector<core::Tensor> alloc_kv_cache(Model& m, int n_layer, int B, int NKVl, int max_len, int HS);

// The rows of the residual stream x (B * n, C) whose logits a decode call returns: all of them
// (all_positions, or n == 1), else each batch row's last (b * n + n - 1), copied to s.last.
// Returns the (M, C) rows, M = B * n or B.
const void* decode_rows(Model& m, DecodeScratch& s, const void* x, int B, int n, int C, bool all_positions);

// The head on y (M, C) (the final normalised rows): this rank's logits through `head`, then
// the full vocabulary gathered over the tp group into out: host (M, V) fp32, padding dropped.
void decode_logits(Model& m, const ColumnLinear& head, const VocabSlice& vs, DecodeScratch& s, const void* y, int M,
                   float* out);

}  // namespace mt::parallel
