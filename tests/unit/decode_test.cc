// What: KV-cached decoding (Model::begin_decode / decode, kernels attention_decode and
// kv_cache_append) on one process, against independent references:
//  - kernels: attention_decode over a cache filled chunk by chunk (a prefill, then single
//    tokens) equals attention_forward's rows bit for bit, for multi-head and grouped kv heads;
//  - models (GPT-2 tied; Llama with grouped kv heads, untied and tied; Llama multi-head), B = 2
//    rows, a vocabulary that is not a multiple of 64:
//      * the per-token losses of the TRAINING forward(inputs, targets) equal
//        -log softmax(decode logits)[target] computed here from decode's all-position logits;
//      * a prompt (all positions) then one token per call gives the logits of decoding the
//        whole sequence at once, position by position;
//  - errors: decoding past the cache's max_len or model.seq_len names both; decode without
//    begin_decode; the training forward still works (and gives the same losses) afterwards;
//    an architecture without decoding says so, naming model.arch.
// Why: the generation issue's "decode must equal the training forward" (issue #15).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "kernels/cpu/kernels.h"
#include "parallel/models/model.h"
#include "parallel/models/registry.h"

using mt::core::ModelConfig;
using mt::parallel::make_model;

namespace {

std::vector<float> randn(size_t n, int seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<int32_t> tokens(int n, int V, int seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = static_cast<int32_t>(g() % V);
  return v;
}

void kernel_matches_forward(int NH, int NKV) {
  namespace k = mt::kernels::cpu;
  const int B = 2, T = 11, HS = 8, C = NH * HS, C3 = (NH + 2 * NKV) * HS, max_len = 13;
  const auto qkv = randn(static_cast<size_t>(B) * T * C3, NH * 10 + NKV);
  std::vector<float> ref(static_cast<size_t>(B) * T * C), att(static_cast<size_t>(B) * NH * T * T);
  k::attention_forward(ref.data(), att.data(), qkv.data(), nullptr, B, T, C, NH, NKV);

  std::vector<float> kc(static_cast<size_t>(B) * NKV * max_len * HS, NAN), vc(kc.size(), NAN);
  std::vector<float> got(ref.size(), NAN);
  // chunks of new positions: a prefill of 4, then 1, 1, 3, 2 (T = 11)
  int past = 0;
  for (int n : {4, 1, 1, 3, 2}) {
    std::vector<float> chunk(static_cast<size_t>(B) * n * C3), out(static_cast<size_t>(B) * n * C);
    for (int b = 0; b < B; ++b)
      std::copy_n(qkv.data() + (static_cast<size_t>(b) * T + past) * C3, static_cast<size_t>(n) * C3,
                  chunk.data() + static_cast<size_t>(b) * n * C3);
    k::kv_cache_append(kc.data(), vc.data(), chunk.data(), B, n, past, max_len, NH, NKV, HS);
    k::attention_decode(out.data(), chunk.data(), kc.data(), vc.data(), B, n, past, max_len, NH, NKV, HS);
    for (int b = 0; b < B; ++b)
      std::copy_n(out.data() + static_cast<size_t>(b) * n * C, static_cast<size_t>(n) * C,
                  got.data() + (static_cast<size_t>(b) * T + past) * C);
    past += n;
  }
  ASSERT_EQ(past, T);
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(got[i], ref[i]) << "NH " << NH << " NKV " << NKV << " at " << i;
}

ModelConfig llama(int n_kv, bool tied) {
  ModelConfig m;
  m.arch = "llama";
  m.n_layer = 2;
  m.n_head = 4;
  m.n_kv_head = n_kv;
  m.n_embd = 32;
  m.ffn_dim = 40;
  m.vocab_size = 37;
  m.seq_len = 16;
  m.init_std = 0.2;  // larger than usual so every path carries signal
  m.tie_embeddings = tied;
  return m;
}

ModelConfig gpt2() {
  ModelConfig m = llama(4, true);
  m.arch = "gpt2";
  return m;
}

// max |a - b| over a row of V logits, relative to the row's largest |logit|.
double row_rel_diff(const float* a, const float* b, int V) {
  double d = 0, ref = 0;
  for (int v = 0; v < V; ++v) {
    d = std::max(d, static_cast<double>(std::fabs(a[v] - b[v])));
    ref = std::max(ref, static_cast<double>(std::fabs(b[v])));
  }
  return d / std::max(ref, 1e-30);
}

void decode_equals_forward(const ModelConfig& cfg) {
  const int B = 2, T = 12, V = cfg.vocab_size, P = 5;
  auto m = make_model(cfg, {});
  m->init_weights(5);
  const auto seq = tokens(B * (T + 1), V, 9);  // row b: seq[b*(T+1) .. +T]
  std::vector<int32_t> x(B * T), y(B * T);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) x[b * T + t] = seq[b * (T + 1) + t], y[b * T + t] = seq[b * (T + 1) + t + 1];
  m->forward(x.data(), y.data(), B, T);
  const std::vector<float> losses(m->losses(), m->losses() + B * T);

  // the whole sequence in one decode call: every position's logits
  std::vector<float> full(static_cast<size_t>(B) * T * V);
  m->begin_decode(B, T);
  EXPECT_EQ(m->kv_cache_bytes(), static_cast<size_t>(2 * cfg.n_layer) * B * std::max(1, cfg.n_kv_head) * T *
                                     (cfg.n_embd / cfg.n_head) * sizeof(float));
  m->decode(x.data(), B, T, full.data(), /*all_positions=*/true);
  EXPECT_EQ(m->decode_len(), T);
  for (int i = 0; i < B * T; ++i) {
    const float* z = full.data() + static_cast<size_t>(i) * V;
    const double mx = *std::max_element(z, z + V);
    double se = 0;
    for (int v = 0; v < V; ++v) se += std::exp(static_cast<double>(z[v]) - mx);
    const double loss = std::log(se) + mx - z[y[i]];
    EXPECT_NEAR(loss, losses[i], 1e-5 * std::fabs(losses[i]) + 1e-6) << cfg.arch << " position " << i;
  }

  // a prompt of P positions (all their logits), then one position per call (the last logits)
  m->begin_decode(B, T);
  std::vector<int32_t> prompt(B * P);
  for (int b = 0; b < B; ++b) std::copy_n(x.data() + b * T, P, prompt.data() + b * P);
  std::vector<float> pre(static_cast<size_t>(B) * P * V);
  m->decode(prompt.data(), B, P, pre.data(), true);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < P; ++t)
      EXPECT_LE(row_rel_diff(pre.data() + (static_cast<size_t>(b) * P + t) * V,
                             full.data() + (static_cast<size_t>(b) * T + t) * V, V), 1e-5)
          << cfg.arch << " prefill row " << b << " position " << t;
  std::vector<float> step(static_cast<size_t>(B) * V);
  for (int t = P; t < T; ++t) {
    const int32_t next[B] = {x[t], x[T + t]};
    m->decode(next, B, 1, step.data());
    for (int b = 0; b < B; ++b)
      EXPECT_LE(row_rel_diff(step.data() + static_cast<size_t>(b) * V, full.data() + (static_cast<size_t>(b) * T + t) * V,
                             V), 1e-5)
          << cfg.arch << " step row " << b << " position " << t;
  }
  // the cache is full: one more names max_len and model.seq_len
  try {
    m->decode(x.data(), B, 1, step.data());
    ADD_FAILURE() << "decode past max_len did not throw";
  } catch (const mt::core::Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("max_len 12"), std::string::npos) << w;
    EXPECT_NE(w.find("model.seq_len"), std::string::npos) << w;
  }
  // the last position's logits without all_positions, from a prefill of the whole row
  m->begin_decode(B, T);
  m->decode(x.data(), B, T, step.data());
  for (int b = 0; b < B; ++b)
    EXPECT_LE(row_rel_diff(step.data() + static_cast<size_t>(b) * V,
                           full.data() + (static_cast<size_t>(b) * T + T - 1) * V, V), 1e-6)
        << cfg.arch << " last-position prefill row " << b;
  m->end_decode();
  // training works again and gives the same losses
  m->forward(x.data(), y.data(), B, T);
  for (int i = 0; i < B * T; ++i) EXPECT_EQ(m->losses()[i], losses[i]) << cfg.arch;
}

}  // namespace

TEST(DecodeKernel, MultiHeadMatchesForward) { kernel_matches_forward(4, 4); }
TEST(DecodeKernel, GroupedKvHeadsMatchForward) { kernel_matches_forward(6, 2); }
TEST(DecodeKernel, MultiQueryMatchesForward) { kernel_matches_forward(3, 1); }

TEST(Decode, Gpt2EqualsForward) { decode_equals_forward(gpt2()); }
TEST(Decode, LlamaGqaUntiedEqualsForward) { decode_equals_forward(llama(2, false)); }
TEST(Decode, LlamaGqaTiedEqualsForward) { decode_equals_forward(llama(2, true)); }
TEST(Decode, LlamaMultiHeadEqualsForward) { decode_equals_forward(llama(4, false)); }

TEST(Decode, Errors) {
  auto m = make_model(llama(2, false), {});
  m->init_weights(1);
  std::vector<int32_t> t(20, 1);
  std::vector<float> out(37 * 20);
  EXPECT_THROW(m->decode(t.data(), 1, 1, out.data()), mt::core::Error);  // no begin_decode
  try {
    m->begin_decode(1, 17);
    ADD_FAILURE() << "a cache longer than model.seq_len was accepted";
  } catch (const mt::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.seq_len is 16"), std::string::npos) << e.what();
  }
  m->begin_decode(1, 16);
  EXPECT_THROW(m->decode(t.data(), 2, 1, out.data()), mt::core::Error);  // other B
  m->decode(t.data(), 1, 10, out.data());
  try {
    m->decode(t.data(), 1, 7, out.data());
    ADD_FAILURE() << "decode past model.seq_len did not throw";
  } catch (const mt::core::Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("10 cached + 7 new"), std::string::npos) << w;
    EXPECT_NE(w.find("model.seq_len is 16"), std::string::npos) << w;
  }
  std::vector<int32_t> bad(1, 37);
  EXPECT_THROW(m->decode(bad.data(), 1, 1, out.data()), mt::core::Error);  // outside the vocabulary
}

namespace {
// An architecture that only trains (one bias vector, no decoding): Model's defaults apply.
class TrainOnlyArch final : public mt::parallel::Architecture {
 public:
  explicit TrainOnlyArch(const ModelConfig& c) : Architecture(c) {}
  std::string name() const override { return "train_only"; }
  std::string tp_violation(int) const override { return ""; }
  std::string tp_constraint() const override { return ""; }
  std::vector<mt::parallel::ParamSpec> param_specs() const override { return {{"b", {4}, {}, false, 0, 0, -1}}; }
  double flops_per_token(int) const override { return 0; }
  TpTraffic tp_traffic(int64_t, int) const override { return {}; }
  SampleCost sample_cost() const override { return {}; }
  std::vector<std::pair<std::string, int64_t>> shape_keys() const override { return {}; }
  std::string describe(int) const override { return "train_only"; }
  std::unique_ptr<mt::parallel::Model> build(const mt::parallel::ModelContext& ctx) const override;
};
class TrainOnlyModel final : public mt::parallel::Model {
 public:
  using Model::Model;
  double forward(const int32_t*, const int32_t*, int, int, const int32_t*) override { return 0; }
  void backward(float, const mt::parallel::GradReadyFn&) override {}
  size_t activation_bytes() const override { return 0; }
};
std::unique_ptr<mt::parallel::Model> TrainOnlyArch::build(const mt::parallel::ModelContext& ctx) const {
  return std::make_unique<TrainOnlyModel>(shared_from_this(), ctx);
}
}  // namespace

TEST(Decode, ArchitectureWithoutDecoding) {
  auto arch = std::make_shared<TrainOnlyArch>(llama(2, false));
  auto m = arch->build({});
  try {
    m->begin_decode(1, 4);
    ADD_FAILURE() << "no error";
  } catch (const mt::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.arch train_only does not support incremental decoding"),
              std::string::npos)
        << e.what();
  }
  int32_t t = 0;
  float out[4];
  EXPECT_THROW(m->decode(&t, 1, 1, out), mt::core::Error);
}
