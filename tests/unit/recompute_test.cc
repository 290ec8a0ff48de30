// What: activation recomputation (train.recompute: full and selective, parallel/models/model.h
// Recompute) on one process, for GPT-2 and Llama with grouped kv heads:
//  - two accumulated micro-batches of forward + backward (the second with packed documents and
//    padding targets) give bitwise the losses, per-token losses, every gradient and the order
//    of the "gradient ready" reports of recompute none;
//  - the activation bytes drop by (n_layer - 1) blocks' internals (full) or (n_layer - 1)
//    attention states and MLP activations (selective), counted here from the layer shapes,
//    and Architecture::activation_bytes (the dry run) equals the built model's;
//  - KV-cached decoding after training and a training forward after decoding still agree
//    with recompute none.
// Why: the issue's "losses and gradients identical to none (bitwise on CPU)" and "activation
// memory at most 1/(number of layers) of none plus one block".
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/config.h"
#include "parallel/models/registry.h"

using mt::core::ModelConfig;
using mt::parallel::make_architecture;
using mt::parallel::make_model;
using mt::parallel::Model;
using mt::parallel::ModelContext;
using mt::parallel::Recompute;

namespace {

ModelConfig llama() {
  ModelConfig m;
  m.arch = "llama";
  m.n_layer = 3;
  m.n_head = 4;
  m.n_kv_head = 2;
  m.n_embd = 32;
  m.ffn_dim = 40;
  m.vocab_size = 37;
  m.seq_len = 16;
  m.init_std = 0.2;  // larger than usual so every path carries signal
  return m;
}

ModelConfig gpt2() {
  ModelConfig m = llama();
  m.arch = "gpt2";
  m.n_kv_head = 0;
  return m;
}

std::unique_ptr<Model> build(const ModelConfig& cfg, Recompute r) {
  ModelContext ctx;
  ctx.recompute = r;
  auto m = make_model(cfg, ctx);
  m->init_weights(7);
  return m;
}

std::vector<int32_t> tokens(int n, int V, int seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = static_cast<int32_t>(g() % V);
  return v;
}

struct Trace {
  std::vector<double> loss;
  std::vector<float> token_losses, grads;
  std::vector<int> ready;
  size_t act_bytes = 0;
};

// Two micro-batches accumulated: (3, 16) plain, then (3, 16) with two documents per row and
// some positions without a target.
Trace train(Model& m, int B, int T) {
  Trace r;
  const int V = m.arch().config().vocab_size;
  m.zero_grads();
  for (int mb = 0; mb < 2; ++mb) {
    const auto x = tokens(B * T, V, 11 + mb), y = tokens(B * T, V, 23 + mb);
    std::vector<int32_t> yy = y, docs(static_cast<size_t>(B * T), 0);
    if (mb == 1) {
      for (int i = 0; i < B * T; ++i) {
        docs[static_cast<size_t>(i)] = (i % T) < T / 3 ? 0 : 1;
        if (i % 5 == 0) yy[static_cast<size_t>(i)] = -1;
      }
    }
    r.loss.push_back(m.forward(x.data(), yy.data(), B, T, mb == 1 ? docs.data() : nullptr));
    r.token_losses.insert(r.token_losses.end(), m.losses(), m.losses() + B * T);
    m.backward(0.01f, [&](int i) { r.ready.push_back(i); });
    r.act_bytes = m.activation_bytes();
  }
  r.grads.assign(m.grads().f32(), m.grads().f32() + m.grads().numel());
  return r;
}

void expect_bitwise(const ModelConfig& cfg, Recompute mode) {
  const int B = 3, T = 16;
  auto none = build(cfg, Recompute::None), full = build(cfg, mode);
  const Trace a = train(*none, B, T), b = train(*full, B, T);
  ASSERT_EQ(a.loss.size(), b.loss.size());
  for (size_t i = 0; i < a.loss.size(); ++i) EXPECT_EQ(a.loss[i], b.loss[i]) << cfg.arch << " micro-batch " << i;
  ASSERT_EQ(a.token_losses.size(), b.token_losses.size());
  EXPECT_EQ(0, std::memcmp(a.token_losses.data(), b.token_losses.data(), a.token_losses.size() * sizeof(float)))
      << cfg.arch;
  ASSERT_EQ(a.grads.size(), b.grads.size());
  const auto& info = none->params_info();
  for (size_t p = 0; p < info.size(); ++p) {
    EXPECT_EQ(0, std::memcmp(a.grads.data() + info[p].offset, b.grads.data() + info[p].offset,
                             static_cast<size_t>(info[p].numel) * sizeof(float)))
        << cfg.arch << ": gradient of " << info[p].name << " differs";
  }
  double gsum = 0;
  for (float g : a.grads) gsum += std::fabs(g);
  EXPECT_GT(gsum, 0.0) << "no gradient at all: the comparison would be empty";
  EXPECT_EQ(a.ready, b.ready) << cfg.arch << ": gradient-ready order differs";
  EXPECT_FALSE(a.ready.empty());

  // memory: n_layer - 1 blocks' internals (full) or their attention probabilities and MLP
  // activations (selective) fewer, counted from the layer shapes (fp32, CPU attention keeps
  // T x T probabilities per local head)
  const double N = B * T, C = cfg.n_embd, L = cfg.n_layer, NH = cfg.n_head, HS = C / NH;
  double internals = 0, dropped = 0;
  if (cfg.arch == "gpt2") {
    internals = 2 * (N * C + 2 * N) + N * 3 * C + B * NH * T * T + N * C /*atty*/ + N * C /*res2*/ +
                2 * N * 4 * C /*fch, fch_gelu*/;
    dropped = B * NH * T * T + N * 4 * C /*fch_gelu*/;
  } else {
    const double NKV = cfg.n_kv_head, F = cfg.ffn_dim;
    internals = 2 * (N * C + N) + N * (NH + 2 * NKV) * HS + B * NH * T * T + N * NH * HS + N * C /*res2*/ +
                N * 2 * F + N * F;
    dropped = B * NH * T * T + N * F /*act*/;
  }
  const double saved = (L - 1) * (mode == Recompute::Full ? internals : dropped) * 4;
  EXPECT_EQ(static_cast<double>(a.act_bytes) - static_cast<double>(b.act_bytes), saved) << cfg.arch;
  const auto arch = make_architecture(cfg);
  EXPECT_EQ(arch->activation_bytes(B, T, 1, 4, T, Recompute::None), static_cast<double>(a.act_bytes)) << cfg.arch;
  EXPECT_EQ(arch->activation_bytes(B, T, 1, 4, T, mode), static_cast<double>(b.act_bytes)) << cfg.arch;

  // decoding after training, then training again after decoding (activations re-made)
  std::vector<float> la(static_cast<size_t>(B * 4 * cfg.vocab_size)), lb(la.size());
  const auto prompt = tokens(B * 4, cfg.vocab_size, 5);
  for (auto* m : {none.get(), full.get()}) {
    m->begin_decode(B, 8);
    m->decode(prompt.data(), B, 4, m == none.get() ? la.data() : lb.data(), /*all_positions=*/true);
    m->end_decode();
  }
  EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float))) << cfg.arch << ": decode differs";
  const Trace a2 = train(*none, 2, 12), b2 = train(*full, 2, 12);  // another shape: buffers re-made
  EXPECT_EQ(a2.loss, b2.loss) << cfg.arch;
  EXPECT_EQ(0, std::memcmp(a2.grads.data(), b2.grads.data(), a2.grads.size() * sizeof(float))) << cfg.arch;
  EXPECT_LT(b2.act_bytes, a2.act_bytes);
}

TEST(Recompute, Gpt2FullIsBitwiseNoneWithLessMemory) { expect_bitwise(gpt2(), Recompute::Full); }
TEST(Recompute, LlamaGqaFullIsBitwiseNoneWithLessMemory) { expect_bitwise(llama(), Recompute::Full); }
TEST(Recompute, Gpt2SelectiveIsBitwiseNoneWithLessMemory) { expect_bitwise(gpt2(), Recompute::Selective); }
TEST(Recompute, LlamaGqaSelectiveIsBitwiseNoneWithLessMemory) { expect_bitwise(llama(), Recompute::Selective); }

TEST(Recompute, LlamaUntiedOneLayer) {
  ModelConfig cfg = llama();
  cfg.n_layer = 1;  // the only block is the last: its forward's internals serve its backward
  cfg.tie_embeddings = false;
  auto none = build(cfg, Recompute::None);
  const Trace a = train(*none, 2, 8);
  for (Recompute mode : {Recompute::Full, Recompute::Selective}) {
    auto other = build(cfg, mode);
    const Trace b = train(*other, 2, 8);
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_EQ(0, std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * sizeof(float)));
    EXPECT_EQ(a.act_bytes, b.act_bytes);
  }
}

// The three modes order as intended on a shape where attention dominates (T = 16 of width
// 32): full < selective < none, in the model and in the architecture's figure alike.
TEST(Recompute, SelectiveLiesBetweenNoneAndFull) {
  for (const ModelConfig& cfg : {gpt2(), llama()}) {
    const auto arch = make_architecture(cfg);
    const double n = arch->activation_bytes(3, 16, 1, 4, 16, Recompute::None);
    const double s = arch->activation_bytes(3, 16, 1, 4, 16, Recompute::Selective);
    const double f = arch->activation_bytes(3, 16, 1, 4, 16, Recompute::Full);
    EXPECT_LT(f, s) << cfg.arch;
    EXPECT_LT(s, n) << cfg.arch;
    // tp 2 (half the heads and MLP width per rank): the figure still orders and shrinks
    const double s2 = arch->activation_bytes(3, 16, 2, 4, 16, Recompute::Selective);
    EXPECT_LT(s2, s) << cfg.arch;
    EXPECT_LT(arch->activation_bytes(3, 16, 2, 4, 16, Recompute::Full), s2) << cfg.arch;
  }
}

TEST(Recompute, ParseNamesTheKey) {
  EXPECT_EQ(mt::parallel::parse_recompute("none"), Recompute::None);
  EXPECT_EQ(mt::parallel::parse_recompute("full"), Recompute::Full);
  EXPECT_EQ(mt::parallel::parse_recompute("selective"), Recompute::Selective);
  try {
    mt::parallel::parse_recompute("partial");
    FAIL() << "partial accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("train.recompute"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("partial"), std::string::npos) << e.what();
  }
}

}  // namespace
