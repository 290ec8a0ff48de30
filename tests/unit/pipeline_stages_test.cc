// What: split_layers (parallel/pipeline/stages.h) on real architectures: the balanced split of
// a GPT-2-like model minimises the largest stage cost (checked against every contiguous
// split, with the cost worked out here from the model sizes), a big vocabulary puts fewer
// blocks on the head's stage, explicit parallel.pp_layers and interleaved equal splits are
// taken as given, stage_layers hands out the virtual stages, and bad input names its key.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "parallel/models/registry.h"
#include "parallel/pipeline/stages.h"

using mt::core::Error;
using mt::core::ModelConfig;
using namespace mt::parallel;

namespace {

ModelConfig gpt2(int n_layer, int C, int vocab, int T) {
  ModelConfig m;
  m.n_layer = n_layer;
  m.n_embd = C;
  m.n_head = 4;
  m.vocab_size = vocab;
  m.seq_len = T;
  return m;
}

std::vector<int> counts(const std::vector<std::pair<int, int>>& v) {
  std::vector<int> c;
  int expect_begin = 0;
  for (const auto& [b, e] : v) {
    EXPECT_EQ(b, expect_begin);
    EXPECT_GT(e, b);
    c.push_back(e - b);
    expect_begin = e;
  }
  return c;
}

// GPT-2 costs from the sizes alone: a block's 2-D weights are qkv 3C x C, proj C x C, fc 4C x
// C, proj C x 4C (12 C^2), plus attention 12 C T; the head is the tied V x C embedding.
double block_cost(const ModelConfig& m) { return 6.0 * 12 * m.n_embd * m.n_embd + 12.0 * m.n_embd * m.seq_len; }
double head_cost(const ModelConfig& m) { return 6.0 * m.vocab_size * m.n_embd; }

double max_stage(const ModelConfig& m, const std::vector<int>& c) {
  double mx = 0;
  for (size_t s = 0; s < c.size(); ++s)
    mx = std::max(mx, c[s] * block_cost(m) + (s + 1 == c.size() ? head_cost(m) : 0.0));
  return mx;
}

// The least largest stage cost over every contiguous split (brute force).
double best_max(const ModelConfig& m, int pp) {
  double best = 1e300;
  std::vector<int> c;
  std::function<void(int)> go = [&](int left) {
    if (static_cast<int>(c.size()) == pp - 1) {
      if (left < 1) return;
      c.push_back(left);
      best = std::min(best, max_stage(m, c));
      c.pop_back();
      return;
    }
    for (int k = 1; k <= left - (pp - 1 - static_cast<int>(c.size())); ++k) {
      c.push_back(k);
      go(left - k);
      c.pop_back();
    }
  };
  go(m.n_layer);
  return best;
}

std::string error_of(const ModelConfig& m, int pp, int v, const std::vector<int>& layers) {
  try {
    split_layers(*make_architecture(m), pp, v, layers);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(PipelineStages, BalancedSplitIsOptimalAndTheHeadStageGetsFewerBlocks) {
  // GPT-2 124M-like: 12 blocks, the 50257 x 768 head costs ~4.5 blocks
  const ModelConfig big = gpt2(12, 768, 50257, 1024);
  const auto c = counts(split_layers(*make_architecture(big), 4, 1, {}));
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c.back(), 1) << "the head's stage";
  EXPECT_NEAR(max_stage(big, c), best_max(big, 4), 1e-6 * best_max(big, 4));
  for (int s = 0; s < 3; ++s) EXPECT_TRUE(c[s] == 3 || c[s] == 4) << s << ": " << c[s];  // the rest even
  // a small vocabulary: even split
  EXPECT_EQ(counts(split_layers(*make_architecture(gpt2(12, 64, 64, 64)), 4, 1, {})), (std::vector<int>{3, 3, 3, 3}));
  // many shapes: always the optimum, every stage >= 1 block
  for (int L : {2, 5, 8, 13})
    for (int pp : {1, 2, 3, 4})
      for (int vocab : {64, 5000, 40000}) {
        if (pp > L) continue;
        const ModelConfig m = gpt2(L, 128, vocab, 256);
        const auto cc = counts(split_layers(*make_architecture(m), pp, 1, {}));
        ASSERT_EQ(static_cast<int>(cc.size()), pp);
        EXPECT_NEAR(max_stage(m, cc), best_max(m, pp), 1e-9 * best_max(m, pp)) << L << " " << pp << " " << vocab;
      }
}

TEST(PipelineStages, LlamaUntiedHeadCounts) {
  ModelConfig m = gpt2(8, 256, 32000, 256);
  m.arch = "llama";
  m.n_kv_head = 2;
  const auto untied = counts(split_layers(*make_architecture(m), 2, 1, {}));
  EXPECT_LT(untied.back(), untied.front());  // the lm_head weighs on the last stage
  m.tie_embeddings = true;                   // the tied embedding is the head: the same cost
  EXPECT_EQ(counts(split_layers(*make_architecture(m), 2, 1, {})), untied);
}

TEST(PipelineStages, ExplicitLayersAndInterleaved) {
  const auto arch = make_architecture(gpt2(8, 64, 64, 64));
  EXPECT_EQ(split_layers(*arch, 3, 1, {2, 5, 1}), (std::vector<std::pair<int, int>>{{0, 2}, {2, 7}, {7, 8}}));
  // interleaved pp 2 x v 2: 4 virtual stages of 2 blocks; rank 0 runs 0 and 2, rank 1 runs 1 and 3
  const auto v = split_layers(*arch, 2, 2, {});
  EXPECT_EQ(v, (std::vector<std::pair<int, int>>{{0, 2}, {2, 4}, {4, 6}, {6, 8}}));
  const StageLayers s0 = stage_layers(v, 2, 0), s1 = stage_layers(v, 2, 1);
  EXPECT_EQ(s0.chunks, (std::vector<std::pair<int, int>>{{0, 2}, {4, 6}}));
  EXPECT_EQ(s1.chunks, (std::vector<std::pair<int, int>>{{2, 4}, {6, 8}}));
  EXPECT_TRUE(s0.embed && !s0.head && !s1.embed && s1.head);
  EXPECT_EQ(split_layers(*arch, 1, 1, {}), (std::vector<std::pair<int, int>>{{0, 8}}));
}

TEST(PipelineStages, BadInputNamesItsKey) {
  const ModelConfig m = gpt2(6, 64, 64, 64);
  std::string e = error_of(m, 8, 1, {});
  EXPECT_NE(e.find("parallel.pp = 8 gives 8 pipeline stages but model.n_layer = 6"), std::string::npos) << e;
  e = error_of(m, 2, 1, {3, 2});
  EXPECT_NE(e.find("parallel.pp_layers = [3, 2] sums to 5 but model.n_layer = 6"), std::string::npos) << e;
  e = error_of(m, 3, 1, {3, 3});
  EXPECT_NE(e.find("parallel.pp_layers = [3, 3] has 2 entries but parallel.pp = 3"), std::string::npos) << e;
  e = error_of(m, 2, 1, {6, 0});
  EXPECT_NE(e.find("parallel.pp_layers"), std::string::npos) << e;
  EXPECT_NE(e.find("at least one block"), std::string::npos) << e;
  e = error_of(m, 2, 2, {});  // 6 layers into 4 virtual stages
  EXPECT_NE(e.find("model.n_layer = 6"), std::string::npos) << e;
  EXPECT_NE(e.find("parallel.pp_virtual"), std::string::npos) << e;
  e = error_of(m, 2, 4, {});  // 8 virtual stages > 6 layers
  EXPECT_NE(e.find("parallel.pp_virtual"), std::string::npos) << e;
  e = error_of(m, 2, 3, {3, 3});
  EXPECT_NE(e.find("parallel.pp_layers is set but parallel.pp_virtual = 3"), std::string::npos) << e;
  for (const auto& msg : {error_of(m, 8, 1, {}), error_of(m, 2, 1, {3, 2})}) EXPECT_NE(msg.find("hint"), std::string::npos) << msg;
}
