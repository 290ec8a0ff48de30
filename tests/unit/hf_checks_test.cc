// What: the Hugging Face import's checks (io/hf/hf_import.h, hf_names.h) on the fixtures
// written by transformers (tests/fixtures/hf) and on broken copies of them:
//  - config.json -> ModelConfig for GPT2LMHeadModel and LlamaForCausalLM (both rope layouts);
//  - every refusal names the file and the key: missing file, malformed JSON, missing key,
//    unsupported model_type, rope_scaling / rope_type, attention and MLP biases, sliding
//    windows, head_dim, activations, GPT-2's LayerNorm epsilon;
//  - a run's model key that disagrees with config.json names both (set keys only);
//  - the name mapping both ways: our parameters map onto exactly the fixture's tensor names
//    and shapes; a missing tensor and a wrong shape are errors naming the tensor; an unknown
//    extra tensor is reported (load_weights warns); GPT-2's lm_head.weight is accepted equal
//    to wte and refused otherwise.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf/hf_import.h"
#include "io/hf/hf_names.h"
#include "io/hf/safetensors.h"
#include "parallel/models/registry.h"

using namespace mt;
using namespace mt::io::hf;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kFixtures = std::string(MT_SOURCE_DIR) + "/tests/fixtures/hf/";

json fixture_config(const std::string& name) {
  std::ifstream f(kFixtures + name + "/config.json");
  return json::parse(f);
}

class HfImportChecks : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mt-hfi-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write_config(const json& j) { std::ofstream(dir_ + "/config.json") << j.dump(2); }
  // The Error text of read_model_config(dir_), "" if it succeeded.
  std::string config_error() {
    try {
      read_model_config(dir_);
    } catch (const core::Error& e) {
      return e.what();
    }
    return "";
  }
  // A copy of fixture `name`'s weights with `drop` left out and `extra` tensors added.
  void write_weights(const std::string& name, const std::set<std::string>& drop,
                     const std::vector<std::pair<std::string, std::vector<float>>>& extra) {
    SafetensorsModel src(kFixtures + name);
    std::vector<TensorPlan> plan;
    for (const auto& n : src.names())
      if (!drop.count(n)) plan.push_back({n, src.entry(n).shape, ""});
    for (const auto& [n, v] : extra) plan.push_back({n, {static_cast<int64_t>(v.size())}, ""});
    SafetensorsWriter w(dir_, plan, "F32", 1ll << 40);
    for (const auto& n : src.names())
      if (!drop.count(n)) w.write(n, src.read_all(n).data());
    for (const auto& [n, v] : extra) w.write(n, v.data());
    w.finish();
  }
  std::string dir_;
};

TEST(HfConfig, FixturesGiveTheirModels) {
  const auto g = read_model_config(kFixtures + "gpt2-tiny");
  EXPECT_EQ(g.arch, "gpt2");
  EXPECT_EQ(g.n_layer, 2);
  EXPECT_EQ(g.n_head, 4);
  EXPECT_EQ(g.n_embd, 64);
  EXPECT_EQ(g.vocab_size, 320);
  EXPECT_EQ(g.seq_len, 64);
  const auto l = read_model_config(kFixtures + "llama-tiny");
  EXPECT_EQ(l.arch, "llama");
  EXPECT_EQ(l.n_kv_head, 2);
  EXPECT_EQ(l.ffn_dim, 176);
  EXPECT_EQ(l.vocab_size, 320);
  EXPECT_EQ(l.seq_len, 64);
  EXPECT_EQ(l.rope_theta, 10000.0);
  EXPECT_EQ(l.norm_eps, 1e-5);
  EXPECT_FALSE(l.tie_embeddings);
}

TEST_F(HfImportChecks, OlderTopLevelRopeThetaIsRead) {
  json j = fixture_config("llama-tiny");
  j.erase("rope_parameters");
  j["rope_theta"] = 500000.0;
  write_config(j);
  EXPECT_EQ(read_model_config(dir_).rope_theta, 500000.0);
}

TEST_F(HfImportChecks, BadConfigsNameTheFileAndTheKey) {
  EXPECT_NE(config_error().find("no config.json"), std::string::npos);
  std::ofstream(dir_ + "/config.json") << "{\"model_type\": \"llama\",";
  EXPECT_NE(config_error().find("config.json is not valid JSON"), std::string::npos);
  struct Case {
    std::string model;
    std::function<void(json&)> edit;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"llama-tiny", [](json& j) { j.erase("model_type"); }, "no 'model_type'"},
      {"llama-tiny", [](json& j) { j["model_type"] = "mistral"; }, "unsupported model_type 'mistral'"},
      {"llama-tiny", [](json& j) { j.erase("hidden_size"); }, "config.json has no 'hidden_size'"},
      {"llama-tiny", [](json& j) { j["num_hidden_layers"] = "two"; }, "'num_hidden_layers' = \"two\" is not a positive integer"},
      {"llama-tiny", [](json& j) { j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}}; }, "unsupported feature: config.json 'rope_scaling'"},
      {"llama-tiny", [](json& j) { j["rope_parameters"]["rope_type"] = "yarn"; }, "'rope_parameters.rope_type' = \"yarn\""},
      {"llama-tiny", [](json& j) { j["attention_bias"] = true; }, "'attention_bias' = true"},
      {"llama-tiny", [](json& j) { j["mlp_bias"] = true; }, "'mlp_bias' = true"},
      {"llama-tiny", [](json& j) { j["sliding_window"] = 4096; }, "'sliding_window' = 4096"},
      {"llama-tiny", [](json& j) { j["head_dim"] = 32; }, "'head_dim' = 32"},
      {"llama-tiny", [](json& j) { j["hidden_act"] = "gelu"; }, "'hidden_act' = \"gelu\""},
      {"gpt2-tiny", [](json& j) { j["activation_function"] = "relu"; }, "'activation_function' = \"relu\""},
      {"gpt2-tiny", [](json& j) { j["layer_norm_epsilon"] = 1e-6; }, "'layer_norm_epsilon' = 1e-06"},
      {"gpt2-tiny", [](json& j) { j["tie_word_embeddings"] = false; }, "'tie_word_embeddings' = false"},
      {"gpt2-tiny", [](json& j) { j.erase("n_positions"); }, "no 'n_positions'"},
  };
  for (const auto& c : cases) {
    json j = fixture_config(c.model);
    c.edit(j);
    write_config(j);
    const std::string e = config_error();
    EXPECT_NE(e.find(c.want), std::string::npos) << c.want << " -> " << e;
    EXPECT_NE(e.find(dir_ + "/config.json"), std::string::npos) << "names the file: " << e;
  }
}

TEST(HfConfig, SetKeysThatDisagreeNameBoth) {
  const auto hf = read_model_config(kFixtures + "llama-tiny");
  core::Config cfg = core::parse_config("model:\n  n_layer: 3\n", "run.yaml", {"model.init_from=hf:" + kFixtures + "llama-tiny"});
  try {
    resolve_model_config(cfg);
    FAIL() << "accepted n_layer 3";
  } catch (const core::Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("model.n_layer = 3 disagrees with config.json num_hidden_layers = 2"), std::string::npos) << w;
  }
  // unset keys come from config.json; agreeing ones and a shorter Llama context are fine
  cfg = core::parse_config("model:\n  n_layer: 2\n  seq_len: 32\n  n_kv_head: 2\n", "run.yaml",
                           {"model.init_from=hf:" + kFixtures + "llama-tiny", "model.arch=llama"});
  const auto m = resolve_model_config(cfg);
  EXPECT_EQ(m.arch, "llama");
  EXPECT_EQ(m.n_embd, 64);
  EXPECT_EQ(m.seq_len, 32);
  EXPECT_EQ(m.init_from, "hf:" + kFixtures + "llama-tiny");
  cfg = core::parse_config("", "run.yaml", {"model.init_from=hf:" + kFixtures + "llama-tiny", "model.tie_embeddings=true"});
  EXPECT_THROW(resolve_model_config(cfg), core::Error);
  cfg = core::parse_config("", "run.yaml", {"model.init_from=hf:" + kFixtures + "gpt2-tiny", "model.arch=llama"});
  EXPECT_THROW(resolve_model_config(cfg), core::Error);
  cfg = core::parse_config("", "run.yaml", {"model.init_from=" + kFixtures + "gpt2-tiny"});
  EXPECT_THROW(resolve_model_config(cfg), core::Error);  // not hf:DIR
  // the checks that need the model wait for config.json: markov_vocab 300 > the default
  // vocab_size 64, but not > the fixture's 320
  cfg = core::parse_config("data:\n  markov_vocab: 300\n", "run.yaml", {"model.init_from=hf:" + kFixtures + "llama-tiny"});
  cfg.model = resolve_model_config(cfg);
  EXPECT_NO_THROW(core::validate_config(cfg));
  cfg.data.markov_vocab = 321;
  EXPECT_THROW(core::validate_config(cfg), core::Error);
  // without the set keys: values other than the defaults count as set
  core::ModelConfig c;
  c.n_embd = 128;
  EXPECT_THROW(check_model_config(hf, c, kFixtures + "llama-tiny"), core::Error);
  EXPECT_NO_THROW(check_model_config(hf, core::ModelConfig{}, kFixtures + "llama-tiny"));
}

TEST(HfNames, MappingIsExactlyTheFixturesTensors) {
  for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
    SCOPED_TRACE(name);
    const SafetensorsModel st(kFixtures + name);
    const auto arch = parallel::make_architecture(read_model_config(kFixtures + name));
    const auto mapping = hf_mapping(*arch);
    const auto names = hf_tensor_names(mapping);
    const auto file_names = st.names();
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()),
              std::set<std::string>(file_names.begin(), file_names.end()));
    EXPECT_EQ(names.size(), file_names.size()) << "each HF tensor once";
    for (const auto& p : mapping)
      for (const auto& pc : p.pieces) EXPECT_EQ(pc.shape, st.entry(pc.tensor).shape) << pc.tensor;
    EXPECT_TRUE(check_tensors(st, *arch).empty());
  }
  // both directions, spot checks of the table
  const auto arch = parallel::make_architecture(read_model_config(kFixtures + "llama-tiny"));
  const auto m = hf_mapping(*arch);
  auto find = [&](const std::string& ours) {
    for (const auto& p : m)
      if (p.ours == ours) return p;
    ADD_FAILURE() << ours;
    return HfParam{};
  };
  const auto qkv = find("h1.attn.qkv.w");
  ASSERT_EQ(qkv.pieces.size(), 3u);
  EXPECT_EQ(qkv.pieces[1].tensor, "model.layers.1.self_attn.k_proj.weight");
  EXPECT_EQ(qkv.pieces[1].rows, 32);  // 2 kv heads of 16
  EXPECT_EQ(find("h0.mlp.gate_up.w").pieces[1].tensor, "model.layers.0.mlp.up_proj.weight");
  const auto garch = parallel::make_architecture(read_model_config(kFixtures + "gpt2-tiny"));
  for (const auto& p : hf_mapping(*garch)) {
    if (p.ours == "h0.attn.proj.w") {
      EXPECT_EQ(p.pieces[0].tensor, "transformer.h.0.attn.c_proj.weight");
      EXPECT_TRUE(p.pieces[0].transposed);
    }
    if (p.ours == "h0.attn.qkv.b") {
      EXPECT_FALSE(p.pieces[0].transposed);
    }
  }
  EXPECT_EQ(hf_mapping(*garch, "")[0].pieces[0].tensor, "wte.weight");  // base GPT2Model files
}

TEST_F(HfImportChecks, MissingExtraAndMisshapenTensors) {
  const auto arch = parallel::make_architecture(read_model_config(kFixtures + "llama-tiny"));
  write_weights("llama-tiny", {"model.layers.1.mlp.up_proj.weight"}, {});
  try {
    check_tensors(SafetensorsModel(dir_), *arch);
    FAIL() << "accepted a missing tensor";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'model.layers.1.mlp.up_proj.weight' is missing"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(dir_ + "/model.safetensors"), std::string::npos) << e.what();
  }
  fs::remove(dir_ + "/model.safetensors");
  write_weights("llama-tiny", {}, {{"model.layers.0.self_attn.q_norm.weight", {1, 2}},
                                   {"model.rotary_emb.inv_freq", {1}}});
  const auto unknown = check_tensors(SafetensorsModel(dir_), *arch);
  EXPECT_EQ(unknown, std::vector<std::string>{"model.layers.0.self_attn.q_norm.weight"}) << "buffers are not reported";
  // a config that disagrees with the weights' shapes
  core::ModelConfig bigger = read_model_config(kFixtures + "llama-tiny");
  bigger.vocab_size = 321;
  try {
    check_tensors(SafetensorsModel(dir_), *parallel::make_architecture(bigger));
    FAIL() << "accepted a wrong shape";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'model.embed_tokens.weight' has shape [320, 64], config.json implies [321, 64]"),
              std::string::npos) << e.what();
  }
}

TEST_F(HfImportChecks, Gpt2TiedHeadMayBePresentOnlyEqual) {
  const auto arch = parallel::make_architecture(read_model_config(kFixtures + "gpt2-tiny"));
  const auto wte = SafetensorsModel(kFixtures + "gpt2-tiny").read_all("transformer.wte.weight");
  std::vector<float> head = wte;
  std::vector<TensorPlan> plan;
  {
    // the fixture plus lm_head.weight = wte (2-D)
    SafetensorsModel src(kFixtures + "gpt2-tiny");
    for (const auto& n : src.names()) plan.push_back({n, src.entry(n).shape, ""});
    plan.push_back({"lm_head.weight", {320, 64}, ""});
    for (int variant = 0; variant < 2; ++variant) {
      fs::remove(dir_ + "/model.safetensors");
      if (variant == 1) head[5] += 1.0f;
      SafetensorsWriter w(dir_, plan, "F32", 1ll << 40);
      for (const auto& n : src.names()) w.write(n, src.read_all(n).data());
      w.write("lm_head.weight", head.data());
      w.finish();
      if (variant == 0) {
        EXPECT_TRUE(check_tensors(SafetensorsModel(dir_), *arch).empty());
      } else {
        try {
          check_tensors(SafetensorsModel(dir_), *arch);
          FAIL() << "accepted an untied GPT-2 head";
        } catch (const core::Error& e) {
          EXPECT_NE(std::string(e.what()).find("'lm_head.weight' differs from 'transformer.wte.weight'"), std::string::npos)
              << e.what();
        }
      }
    }
  }
}

}  // namespace
