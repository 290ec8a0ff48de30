// What: the mapping between meshtrain's parameters and a Hugging Face model's tensors, both
// directions, for the architectures that import and export:
//   gpt2  <-> GPT2LMHeadModel: transformer.wte / wpe, transformer.h.{l}.ln_1, attn.c_attn
//             (q|k|v fused along its output), attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj,
//             transformer.ln_f; Conv1D weights are stored (in, out): the transpose of our
//             (out, in). The head is tied to wte (lm_head.weight absent, or equal to it).
//   llama <-> LlamaForCausalLM: model.embed_tokens, model.layers.{l}.input_layernorm,
//             self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj,
//             model.norm, lm_head (unless tied). Our fused q|k|v and gate|up stack the HF
//             matrices by rows; RoPE needs no permutation (both use rotate-half).
// Each of our parameters is a list of pieces: an HF tensor filling a block of our rows, maybe
// transposed. Import reads, for each local row of a rank (Partition::to_full), exactly the
// elements it needs; export assembles our full tensor and cuts it into the HF ones.
// Why: one table serves import, export, the checks of a file against config.json and the
// docs' table; the names are where converters usually go wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/models/model.h"

namespace mt::io::hf {

struct HfPiece {
  std::string tensor;          // the HF name, e.g. "model.layers.0.self_attn.k_proj.weight"
  int64_t rows = 0;            // rows of our parameter it fills (dim 0 of ours)
  bool transposed = false;     // HF stores it (our cols, our rows): Conv1D
  std::vector<int64_t> shape;  // its shape in the HF file
};

struct HfParam {
  std::string ours;  // our parameter name
  int index = 0;     // its index in param_specs()
  std::vector<HfPiece> pieces;
};

// The pieces of every parameter of `arch`, in param_specs() order. `prefix` replaces GPT-2's
// "transformer." (base GPT2Model files, such as the original gpt2 weights, have none).
// Throws for an architecture without a Hugging Face mapping.
std::vector<HfParam> hf_mapping(const parallel::Architecture& arch, const std::string& gpt2_prefix = "transformer.");

// The HF tensor names of the mapping, in order (what an export writes).
std::vector<std::string> hf_tensor_names(const std::vector<HfParam>& mapping);

// The HF tensor tied to our token embedding that a file may also hold: GPT-2's
// lm_head.weight, or Llama's when tie_word_embeddings ("" if none); with its tied partner.
struct TiedHead {
  std::string head, embedding;
};
TiedHead tied_head(const parallel::Architecture& arch, const std::string& gpt2_prefix = "transformer.");

// Buffers some files carry that hold no weights (GPT-2's attn.bias / attn.masked_bias causal
// masks, Llama's rotary_emb.inv_freq): skipped on import without a warning.
bool is_known_buffer(const std::string& hf_name);

// The model_type / architectures entry of config.json for our arch name.
std::string hf_model_type(const std::string& arch);
std::string hf_architecture_class(const std::string& arch);

}  // namespace mt::io::hf
