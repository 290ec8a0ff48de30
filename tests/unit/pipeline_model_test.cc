// What: pipeline stages equal the whole model, in one process (tp 1, no communicator). For
// GPT-2 and Llama (tied and untied head), layouts pp 2 (uneven split), pp 4 and interleaved
// (pp 2, two virtual stages per rank), and recomputation none / full / selective: one Model
// per pp rank (ModelContext::stage) runs the virtual stages in pipeline order, the residual
// stream copied from chunk_output of virtual stage k to chunk_input of k + 1, the loss on the
// head, the backward in reverse (chunk_input_grad to the previous chunk_output_grad), over two
// accumulated micro-batches (the second with packed documents, so positions restart in every
// stage). Checks: the loss bitwise, every parameter's gradient by name bitwise (the tied
// embedding: first + last stage's copies against the whole model's within a relative 1e-6,
// the summation order differs), each held parameter reported ready once per backward.
// Also: models sharing a stage's parameters (ModelContext::share_with) accumulate into the
// same gradients: f(inst0, mb0), f(inst1, mb1), b(inst0), b(inst1) equals one instance's
// f b f b, bitwise.
// Why: issue 17's "tested equal to one process" starts here: the schedules, communicator and
// trainer only move these buffers around.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/config.h"
#include "parallel/models/model.h"
#include "parallel/models/registry.h"
#include "parallel/pipeline/stages.h"

using mt::core::ModelConfig;
using mt::parallel::make_architecture;
using mt::parallel::Model;
using mt::parallel::ModelContext;
using mt::parallel::Recompute;

namespace {

constexpr int kLayers = 4, kB = 2, kT = 8;

ModelConfig llama(bool tied) {
  ModelConfig m;
  m.arch = "llama";
  m.n_layer = kLayers;
  m.n_head = 4;
  m.n_kv_head = 2;
  m.n_embd = 32;
  m.ffn_dim = 40;
  m.vocab_size = 37;
  m.seq_len = 16;
  m.init_std = 0.2;  // larger than usual so every path carries signal
  m.tie_embeddings = tied;
  return m;
}

ModelConfig gpt2() {
  ModelConfig m = llama(true);
  m.arch = "gpt2";
  return m;
}

std::string label(const ModelConfig& cfg) {
  return cfg.arch + (cfg.arch == "llama" ? (cfg.tie_embeddings ? " (tied)" : " (untied)") : "");
}

// A micro-batch of (kB, kT): token ids, targets (a few without target), doc ids or none.
struct MicroBatch {
  std::vector<int32_t> x, y, doc;
  const int32_t* doc_ids() const { return doc.empty() ? nullptr : doc.data(); }
};
MicroBatch micro_batch(int V, int seed, bool packed) {
  std::mt19937 g(static_cast<unsigned>(seed));
  MicroBatch mb;
  for (int i = 0; i < kB * kT; ++i) {
    mb.x.push_back(static_cast<int32_t>(g() % V));
    mb.y.push_back(i % 7 == 3 ? -1 : static_cast<int32_t>(g() % V));
  }
  if (packed)  // two documents per row, boundaries at 3 and 5
    for (int i = 0; i < kB * kT; ++i) mb.doc.push_back(i % kT < (i < kT ? 3 : 5) ? 0 : 1);
  return mb;
}

// A pipeline layout: the virtual stages in pipeline order, over pp ranks.
struct Layout {
  std::string name;
  int pp;
  std::vector<std::pair<int, int>> vstages;
};
std::vector<Layout> layouts() {
  return {{"pp 2", 2, {{0, 1}, {1, kLayers}}},
          {"pp 4", 4, {{0, 1}, {1, 2}, {2, 3}, {3, 4}}},
          {"interleaved pp 2 x 2", 2, {{0, 1}, {1, 2}, {2, 3}, {3, 4}}}};
}

// One Model per pp rank, built from the layout (ModelContext::stage).
std::vector<std::unique_ptr<Model>> build_stages(const ModelConfig& cfg, const Layout& lay, Recompute rc) {
  const auto arch = make_architecture(cfg);
  std::vector<std::unique_ptr<Model>> v;
  for (int r = 0; r < lay.pp; ++r) {
    ModelContext ctx;
    ctx.recompute = rc;
    ctx.stage = mt::parallel::stage_layers(lay.vstages, lay.pp, r);
    v.push_back(arch->build(ctx));
  }
  return v;
}

// The Models of one micro-batch, one per pp rank (they may share other instances' parameters).
using Pipe = std::vector<Model*>;

// Forward of mb through every virtual stage in order; returns the head's loss.
double pipe_forward(const Pipe& p, const Layout& lay, const MicroBatch& mb) {
  const int nv = static_cast<int>(lay.vstages.size());
  const void* prev = nullptr;
  double loss = -1;
  for (int v = 0; v < nv; ++v) {
    Model& m = *p[static_cast<size_t>(v % lay.pp)];
    const int c = v / lay.pp;
    EXPECT_EQ(m.chunk_layers(c), lay.vstages[static_cast<size_t>(v)]);
    EXPECT_EQ(m.chunk_embeds(c), v == 0);
    EXPECT_EQ(m.chunk_has_head(c), v == nv - 1);
    if (v > 0) {
      const int64_t n = m.stream_numel(kB, kT);
      std::memcpy(m.chunk_input(c, kB, kT), prev, static_cast<size_t>(n) * sizeof(float));  // fp32 on the CPU
    }
    const double l = m.forward_chunk(c, mb.x.data(), mb.y.data(), kB, kT, mb.doc_ids());
    if (m.chunk_has_head(c)) {
      loss = l;
    } else {
      prev = m.chunk_output(c);
      EXPECT_EQ(l, 0.0);
    }
  }
  return loss;
}

// Backward of the last forward of p in reverse pipeline order; ready[r][i]: how many times
// rank r's parameter i was reported ready.
void pipe_backward(const Pipe& p, const Layout& lay, float w, std::vector<std::vector<int>>* ready = nullptr) {
  const int nv = static_cast<int>(lay.vstages.size());
  const void* prev = nullptr;
  for (int v = nv - 1; v >= 0; --v) {
    const int r = v % lay.pp, c = v / lay.pp;
    Model& m = *p[static_cast<size_t>(r)];
    if (v < nv - 1) {
      const int64_t n = m.stream_numel(kB, kT);
      std::memcpy(m.chunk_output_grad(c), prev, static_cast<size_t>(n) * sizeof(float));
    }
    mt::parallel::GradReadyFn hook;
    if (ready) hook = [ready, r](int i) { ++(*ready)[static_cast<size_t>(r)][static_cast<size_t>(i)]; };
    m.backward_chunk(c, w, hook);
    if (v > 0) prev = m.chunk_input_grad(c);
  }
}

Pipe pipe_of(const std::vector<std::unique_ptr<Model>>& v) {
  Pipe p;
  for (const auto& m : v) p.push_back(m.get());
  return p;
}

std::vector<float> grad_of(Model& m, int local) {
  const auto& info = m.params_info()[static_cast<size_t>(local)];
  return {m.grads().f32() + info.offset, m.grads().f32() + info.offset + info.numel};
}

// The pipeline against the whole model over two accumulated micro-batches; *tied_worst
// grows to the worst relative difference of the tied embedding's gradient.
void stages_equal_whole(const ModelConfig& cfg, const Layout& lay, Recompute rc, double* tied_worst) {
  const std::string what = label(cfg) + ", " + lay.name + ", recompute " + std::to_string(static_cast<int>(rc));
  const auto arch = make_architecture(cfg);
  ModelContext wctx;
  wctx.recompute = rc;
  auto whole = arch->build(wctx);
  auto stages = build_stages(cfg, lay, rc);
  whole->init_weights(11);
  for (auto& s : stages) s->init_weights(11);
  const Pipe p = pipe_of(stages);
  const MicroBatch mbs[2] = {micro_batch(cfg.vocab_size, 1, false), micro_batch(cfg.vocab_size, 2, true)};
  const float w = 1.0f / (2 * kB * kT);
  for (const MicroBatch& mb : mbs) {
    const double lw = whole->forward(mb.x.data(), mb.y.data(), kB, kT, mb.doc_ids());
    whole->backward(w);
    const double lp = pipe_forward(p, lay, mb);
    EXPECT_EQ(lp, lw) << what << ": loss";
    std::vector<std::vector<int>> ready;
    for (auto& s : stages) ready.emplace_back(s->params_info().size(), 0);
    pipe_backward(p, lay, w, &ready);
    for (size_t r = 0; r < ready.size(); ++r)
      for (size_t i = 0; i < ready[r].size(); ++i)
        EXPECT_EQ(ready[r][i], 1) << what << ": rank " << r << " " << stages[r]->params_info()[i].name << " ready";
  }
  // every parameter by name: held by one rank (bitwise), or the tied embedding by the first
  // and last (summed)
  const auto specs = arch->param_specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::vector<float> ref = grad_of(*whole, whole->local_param(static_cast<int>(i)));
    std::vector<int> holders;
    for (int r = 0; r < lay.pp; ++r)
      if (stages[static_cast<size_t>(r)]->local_param(static_cast<int>(i)) >= 0) holders.push_back(r);
    const bool tied = specs[i].tied_head;
    ASSERT_EQ(holders.size(), tied ? 2u : 1u) << what << ": " << specs[i].name << " holders";
    std::vector<float> sum(ref.size(), 0.0f);
    for (int r : holders) {
      Model& s = *stages[static_cast<size_t>(r)];
      const int li = s.local_param(static_cast<int>(i));
      EXPECT_EQ(s.params_info()[static_cast<size_t>(li)].name, specs[i].name);
      const std::vector<float> g = grad_of(s, li);
      ASSERT_EQ(g.size(), ref.size());
      for (size_t e = 0; e < g.size(); ++e) sum[e] += g[e];
    }
    if (!tied) {
      EXPECT_EQ(sum, ref) << what << ": gradient of " << specs[i].name;
      continue;
    }
    double worst = 0, scale = 0;
    for (size_t e = 0; e < ref.size(); ++e) {
      worst = std::max(worst, static_cast<double>(std::fabs(sum[e] - ref[e])));
      scale = std::max(scale, static_cast<double>(std::fabs(ref[e])));
    }
    EXPECT_GT(scale, 0.0);
    EXPECT_LE(worst, 1e-6 * scale) << what << ": tied gradient of " << specs[i].name;
    *tied_worst = std::max(*tied_worst, worst / scale);
  }
}

std::vector<ModelConfig> configs() { return {gpt2(), llama(true), llama(false)}; }

TEST(PipelineModel, StagesEqualTheWholeModel) {
  double worst = 0;
  for (const ModelConfig& cfg : configs())
    for (const Layout& lay : layouts())
      for (Recompute rc : {Recompute::None, Recompute::Full, Recompute::Selective})
        stages_equal_whole(cfg, lay, rc, &worst);
  std::printf("tied embedding gradient: worst relative difference %.3g\n", worst);
}

TEST(PipelineModel, StageLayersHoldTheirParametersOnly) {
  for (const ModelConfig& cfg : configs()) {
    const auto arch = make_architecture(cfg);
    for (const Layout& lay : layouts()) {
      auto stages = build_stages(cfg, lay, Recompute::None);
      int64_t total = 0;
      for (const auto& s : stages) {
        EXPECT_FALSE(s->stage().whole());
        for (const auto& p : s->params_info()) total += p.numel;
      }
      // every parameter once (vocabulary padding included), plus the tied head's copy
      auto whole = arch->build({});
      int64_t expect = 0;
      for (const auto& p : whole->params_info()) expect += p.numel + (p.tied_head ? p.numel : 0);
      EXPECT_EQ(total, expect) << label(cfg) << ", " << lay.name;
      // a stage cannot decode, nor run forward() as a whole model
      EXPECT_ANY_THROW(stages.back()->begin_decode(1, 4)) << label(cfg);
      const MicroBatch mb = micro_batch(cfg.vocab_size, 1, false);
      EXPECT_ANY_THROW(stages.front()->forward(mb.x.data(), mb.y.data(), kB, kT)) << label(cfg);
    }
  }
}

// Two micro-batches in flight on models sharing each stage's parameters, against one model
// per stage running them one after the other.
TEST(PipelineModel, SharingModelsAccumulateIntoTheSameGradients) {
  for (const ModelConfig& cfg : configs()) {
    for (const Layout& lay : layouts()) {
      for (Recompute rc : {Recompute::None, Recompute::Full, Recompute::Selective}) {
        const std::string what = label(cfg) + ", " + lay.name;
        const auto arch = make_architecture(cfg);
        auto seq = build_stages(cfg, lay, rc);
        auto inst0 = build_stages(cfg, lay, rc);
        std::vector<std::unique_ptr<Model>> inst1;
        for (auto& m : inst0) {
          ModelContext ctx;
          ctx.recompute = rc;
          ctx.stage = m->stage();
          ctx.share_with = m.get();
          inst1.push_back(arch->build(ctx));
          EXPECT_TRUE(inst1.back()->shares_params());
          EXPECT_EQ(inst1.back()->grads().f32(), m->grads().f32()) << what;
          EXPECT_EQ(inst1.back()->params().f32(), m->params().f32()) << what;
        }
        for (auto& m : seq) m->init_weights(5);
        for (auto& m : inst0) m->init_weights(5);
        const MicroBatch mb0 = micro_batch(cfg.vocab_size, 3, false), mb1 = micro_batch(cfg.vocab_size, 4, true);
        const float w = 1.0f / (2 * kB * kT);
        const Pipe ps = pipe_of(seq), p0 = pipe_of(inst0), p1 = pipe_of(inst1);
        const double s0 = pipe_forward(ps, lay, mb0);
        pipe_backward(ps, lay, w);
        const double s1 = pipe_forward(ps, lay, mb1);
        pipe_backward(ps, lay, w);
        const double l0 = pipe_forward(p0, lay, mb0);
        const double l1 = pipe_forward(p1, lay, mb1);
        pipe_backward(p0, lay, w);
        pipe_backward(p1, lay, w);
        EXPECT_EQ(l0, s0) << what;
        EXPECT_EQ(l1, s1) << what;
        EXPECT_NE(s0, s1) << what;
        for (size_t r = 0; r < seq.size(); ++r) {
          const int64_t n = seq[r]->num_local_params();
          ASSERT_EQ(inst0[r]->num_local_params(), n);
          const std::vector<float> gs(seq[r]->grads().f32(), seq[r]->grads().f32() + n);
          const std::vector<float> gi(inst0[r]->grads().f32(), inst0[r]->grads().f32() + n);
          EXPECT_EQ(gi, gs) << what << ": rank " << r << " gradients";
          EXPECT_TRUE(std::any_of(gs.begin(), gs.end(), [](float g) { return g != 0.0f; })) << what;
        }
      }
    }
  }
}

}  // namespace
