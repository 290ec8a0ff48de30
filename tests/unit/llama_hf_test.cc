// What: model.arch = llama computes what Hugging Face's LlamaForCausalLM computes. The
// fixture (tests/fixtures/hf/llama-tiny, made with transformers 5.25 / torch 2.15 in fp32:
// 2 layers, 4 query heads sharing 2 kv heads, width 64, SwiGLU 176, vocab 320, untied head,
// every norm weight shifted off 1) gives the weights, a batch, HF's logits, its mean loss and
// d loss / d parameter for every parameter. We load the weights into our model (q|k|v and
// gate|up fused by rows, as llama.h documents), run forward and backward, and compare:
// every per-token loss (against the log-softmax of HF's logits, in double), the mean loss,
// and every gradient element.
// Why: the issue asks for "semantics exactly those of the Hugging Face reference" (pre-norm
// RMSNorm with weight, rotate-half RoPE, SwiGLU, grouped-query attention, final norm, lm_head)
// so the coming weight import needs no maths of its own; only an independent implementation
// shows that. The safetensors reading here is a test helper (the importer is issue #11).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "parallel/models/registry.h"

namespace {

const std::string kDir = std::string(MT_SOURCE_DIR) + "/tests/fixtures/hf/llama-tiny/";

struct HfTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// safetensors: u64 little-endian header length, a JSON header {name: {dtype, shape,
// data_offsets}}, then the raw data. F32 only (the fixture's dtype).
std::map<std::string, HfTensor> read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  f.read(header.data(), static_cast<std::streamsize>(n));
  const auto h = nlohmann::json::parse(header);
  const std::streamoff base = 8 + static_cast<std::streamoff>(n);
  std::map<std::string, HfTensor> out;
  for (const auto& [name, v] : h.items()) {
    if (name == "__metadata__") continue;
    EXPECT_EQ(v.at("dtype"), "F32") << name;
    HfTensor t;
    t.shape = v.at("shape").get<std::vector<int64_t>>();
    const auto off = v.at("data_offsets").get<std::vector<int64_t>>();
    t.data.resize(static_cast<size_t>(off[1] - off[0]) / sizeof(float));
    f.seekg(base + off[0]);
    f.read(reinterpret_cast<char*>(t.data.data()), off[1] - off[0]);
    out[name] = std::move(t);
  }
  return out;
}

mt::core::ModelConfig fixture_config() {
  std::ifstream f(kDir + "config.json");
  const auto j = nlohmann::json::parse(f);
  mt::core::ModelConfig m;
  m.arch = "llama";
  m.n_layer = j.at("num_hidden_layers");
  m.n_head = j.at("num_attention_heads");
  m.n_kv_head = j.at("num_key_value_heads");
  m.n_embd = j.at("hidden_size");
  m.ffn_dim = j.at("intermediate_size");
  m.vocab_size = j.at("vocab_size");
  m.seq_len = j.at("max_position_embeddings");
  m.norm_eps = j.at("rms_norm_eps");
  m.rope_theta = j.contains("rope_parameters") ? j["rope_parameters"].at("rope_theta").get<double>()
                                               : j.at("rope_theta").get<double>();
  m.tie_embeddings = j.at("tie_word_embeddings");
  return m;
}

// Our parameter -> the Hugging Face tensors whose rows it concatenates.
std::vector<std::string> hf_names(const std::string& ours) {
  if (ours == "tok_emb") return {"model.embed_tokens.weight"};
  if (ours == "norm.w") return {"model.norm.weight"};
  if (ours == "lm_head") return {"lm_head.weight"};
  const size_t dot = ours.find('.');
  const std::string l = "model.layers." + ours.substr(1, dot - 1) + ".", rest = ours.substr(dot + 1);
  if (rest == "attn_norm.w") return {l + "input_layernorm.weight"};
  if (rest == "mlp_norm.w") return {l + "post_attention_layernorm.weight"};
  if (rest == "attn.qkv.w") return {l + "self_attn.q_proj.weight", l + "self_attn.k_proj.weight", l + "self_attn.v_proj.weight"};
  if (rest == "attn.o.w") return {l + "self_attn.o_proj.weight"};
  if (rest == "mlp.gate_up.w") return {l + "mlp.gate_proj.weight", l + "mlp.up_proj.weight"};
  if (rest == "mlp.down.w") return {l + "mlp.down_proj.weight"};
  ADD_FAILURE() << "no Hugging Face name for " << ours;
  return {};
}

TEST(LlamaMatchesHuggingFace, LossesAndEveryGradient) {
  const auto weights = read_safetensors(kDir + "model.safetensors");
  const auto grads = read_safetensors(kDir + "grads.safetensors");
  std::ifstream rf(kDir + "reference.json");
  const auto ref = nlohmann::json::parse(rf);
  const auto cfg = fixture_config();
  auto model = mt::parallel::make_model(cfg, {});
  ASSERT_EQ(model->num_full_params(), [&] {
    int64_t n = 0;
    for (const auto& [name, t] : weights) n += static_cast<int64_t>(t.data.size());
    return n;
  }());

  // weights in (tp 1: local = full; vocabulary rows beyond 320 stay zero padding)
  model->params().zero_();
  for (size_t i = 0; i < model->params_info().size(); ++i) {
    const auto& p = model->params_info()[i];
    int64_t at = 0;
    for (const auto& hn : hf_names(p.name)) {
      const HfTensor& t = weights.at(hn);
      std::memcpy(model->param(static_cast<int>(i)) + at, t.data.data(), t.data.size() * sizeof(float));
      at += static_cast<int64_t>(t.data.size());
    }
    ASSERT_LE(at, p.numel) << p.name;
  }
  model->refresh_working_params();

  const int B = 2, T = 16, V = cfg.vocab_size;
  std::vector<int32_t> x, y;
  for (const auto& row : ref.at("input_ids"))
    for (int64_t v : row) x.push_back(static_cast<int32_t>(v));
  for (const auto& row : ref.at("labels"))
    for (int64_t v : row) y.push_back(static_cast<int32_t>(v));
  model->zero_grads();
  const double loss = model->forward(x.data(), y.data(), B, T);
  EXPECT_NEAR(loss, ref.at("loss").get<double>(), 2e-6) << "mean loss";

  // per-token losses against HF's logits
  std::vector<float> logits(static_cast<size_t>(B) * T * V);
  std::ifstream lf(kDir + "logits.f32", std::ios::binary);
  lf.read(reinterpret_cast<char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
  ASSERT_TRUE(lf.good());
  for (int n = 0; n < B * T; ++n) {
    const float* z = &logits[static_cast<size_t>(n) * V];
    double mx = z[0], se = 0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(z[v]));
    for (int v = 0; v < V; ++v) se += std::exp(z[v] - mx);
    const double want = std::log(se) + mx - z[y[static_cast<size_t>(n)]];
    EXPECT_NEAR(model->losses()[n], want, 2e-5 + 2e-6 * std::fabs(want)) << "token " << n;
  }

  // d(mean loss)/d(parameter) for every element
  model->backward(1.0f / static_cast<float>(B * T));
  for (size_t i = 0; i < model->params_info().size(); ++i) {
    const auto& p = model->params_info()[i];
    int64_t at = 0;
    double worst = 0;
    for (const auto& hn : hf_names(p.name)) {
      const HfTensor& g = grads.at(hn);
      double scale = 0;
      for (float v : g.data) scale = std::max(scale, static_cast<double>(std::fabs(v)));
      for (size_t e = 0; e < g.data.size(); ++e) {
        const double got = model->grad(static_cast<int>(i))[at + static_cast<int64_t>(e)];
        worst = std::max(worst, std::fabs(got - g.data[e]) / (1e-7 + scale));
      }
      at += static_cast<int64_t>(g.data.size());
    }
    for (int64_t e = at; e < p.numel; ++e) ASSERT_EQ(model->grad(static_cast<int>(i))[e], 0.0f) << p.name << " padding";
    EXPECT_LT(worst, 1e-4) << p.name << ": largest |ours - HF| relative to the tensor's largest gradient";
  }
}

}  // namespace
