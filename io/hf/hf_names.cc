// What: the meshtrain <-> Hugging Face name and layout table (see hf_names.h).
#include "io/hf/hf_names.h"

#include <fmt/format.h>

#include "core/error.h"

namespace mt::io::hf {

namespace {

// The layer index and the rest of "h{l}.rest" (l = -1 if the name has no layer).
std::pair<int, std::string> split_layer(const std::string& ours) {
  if (ours.size() < 2 || ours[0] != 'h' || !std::isdigit(static_cast<unsigned char>(ours[1]))) return {-1, ours};
  const size_t dot = ours.find('.');
  return {std::stoi(ours.substr(1, dot - 1)), ours.substr(dot + 1)};
}

HfPiece piece(std::string name, int64_t rows, int64_t cols, bool vector, bool transposed = false) {
  HfPiece p;
  p.tensor = std::move(name);
  p.rows = rows;
  p.transposed = transposed;
  p.shape = vector ? std::vector<int64_t>{rows} : transposed ? std::vector<int64_t>{cols, rows} : std::vector<int64_t>{rows, cols};
  return p;
}

std::vector<HfPiece> gpt2_pieces(const parallel::ParamSpec& s, const std::string& pre) {
  const int64_t R = parallel::shape_rows(s.full_shape), C = parallel::shape_cols(s.full_shape);
  const bool vec = s.full_shape.size() == 1;
  if (s.name == "wte") return {piece(pre + "wte.weight", R, C, false)};
  if (s.name == "wpe") return {piece(pre + "wpe.weight", R, C, false)};
  if (s.name == "lnf.w") return {piece(pre + "ln_f.weight", R, C, true)};
  if (s.name == "lnf.b") return {piece(pre + "ln_f.bias", R, C, true)};
  const auto [l, rest] = split_layer(s.name);
  const std::string h = fmt::format("{}h.{}.", pre, l);
  static const std::pair<const char*, const char*> table[] = {
      {"ln1.w", "ln_1.weight"},          {"ln1.b", "ln_1.bias"},        {"attn.qkv.w", "attn.c_attn.weight"},
      {"attn.qkv.b", "attn.c_attn.bias"}, {"attn.proj.w", "attn.c_proj.weight"}, {"attn.proj.b", "attn.c_proj.bias"},
      {"ln2.w", "ln_2.weight"},          {"ln2.b", "ln_2.bias"},        {"mlp.fc.w", "mlp.c_fc.weight"},
      {"mlp.fc.b", "mlp.c_fc.bias"},     {"mlp.proj.w", "mlp.c_proj.weight"}, {"mlp.proj.b", "mlp.c_proj.bias"}};
  if (l >= 0) {
    for (const auto& [a, b] : table) {
      if (rest == a) return {piece(h + b, R, C, vec, /*Conv1D (in, out)*/ !vec)};
    }
  }
  MT_FAIL("no Hugging Face name for GPT-2 parameter {}", s.name);
}

std::vector<HfPiece> llama_pieces(const parallel::ParamSpec& s, const core::ModelConfig& m) {
  const int64_t R = parallel::shape_rows(s.full_shape), C = parallel::shape_cols(s.full_shape);
  if (s.name == "tok_emb") return {piece("model.embed_tokens.weight", R, C, false)};
  if (s.name == "norm.w") return {piece("model.norm.weight", R, C, true)};
  if (s.name == "lm_head") return {piece("lm_head.weight", R, C, false)};
  const auto [l, rest] = split_layer(s.name);
  const std::string h = fmt::format("model.layers.{}.", l);
  if (l >= 0) {
    if (rest == "attn_norm.w") return {piece(h + "input_layernorm.weight", R, C, true)};
    if (rest == "mlp_norm.w") return {piece(h + "post_attention_layernorm.weight", R, C, true)};
    if (rest == "attn.o.w") return {piece(h + "self_attn.o_proj.weight", R, C, false)};
    if (rest == "mlp.down.w") return {piece(h + "mlp.down_proj.weight", R, C, false)};
    if (rest == "attn.qkv.w") {
      const int64_t hs = m.n_embd / m.n_head, q = m.n_head * hs, kv = (R - q) / 2;
      return {piece(h + "self_attn.q_proj.weight", q, C, false), piece(h + "self_attn.k_proj.weight", kv, C, false),
              piece(h + "self_attn.v_proj.weight", kv, C, false)};
    }
    if (rest == "mlp.gate_up.w") {
      return {piece(h + "mlp.gate_proj.weight", R / 2, C, false), piece(h + "mlp.up_proj.weight", R / 2, C, false)};
    }
  }
  MT_FAIL("no Hugging Face name for Llama parameter {}", s.name);
}

}  // namespace

std::vector<HfParam> hf_mapping(const parallel::Architecture& arch, const std::string& gpt2_prefix) {
  const std::string a = arch.name();
  if (a != "gpt2" && a != "llama") {
    throw core::Error(fmt::format("model.arch {} has no Hugging Face mapping", a))
        .with_yaml("model.arch").with_hint("Hugging Face import and export support gpt2 and llama");
  }
  std::vector<HfParam> out;
  const auto specs = arch.param_specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    HfParam p;
    p.ours = specs[i].name;
    p.index = static_cast<int>(i);
    p.pieces = a == "gpt2" ? gpt2_pieces(specs[i], gpt2_prefix) : llama_pieces(specs[i], arch.config());
    int64_t rows = 0;
    for (const auto& pc : p.pieces) rows += pc.rows;
    MT_CHECK(rows == parallel::shape_rows(specs[i].full_shape), "{}: pieces cover {} of {} rows", p.ours, rows,
             parallel::shape_rows(specs[i].full_shape));
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<std::string> hf_tensor_names(const std::vector<HfParam>& mapping) {
  std::vector<std::string> v;
  for (const auto& p : mapping)
    for (const auto& pc : p.pieces) v.push_back(pc.tensor);
  return v;
}

TiedHead tied_head(const parallel::Architecture& arch, const std::string& gpt2_prefix) {
  if (arch.name() == "gpt2") return {"lm_head.weight", gpt2_prefix + "wte.weight"};
  if (arch.name() == "llama" && arch.config().tie_embeddings) return {"lm_head.weight", "model.embed_tokens.weight"};
  return {};
}

bool is_known_buffer(const std::string& n) {
  auto ends_with = [&](const char* s) {
    const std::string t = s;
    return n.size() >= t.size() && n.compare(n.size() - t.size(), t.size(), t) == 0;
  };
  return ends_with(".attn.bias") || ends_with(".attn.masked_bias") || ends_with(".rotary_emb.inv_freq");
}

std::string hf_model_type(const std::string& arch) { return arch; }

std::string hf_architecture_class(const std::string& arch) {
  if (arch == "gpt2") return "GPT2LMHeadModel";
  if (arch == "llama") return "LlamaForCausalLM";
  MT_FAIL("model.arch {} has no Hugging Face class", arch);
}

}  // namespace mt::io::hf
