// The GPT model as a whole: backward agrees with finite differences of forward; padding
// vocab rows get no gradient; init is deterministic; the optimizer and LR schedule do what
// their formulas say; ZeRO-style split ranges update exactly like the whole buffer.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/config.h"
#include "parallel/models/registry.h"
#include "parallel/optimizer.h"

using mt::core::ModelConfig;
using mt::parallel::make_model;
using mt::parallel::Model;

namespace {

ModelConfig tiny() {
  ModelConfig m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 16;
  m.vocab_size = 11;  // padded to 64: exercises the padding columns
  m.seq_len = 6;
  return m;
}

struct Batch {
  std::vector<int32_t> x, y;
};
Batch make_batch(int B, int T, int V, int seed) {
  std::mt19937 g(seed);
  Batch b;
  for (int i = 0; i < B * T; ++i) {
    b.x.push_back(static_cast<int32_t>(g() % V));
    b.y.push_back(static_cast<int32_t>(g() % V));
  }
  return b;
}

TEST(Gpt2, BackwardMatchesFiniteDifferences) {
  auto owned = make_model(tiny());
  Model& model = *owned;
  model.init_weights(3);
  // larger weights than GPT-2's 0.02 so every path carries signal
  float* p = model.params().f32();
  for (const auto& info : model.params_info())
    if (info.init_std > 0)
      for (int64_t i = 0; i < info.numel; ++i) p[info.offset + i] *= 10.0f;
  const int B = 2, T = 5;
  Batch b = make_batch(B, T, 11, 1);
  model.zero_grads();
  model.forward(b.x.data(), b.y.data(), B, T);
  model.backward(1.0f / (B * T));
  std::vector<float> g(model.grads().f32(), model.grads().f32() + model.num_local_params());

  std::mt19937 rng(5);
  int checked = 0;
  double max_err = 0;
  for (const auto& info : model.params_info()) {
    for (int trial = 0; trial < 6; ++trial) {
      int64_t i = info.offset + static_cast<int64_t>(rng() % info.numel);
      if (info.name == "wte") i = info.offset + (rng() % 11) * 16 + rng() % 16;  // real rows
      const float keep = p[i];
      const float eps = 2e-3f;
      p[i] = keep + eps;
      const double lp = model.forward(b.x.data(), b.y.data(), B, T);
      p[i] = keep - eps;
      const double lm = model.forward(b.x.data(), b.y.data(), B, T);
      p[i] = keep;
      const double fd = (lp - lm) / (2.0 * eps);
      const double err = std::fabs(fd - g[i]) / std::max(1e-2, std::fabs(fd) + std::fabs(g[i]));
      max_err = std::max(max_err, err);
      EXPECT_LT(err, 2e-2) << info.name << "[" << i - info.offset << "] analytic " << g[i] << " fd " << fd;
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(Gpt2, PaddingVocabRowsGetNoGradientAndLossIsFinite) {
  auto owned = make_model(tiny());
  Model& model = *owned;
  model.init_weights(1);
  Batch b = make_batch(2, 6, 11, 2);
  model.zero_grads();
  const double loss = model.forward(b.x.data(), b.y.data(), 2, 6);
  EXPECT_NEAR(loss, std::log(11.0), 0.3);  // near-uniform over the 11 REAL tokens, not 64
  model.backward(1.0f / 12);
  const auto& wte = model.params_info()[0];
  ASSERT_EQ(wte.name, "wte");
  const float* g = model.grads().f32() + wte.offset;
  for (int64_t r = 11; r < wte.local_shape[0]; ++r)
    for (int c = 0; c < 16; ++c) ASSERT_EQ(g[r * 16 + c], 0.0f) << "padding row " << r;
}

TEST(Gpt2, InitIsDeterministicAndFollowsGpt2) {
  ModelConfig m = tiny();
  m.n_embd = 64;
  m.n_head = 4;
  m.vocab_size = 500;
  auto pa = make_model(m), pb = make_model(m), pc = make_model(m);
  Model &a = *pa, &b = *pb, &c = *pc;
  a.init_weights(9);
  b.init_weights(9);
  c.init_weights(10);
  ASSERT_EQ(0, std::memcmp(a.params().raw(), b.params().raw(), a.params().nbytes()));
  ASSERT_NE(0, std::memcmp(a.params().raw(), c.params().raw(), a.params().nbytes()));
  for (const auto& info : a.params_info()) {
    const float* v = a.params().f32() + info.offset;
    double s2 = 0;
    for (int64_t i = 0; i < info.numel; ++i) s2 += v[i] * v[i];
    const double rms = std::sqrt(s2 / info.numel);
    if (info.name.find("ln") != std::string::npos && info.name.back() == 'w') {
      EXPECT_EQ(v[0], 1.0f);
    } else if (info.init_std == 0) {
      EXPECT_EQ(rms, 0.0) << info.name;
    } else if (info.name.find("proj.w") != std::string::npos) {
      EXPECT_NEAR(rms, 0.02 / std::sqrt(2.0 * m.n_layer), 0.004) << info.name;
    } else {
      EXPECT_NEAR(rms, 0.02, 0.003) << info.name;
    }
  }
  EXPECT_EQ(a.num_full_params(), 500 * 64 + 6 * 64 + 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64);
}

TEST(Optimizer, AdamWMatchesFormulaAndSplitRangesMatchWhole) {
  ModelConfig m = tiny();
  mt::parallel::ModelContext ctx;
  ctx.flat_align = 64;
  auto owned = make_model(m, ctx);
  Model& model = *owned;
  model.init_weights(2);
  const int64_t n = model.num_local_params();
  std::vector<float> grads(n);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& g : grads) g = nd(rng);
  mt::core::OptimConfig oc;
  std::vector<float> p1(model.params().f32(), model.params().f32() + n), p2 = p1, p0 = p1;
  mt::parallel::Optimizer whole(oc, model.params_info(), {{0, n}});
  const int64_t mid = n / 2 / 64 * 64;
  mt::parallel::Optimizer lo(oc, model.params_info(), {{0, mid}});
  mt::parallel::Optimizer hi(oc, model.params_info(), {{mid, n}});
  for (int t = 1; t <= 3; ++t) {
    whole.step(p1.data(), grads.data(), 0.01f, t);
    lo.step(p2.data(), grads.data(), 0.01f, t);
    hi.step(p2.data(), grads.data(), 0.01f, t);
  }
  ASSERT_EQ(0, std::memcmp(p1.data(), p2.data(), n * sizeof(float)));
  // one element by hand, first step of a fresh optimizer on a decayed weight (qkv.w)
  const auto& q = model.params_info()[4];
  ASSERT_EQ(q.name, "h0.attn.qkv.w");
  std::vector<float> p3 = p0;
  mt::parallel::Optimizer one(oc, model.params_info(), {{0, n}});
  one.step(p3.data(), grads.data(), 0.01f, 1);
  const int64_t i = q.offset + 3;
  const double g = grads[i], mhat = g, vhat = g * g;
  const double expect = p0[i] - 0.01 * (mhat / (std::sqrt(vhat) + oc.eps) + oc.weight_decay * p0[i]);
  EXPECT_NEAR(p3[i], expect, 1e-6);
  // a layernorm weight is not decayed
  const auto& ln = model.params_info()[2];
  const int64_t j = ln.offset;
  EXPECT_NEAR(p3[j], p0[j] - 0.01 * (grads[j] / (std::fabs(grads[j]) + oc.eps)), 1e-6);
}

TEST(Optimizer, LearningRateSchedule) {
  mt::core::OptimConfig o;
  o.lr = 1.0;
  o.warmup_steps = 10;
  o.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(mt::parallel::learning_rate(o, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(mt::parallel::learning_rate(o, 9, 110), 1.0);
  EXPECT_NEAR(mt::parallel::learning_rate(o, 10, 110), 1.0, 1e-12);
  EXPECT_NEAR(mt::parallel::learning_rate(o, 60, 110), 0.55, 1e-12);  // half-way: mean of 1 and 0.1
  EXPECT_NEAR(mt::parallel::learning_rate(o, 110, 110), 0.1, 1e-12);
  o.schedule = "constant";
  EXPECT_DOUBLE_EQ(mt::parallel::learning_rate(o, 50, 110), 1.0);
}

}  // namespace

namespace {
TEST(Gpt2, NegativeTargetsCarryNoLossAndNoGradient) {
  auto owned = make_model(tiny());
  Model& model = *owned;
  model.init_weights(4);
  const int B = 2, T = 6;
  Batch b = make_batch(B, T, 11, 9);
  model.forward(b.x.data(), b.y.data(), B, T);
  std::vector<float> full(model.losses(), model.losses() + B * T);
  std::vector<int32_t> masked = b.y;
  double sum = 0;
  int valid = 0;
  for (int i = 0; i < B * T; ++i) {
    if (i % 3 == 1) {
      masked[i] = -1;
    } else {
      sum += full[i];
      ++valid;
    }
  }
  model.zero_grads();
  const double mean = model.forward(b.x.data(), masked.data(), B, T);
  EXPECT_EQ(model.loss_tokens(), valid);
  EXPECT_NEAR(mean, sum / valid, 1e-6);
  for (int i = 0; i < B * T; ++i) EXPECT_EQ(model.losses()[i], i % 3 == 1 ? 0.0f : full[i]);
  // all targets masked: no gradient at all
  std::vector<int32_t> none(B * T, -1);
  model.zero_grads();
  model.forward(b.x.data(), none.data(), B, T);
  model.backward(1.0f);
  const float* g = model.grads().f32();
  for (int64_t i = 0; i < model.num_local_params(); ++i) ASSERT_EQ(g[i], 0.0f) << i;
}
}  // namespace
