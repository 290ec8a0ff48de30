// What: activation recomputation inside a tensor-parallel group (tp 2 at np 2; at np 4 two
// tp-2 groups side by side, dp 2 x tp 2): GPT-2 and Llama (grouped kv heads, and a single kv
// head replicated on both tp ranks, whose weight gradient is summed over the group) built
// with train.recompute selective and full give, on every rank, bitwise the losses, per-token
// losses, gradient slice and "gradient ready" order of the same tp slice with recompute none,
// over two accumulated micro-batches (the second with packed documents and padding targets);
// and the activation bytes of the tp slice equal Architecture::activation_bytes at tp 2.
// Why: full recomputation re-issues the block's tp all-reduces, selective must issue none
// (its recomputed attention and MLP activation are local to a rank's heads and columns): a
// collective out of order would hang or mix values, a missed one would change the gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/config.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"
#include "parallel/models/registry.h"

using namespace mt::parallel;

namespace {

struct Trace {
  std::vector<double> loss;
  std::vector<float> token_losses, grads;
  std::vector<int> ready;
  size_t act_bytes = 0;
};

Trace train(Model& m, int B, int T) {
  Trace r;
  const int V = m.arch().config().vocab_size;
  m.zero_grads();
  for (int mb = 0; mb < 2; ++mb) {
    std::mt19937 g(17 + mb);  // the same tokens on every rank (a tp group sees one batch)
    std::vector<int32_t> x(B * T), y(B * T), docs(B * T, 0);
    for (auto& v : x) v = static_cast<int32_t>(g() % V);
    for (auto& v : y) v = static_cast<int32_t>(g() % V);
    if (mb == 1) {
      for (int i = 0; i < B * T; ++i) {
        docs[i] = (i % T) < T / 2 ? 0 : 1;
        if (i % 7 == 3) y[i] = -1;
      }
    }
    r.loss.push_back(m.forward(x.data(), y.data(), B, T, mb == 1 ? docs.data() : nullptr));
    r.token_losses.insert(r.token_losses.end(), m.losses(), m.losses() + B * T);
    m.backward(0.02f, [&](int i) { r.ready.push_back(i); });
    r.act_bytes = m.activation_bytes();
  }
  r.grads.assign(m.grads().f32(), m.grads().f32() + m.grads().numel());
  return r;
}

void check(const mt::core::ModelConfig& cfg) {
  auto world = make_world_communicator("mpi");
  const int tp = 2;
  Mesh mesh(world->size(), world->size() / tp, tp);
  MeshComms comms = make_mesh_comms(*world, mesh);
  auto build = [&](Recompute r) {
    ModelContext ctx;
    ctx.tp = tp;
    ctx.tp_rank = comms.tp->rank();
    ctx.tp_comm = comms.tp.get();
    ctx.recompute = r;
    auto m = make_model(cfg, ctx);
    m->init_weights(5);
    return m;
  };
  const int B = 2, T = 12;
  auto none = build(Recompute::None);
  const Trace a = train(*none, B, T);
  double gsum = 0;
  for (float g : a.grads) gsum += std::fabs(g);
  EXPECT_GT(gsum, 0.0) << "no gradient: the comparison would be empty";
  const auto arch = make_architecture(cfg);
  EXPECT_EQ(arch->activation_bytes(B, T, tp, 4, T, Recompute::None), static_cast<double>(a.act_bytes)) << cfg.arch;
  for (Recompute r : {Recompute::Selective, Recompute::Full}) {
    const char* name = r == Recompute::Selective ? "selective" : "full";
    auto other = build(r);
    const Trace b = train(*other, B, T);
    EXPECT_EQ(a.loss, b.loss) << cfg.arch << " " << name << " rank " << world->rank();
    ASSERT_EQ(a.token_losses.size(), b.token_losses.size());
    EXPECT_EQ(0, std::memcmp(a.token_losses.data(), b.token_losses.data(), a.token_losses.size() * sizeof(float)))
        << cfg.arch << " " << name;
    const auto& info = none->params_info();
    ASSERT_EQ(a.grads.size(), b.grads.size());
    for (const ParamInfo& p : info) {
      EXPECT_EQ(0, std::memcmp(a.grads.data() + p.offset, b.grads.data() + p.offset,
                               static_cast<size_t>(p.numel) * sizeof(float)))
          << cfg.arch << " " << name << ": gradient of " << p.name << " differs (rank " << world->rank() << ")";
    }
    EXPECT_EQ(a.ready, b.ready) << cfg.arch << " " << name;
    EXPECT_LT(b.act_bytes, a.act_bytes) << cfg.arch << " " << name;
    EXPECT_EQ(arch->activation_bytes(B, T, tp, 4, T, r), static_cast<double>(b.act_bytes)) << cfg.arch << " " << name;
  }
}

mt::core::ModelConfig base(const char* arch) {
  mt::core::ModelConfig m;
  m.arch = arch;
  m.n_layer = 3;
  m.n_head = 4;
  m.n_embd = 32;
  m.vocab_size = 45;
  m.seq_len = 12;
  m.init_std = 0.2;
  return m;
}

TEST(RecomputeTp, Gpt2SelectiveAndFullAreBitwiseNone) { check(base("gpt2")); }

TEST(RecomputeTp, LlamaGqaSelectiveAndFullAreBitwiseNone) {
  mt::core::ModelConfig m = base("llama");
  m.n_kv_head = 2;
  m.ffn_dim = 48;
  check(m);
}

TEST(RecomputeTp, LlamaReplicatedKvHeadSelectiveAndFullAreBitwiseNone) {
  mt::core::ModelConfig m = base("llama");
  m.n_kv_head = 1;  // fewer kv heads than tp ranks: replicated, gradient summed over the group
  m.ffn_dim = 40;
  m.tie_embeddings = false;
  check(m);
}

}  // namespace
