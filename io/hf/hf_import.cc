// What: Hugging Face import (see hf_import.h): config.json -> ModelConfig with every feature
// we do not implement refused by name, the check of the run's model keys against it, and each
// rank's slices read from the memory-mapped safetensors through the parameters' Partitions.
#include "io/hf/hf_import.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "io/hf/hf_names.h"
#include "io/metrics.h"
#include "parallel/models/llama.h"

namespace mt::io::hf {

namespace {

using nlohmann::json;

// config.json and its file name, for the errors.
struct HfConfig {
  json j;
  std::string file;

  core::Error error(const std::string& msg, const std::string& hint = "") const {
    core::Error e(msg);
    e.with_file(file);
    if (!hint.empty()) e.with_hint(hint);
    return e;
  }
  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  const json& at(const char* key) const {
    if (!has(key)) throw error(fmt::format("config.json has no '{}'", key), "it is needed to build the model");
    return j[key];
  }
  int64_t integer(const char* key) const {
    const json& v = at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > (1ll << 30))
      throw error(fmt::format("config.json '{}' = {} is not a positive integer", key, v.dump()));
    return v.get<int64_t>();
  }
  double number(const char* key, double dflt) const {
    if (!has(key)) return dflt;
    if (!j[key].is_number()) throw error(fmt::format("config.json '{}' = {} is not a number", key, j[key].dump()));
    return j[key].get<double>();
  }
  bool flag(const char* key, bool dflt) const {
    if (!has(key)) return dflt;
    if (!j[key].is_boolean()) throw error(fmt::format("config.json '{}' = {} is not true or false", key, j[key].dump()));
    return j[key].get<bool>();
  }
  std::string text(const char* key, const std::string& dflt) const {
    if (!has(key)) return dflt;
    if (!j[key].is_string()) throw error(fmt::format("config.json '{}' = {} is not a string", key, j[key].dump()));
    return j[key].get<std::string>();
  }
  void unsupported(const std::string& feature, const std::string& value) const {
    throw error(fmt::format("unsupported feature: config.json '{}' = {}", feature, value),
                "meshtrain implements the plain GPT-2 and Llama architectures (no rope scaling, no biases in Llama, "
                "no sliding-window attention)");
  }
};

core::ModelConfig gpt2_config(const HfConfig& c) {
  core::ModelConfig m;
  m.arch = "gpt2";
  m.n_layer = static_cast<int>(c.integer("n_layer"));
  m.n_head = static_cast<int>(c.integer("n_head"));
  m.n_embd = static_cast<int>(c.integer("n_embd"));
  m.vocab_size = static_cast<int>(c.integer("vocab_size"));
  m.seq_len = static_cast<int>(c.integer("n_positions"));
  if (const std::string act = c.text("activation_function", "gelu_new"); act != "gelu_new")
    c.unsupported("activation_function", "\"" + act + "\" (meshtrain's GPT-2 uses gelu_new, the tanh approximation)");
  if (c.has("n_inner") && c.integer("n_inner") != 4 * m.n_embd)
    c.unsupported("n_inner", fmt::format("{} (meshtrain's GPT-2 MLP is 4 x n_embd = {})", c.j["n_inner"].dump(), 4 * m.n_embd));
  const double eps = c.number("layer_norm_epsilon", 1e-5);
  if (std::fabs(eps - 1e-5) > 1e-12)
    c.unsupported("layer_norm_epsilon", fmt::format("{} (meshtrain's GPT-2 LayerNorm uses 1e-5)", eps));
  m.norm_eps = 1e-5;
  if (!c.flag("tie_word_embeddings", true)) c.unsupported("tie_word_embeddings", "false (GPT-2's head is tied to wte)");
  if (!c.flag("scale_attn_weights", true)) c.unsupported("scale_attn_weights", "false");
  if (c.flag("scale_attn_by_inverse_layer_idx", false)) c.unsupported("scale_attn_by_inverse_layer_idx", "true");
  if (c.flag("add_cross_attention", false)) c.unsupported("add_cross_attention", "true");
  return m;
}

core::ModelConfig llama_config(const HfConfig& c) {
  core::ModelConfig m;
  m.arch = "llama";
  m.n_layer = static_cast<int>(c.integer("num_hidden_layers"));
  m.n_head = static_cast<int>(c.integer("num_attention_heads"));
  m.n_embd = static_cast<int>(c.integer("hidden_size"));
  m.n_kv_head = c.has("num_key_value_heads") ? static_cast<int>(c.integer("num_key_value_heads")) : m.n_head;
  m.ffn_dim = static_cast<int>(c.integer("intermediate_size"));
  m.vocab_size = static_cast<int>(c.integer("vocab_size"));
  m.seq_len = static_cast<int>(c.integer("max_position_embeddings"));
  m.norm_eps = c.number("rms_norm_eps", 1e-6);  // LlamaConfig's default
  m.tie_embeddings = c.flag("tie_word_embeddings", false);
  if (const std::string act = c.text("hidden_act", "silu"); act != "silu")
    c.unsupported("hidden_act", "\"" + act + "\" (meshtrain's Llama MLP is SwiGLU with silu)");
  if (c.flag("attention_bias", false)) c.unsupported("attention_bias", "true");
  if (c.flag("mlp_bias", false)) c.unsupported("mlp_bias", "true");
  if (c.has("sliding_window")) c.unsupported("sliding_window", c.j["sliding_window"].dump());
  if (c.has("rope_scaling")) c.unsupported("rope_scaling", c.j["rope_scaling"].dump());
  if (c.has("head_dim") && c.integer("head_dim") * m.n_head != m.n_embd)
    c.unsupported("head_dim", fmt::format("{} (meshtrain's head size is hidden_size / num_attention_heads = {})",
                                          c.j["head_dim"].dump(), m.n_embd / m.n_head));
  // rope: transformers 5 writes rope_parameters {rope_theta, rope_type}; older files a
  // top-level rope_theta
  m.rope_theta = c.number("rope_theta", 10000.0);
  if (c.has("rope_parameters")) {
    const json& rp = c.j["rope_parameters"];
    if (!rp.is_object()) throw c.error("config.json 'rope_parameters' is not an object");
    const std::string type = rp.value("rope_type", std::string("default"));
    if (type != "default") c.unsupported("rope_parameters.rope_type", "\"" + type + "\"");
    for (const auto& [k, v] : rp.items()) {
      if (k != "rope_type" && k != "rope_theta") c.unsupported("rope_parameters." + k, v.dump());
    }
    if (rp.contains("rope_theta")) {
      if (!rp["rope_theta"].is_number()) throw c.error("config.json 'rope_parameters.rope_theta' is not a number");
      m.rope_theta = rp["rope_theta"].get<double>();
    }
  }
  return m;
}

std::string value_text(double v) { return fmt::format("{}", v); }

}  // namespace

core::ModelConfig read_model_config(const std::string& dir) {
  HfConfig c;
  c.file = dir + "/config.json";
  std::error_code ec;
  if (!std::filesystem::exists(c.file, ec)) {
    throw core::Error("no config.json in the Hugging Face model directory").with_file(c.file)
        .with_hint("model.init_from = hf:DIR names a directory written by save_pretrained (config.json + model.safetensors)");
  }
  try {
    c.j = json::parse(read_file(c.file));
  } catch (const json::exception& e) {
    throw core::Error("config.json is not valid JSON").with_file(c.file).with_library(e.what());
  }
  if (!c.j.is_object()) throw c.error("config.json is not a JSON object");
  const std::string type = c.text("model_type", "");
  if (type.empty()) throw c.error("config.json has no 'model_type'", "meshtrain imports model_type gpt2 and llama");
  core::ModelConfig m;
  if (type == "gpt2") m = gpt2_config(c);
  else if (type == "llama") m = llama_config(c);
  else throw c.error(fmt::format("unsupported model_type '{}'", type), "meshtrain imports model_type gpt2 (GPT2LMHeadModel) and llama (LlamaForCausalLM)");
  if (m.n_embd % m.n_head != 0) {
    throw c.error(fmt::format("hidden size {} is not divisible by {} attention heads", m.n_embd, m.n_head));
  }
  // meshtrain's own int8 export (hf_export.h) is read dequantized; other quantizations are not
  if (c.has("quantization_config")) {
    const json& q = c.j["quantization_config"];
    const std::string method = q.is_object() ? q.value("quant_method", std::string()) : std::string();
    if (method != kInt8QuantMethod)
      c.unsupported("quantization_config.quant_method", "\"" + method + "\" (meshtrain reads only its own \"" +
                                                            kInt8QuantMethod + "\" int8 export)");
  }
  return m;
}

void check_model_config(const core::ModelConfig& hf, const core::ModelConfig& cfg, const std::string& dir,
                        const std::set<std::string>* set_keys) {
  const core::ModelConfig dflt;
  const bool llama = hf.arch == "llama";
  const std::string file = dir + "/config.json";
  auto check = [&](const char* key, const char* hf_key, const std::string& ours, const std::string& theirs,
                   bool is_set_by_value, bool agree) {
    const std::string path = std::string("model.") + key;
    const bool set = set_keys ? set_keys->count(path) > 0 : is_set_by_value;
    if (!set || agree) return;
    throw core::Error(fmt::format("{} = {} disagrees with config.json {} = {}", path, ours, hf_key, theirs))
        .with_file(file).with_yaml(path)
        .with_hint(fmt::format("model.init_from takes the model's shape from config.json: remove {} from the config "
                               "(or set it to {})", path, theirs));
  };
  check("arch", "model_type", cfg.arch, hf.arch, cfg.arch != dflt.arch, cfg.arch == hf.arch);
  auto ints = [&](const char* key, const char* hf_key, int ours, int theirs, int d) {
    check(key, hf_key, std::to_string(ours), std::to_string(theirs), ours != d, ours == theirs);
  };
  ints("n_layer", llama ? "num_hidden_layers" : "n_layer", cfg.n_layer, hf.n_layer, dflt.n_layer);
  ints("n_head", llama ? "num_attention_heads" : "n_head", cfg.n_head, hf.n_head, dflt.n_head);
  ints("n_embd", llama ? "hidden_size" : "n_embd", cfg.n_embd, hf.n_embd, dflt.n_embd);
  ints("vocab_size", "vocab_size", cfg.vocab_size, hf.vocab_size, dflt.vocab_size);
  // Llama's context is only what RoPE is evaluated at: a shorter one is fine
  check("seq_len", llama ? "max_position_embeddings" : "n_positions", std::to_string(cfg.seq_len),
        std::to_string(hf.seq_len), cfg.seq_len != dflt.seq_len,
        llama ? cfg.seq_len <= hf.seq_len : cfg.seq_len == hf.seq_len);
  if (!llama) return;
  const int kv = cfg.n_kv_head > 0 ? cfg.n_kv_head : cfg.n_head;
  ints("n_kv_head", "num_key_value_heads", kv, hf.n_kv_head, cfg.n_kv_head == dflt.n_kv_head ? kv : -1);
  const int ffn = cfg.ffn_dim > 0 ? cfg.ffn_dim : parallel::LlamaArchitecture::default_ffn_dim(cfg.n_embd, cfg.ffn_multiple_of);
  ints("ffn_dim", "intermediate_size", ffn, hf.ffn_dim, cfg.ffn_dim == dflt.ffn_dim ? ffn : -1);
  check("rope_theta", "rope_theta", value_text(cfg.rope_theta), value_text(hf.rope_theta),
        cfg.rope_theta != dflt.rope_theta, std::fabs(cfg.rope_theta - hf.rope_theta) <= 1e-9 * hf.rope_theta);
  check("norm_eps", "rms_norm_eps", value_text(cfg.norm_eps), value_text(hf.norm_eps), cfg.norm_eps != dflt.norm_eps,
        std::fabs(cfg.norm_eps - hf.norm_eps) <= 1e-9 * hf.norm_eps);
  check("tie_embeddings", "tie_word_embeddings", cfg.tie_embeddings ? "true" : "false",
        hf.tie_embeddings ? "true" : "false", cfg.tie_embeddings != dflt.tie_embeddings,
        cfg.tie_embeddings == hf.tie_embeddings);
}

std::string hf_dir(const std::string& init_from) {
  if (init_from.rfind("hf:", 0) != 0 || init_from.size() <= 3) {
    throw core::Error(fmt::format("model.init_from = '{}' is not hf:DIR", init_from)).with_yaml("model.init_from")
        .with_hint("e.g. model.init_from=hf:models/llama (a directory with config.json and model.safetensors)");
  }
  std::string d = init_from.substr(3);
  if (d == "~" || d.rfind("~/", 0) == 0) {
    if (const char* home = std::getenv("HOME")) d = std::string(home) + d.substr(1);
  }
  return d;
}

core::ModelConfig resolve_model_config(const core::Config& cfg) {
  const std::string dir = hf_dir(cfg.model.init_from);
  core::ModelConfig m;
  try {
    m = read_model_config(dir);
    check_model_config(m, cfg.model, dir, &cfg.set_keys);
  } catch (core::Error& e) {
    e.with_yaml("model.init_from");
    throw;
  }
  m.init_from = cfg.model.init_from;
  m.init_std = cfg.model.init_std;
  m.ffn_multiple_of = cfg.model.ffn_multiple_of;
  if (m.arch == "llama" && cfg.set_keys.count("model.seq_len")) m.seq_len = cfg.model.seq_len;
  return m;
}

std::vector<std::string> check_tensors(const SafetensorsModel& st, const parallel::Architecture& arch) {
  const std::string prefix = arch.name() == "gpt2" && !st.has("transformer.wte.weight") && st.has("wte.weight") ? "" : "transformer.";
  const auto mapping = hf_mapping(arch, prefix);
  std::set<std::string> ours;
  for (const auto& p : mapping) {
    for (const auto& pc : p.pieces) {
      ours.insert(pc.tensor);
      if (!st.has(pc.tensor)) {
        throw core::Error(fmt::format("tensor '{}' is missing (meshtrain's {})", pc.tensor, p.ours)).with_file(st.source())
            .with_hint("the weights do not match config.json (another architecture, or a tied/untied head?)");
      }
      const TensorEntry& t = st.entry(pc.tensor);
      if (t.shape != pc.shape) {
        throw core::Error(fmt::format("tensor '{}' has shape [{}], config.json implies [{}]", pc.tensor,
                                      fmt::join(t.shape, ", "), fmt::join(pc.shape, ", ")))
            .with_file(st.file_of(pc.tensor).path()).with_hint("the weights do not match config.json");
      }
    }
  }
  const TiedHead tied = tied_head(arch, prefix);
  if (!tied.head.empty() && st.has(tied.head)) {
    ours.insert(tied.head);
    const TensorEntry& h = st.entry(tied.head);
    const TensorEntry& e = st.entry(tied.embedding);
    bool equal = h.shape == e.shape;
    std::vector<float> a(1 << 16), b(1 << 16);
    for (int64_t i = 0; equal && i < e.numel; i += static_cast<int64_t>(a.size())) {
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(a.size()), e.numel - i);
      st.read(tied.head, i, n, a.data());
      st.read(tied.embedding, i, n, b.data());
      for (int64_t k = 0; k < n && equal; ++k) equal = a[static_cast<size_t>(k)] == b[static_cast<size_t>(k)];
    }
    if (!equal) {
      throw core::Error(fmt::format("tensor '{}' differs from '{}', but the head is tied to the embedding", tied.head,
                                    tied.embedding))
          .with_file(st.file_of(tied.head).path())
          .with_hint(arch.name() == "gpt2" ? "meshtrain's GPT-2 always ties its head (an untied GPT-2 is not supported)"
                                           : "config.json says tie_word_embeddings: true; an untied model says false");
    }
  }
  std::vector<std::string> unknown;
  for (const auto& n : st.names())
    if (!ours.count(n) && !is_known_buffer(n) && !st.is_scale(n)) unknown.push_back(n);
  return unknown;
}

namespace {
std::string gpt2_prefix(const SafetensorsModel& st) {
  return !st.has("transformer.wte.weight") && st.has("wte.weight") ? "" : "transformer.";
}
}  // namespace

void read_slices(const SafetensorsModel& st, const parallel::Model& model, float* base) {
  const auto mapping = hf_mapping(model.arch(), gpt2_prefix(st));
  const int tp = model.tp().size(), rank = model.tp().rank();
  for (const HfParam& hp : mapping) {
    const int local = model.local_param(hp.index);  // (a pipeline stage holds some parameters)
    if (local < 0) continue;
    const parallel::ParamInfo& p = model.params_info()[static_cast<size_t>(local)];
    const int64_t rows = parallel::shape_rows(p.local_shape), cols = parallel::shape_cols(p.local_shape);
    const int64_t full_rows = parallel::shape_rows(p.full_shape), full_cols = parallel::shape_cols(p.full_shape);
    float* dst = base + p.offset;
    for (int64_t r = 0; r < rows; ++r) {
      const parallel::Partition::Place at = p.partition.to_full(p.full_shape, tp, rank, r);
      float* out = dst + r * cols;
      if (at.row >= full_rows) {  // vocabulary padding: no token has it
        std::fill(out, out + cols, 0.0f);
        continue;
      }
      // the piece holding full row at.row, and the row within it
      int64_t row0 = 0;
      size_t k = 0;
      while (at.row >= row0 + hp.pieces[k].rows) row0 += hp.pieces[k++].rows;
      const HfPiece& pc = hp.pieces[k];
      const int64_t pr = at.row - row0;
      if (pc.transposed) st.read(pc.tensor, at.col * pc.rows + pr, cols, out, pc.rows);  // HF (in, out): a column
      else st.read(pc.tensor, pr * full_cols + at.col, cols, out);
    }
  }
}

void load_weights(const std::string& dir, parallel::Model& model) {
  const SafetensorsModel st(dir);
  const auto unknown = check_tensors(st, model.arch());
  if (core::process_rank() <= 0) {
    for (const auto& n : unknown)
      core::log::warn("{}: tensor '{}' is not part of a meshtrain {} model; ignored", st.source(), n, model.arch().name());
    int quantized = 0;
    for (const auto& n : st.names()) quantized += st.is_quantized(n) ? 1 : 0;
    if (quantized > 0)
      core::log::info("{}: {} int8 tensors (per-output-channel scales) dequantized to fp32 on load", st.source(),
                      quantized);
  }
  core::Device& dev = model.device();
  // on the CPU straight into the parameters; else (and under ZeRO-3, where the model keeps only
  // its pieces) through a host copy of the slice
  const bool host = dev.kind() == core::DeviceKind::CPU && model.owns_params();
  std::vector<float> staging(host ? 0 : static_cast<size_t>(model.num_local_params()), 0.0f);
  read_slices(st, model, host ? model.params().f32() : staging.data());
  if (host) {
    model.refresh_working_params();
  } else {
    model.load_master(staging.data());
  }
}

}  // namespace mt::io::hf
