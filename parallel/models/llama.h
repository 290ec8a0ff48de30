// What: the Llama family (Llama 2/3, Mistral, Qwen2-style dense models), model.arch = llama,
// with the semantics of Hugging Face's LlamaForCausalLM so imported weights need no maths of
// their own:
//   embedding  vocab-parallel token rows (summed over tp); no learned positions
//   block l    h   = x + o(attn(rope(q, k), v))      on attn_norm(x), RMSNorm with a weight
//              out = h + down(silu(gate(.)) * up(.))  on mlp_norm(h)
//              q|k|v column-parallel by heads, n_kv_head <= n_head kv heads (grouped-query;
//              replicated on tp / n_kv_head ranks when tp > n_kv_head, Megatron's rule),
//              rotary embedding (rotate-half, theta = model.rope_theta) at each token's
//              position (restarting at each packed document); o and down row-parallel;
//              gate|up fused column-parallel; no biases anywhere
//   head       final RMSNorm, then lm_head (its own vocab-parallel matrix, or the token
//              embedding with model.tie_embeddings), vocab-parallel cross-entropy
// Parameter names (llama.cc param_specs) map one to one onto Hugging Face's: tok_emb =
// model.embed_tokens, h{l}.attn.qkv = [q_proj; k_proj; v_proj] rows, h{l}.attn.o = o_proj,
// h{l}.mlp.gate_up = [gate_proj; up_proj] rows, h{l}.mlp.down = down_proj, h{l}.attn_norm =
// input_layernorm, h{l}.mlp_norm = post_attention_layernorm, norm = model.norm, lm_head.
// Why: the models people train today are Llama-shaped; GPT-2 stays as the first plug-in.
#pragma once

#include <memory>

#include "parallel/models/model.h"

namespace mt::parallel {

class LlamaArchitecture final : public Architecture {
 public:
  // Validates the shape keys (errors name the key, before anything is written).
  explicit LlamaArchitecture(const core::ModelConfig& cfg);
  std::string name() const override { return "llama"; }
  std::string tp_violation(int tp) const override;
  std::string tp_constraint() const override;
  std::vector<ParamSpec> param_specs() const override;
  double flops_per_token(int T) const override;
  TpTraffic tp_traffic(int64_t tokens, int elem_bytes) const override;
  SampleCost sample_cost() const override;
  std::vector<std::pair<std::string, int64_t>> shape_keys() const override;
  double activation_bytes(int B, int T, int tp, int elem_bytes, int att_state_per_row,
                          Recompute recompute = Recompute::None, bool sp = false) const override;
  std::string describe(int tp) const override;
  std::unique_ptr<Model> build(const ModelContext& ctx) const override;

  int n_kv_head() const { return n_kv_; }
  int head_size() const { return config().n_embd / config().n_head; }
  int ffn_dim() const { return ffn_; }
  // Llama's default SwiGLU width: 2/3 of 4 C, rounded up to a multiple of `multiple_of`.
  static int default_ffn_dim(int n_embd, int multiple_of);

  static constexpr int kVocabAlign = 64;  // Vp = V rounded up to a multiple of kVocabAlign * tp

 private:
  int n_kv_ = 0, ffn_ = 0;
};

}  // namespace mt::parallel
