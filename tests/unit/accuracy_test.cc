// Top-k accuracy over vocabulary-sliced logits (parallel/models/accuracy.h): ties go to the
// lower token id, padding columns and masked targets are ignored, and merging the slices'
// candidates gives exactly the counts of the whole row (what makes tp 2 equal tp 1).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "parallel/models/accuracy.h"

namespace mt::parallel {
namespace {

// counts of full rows (N, V) split into `parts` equal slices of Vl columns (the last padded)
TopkCounts counts_split(const std::vector<float>& logits, int64_t N, int V, int parts, int k,
                        const std::vector<int32_t>& targets) {
  const int Vl = (V + parts - 1) / parts;
  std::vector<float> vals(static_cast<size_t>(parts * N * k));
  std::vector<int32_t> ids(vals.size());
  for (int p = 0; p < parts; ++p) {
    const int v0 = p * Vl, valid = std::max(0, std::min(Vl, V - v0));
    std::vector<float> slice(static_cast<size_t>(N * Vl), 123.0f);  // padding: large values, ignored
    for (int64_t i = 0; i < N; ++i)
      for (int j = 0; j < valid; ++j) slice[static_cast<size_t>(i * Vl + j)] = logits[static_cast<size_t>(i * V + v0 + j)];
    local_topk(slice.data(), N, Vl, v0, valid, k, vals.data() + p * N * k, ids.data() + p * N * k);
  }
  return count_topk_hits(vals.data(), ids.data(), parts, N, k, targets.data());
}

TEST(Accuracy, LocalTopkOrdersByValueThenLowerId) {
  const std::vector<float> row = {1.0f, 3.0f, 2.0f, 3.0f, std::nanf(""), 2.0f};
  std::vector<float> v(4);
  std::vector<int32_t> id(4);
  local_topk(row.data(), 1, 6, 10, 6, 4, v.data(), id.data());
  EXPECT_EQ(id, (std::vector<int32_t>{11, 13, 12, 15}));  // the tied 3s: id 11 first; NaN last
  EXPECT_EQ(v, (std::vector<float>{3.0f, 3.0f, 2.0f, 2.0f}));
  // fewer valid columns than k: padded with -inf and an id no target has
  local_topk(row.data(), 1, 6, 0, 2, 4, v.data(), id.data());
  EXPECT_EQ(id[0], 1);
  EXPECT_EQ(id[1], 0);
  EXPECT_EQ(v[2], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(id[3], std::numeric_limits<int32_t>::max());
}

TEST(Accuracy, TiesResolveTheSameWhateverTheSplit) {
  // every logit equal: top-1 is id 0, top-5 ids 0..4, at 1, 2 and 3 slices
  const int V = 10, N = 4;
  std::vector<float> logits(N * V, 0.5f);
  const std::vector<int32_t> targets = {0, 4, 5, 9};
  for (int parts : {1, 2, 3}) {
    const TopkCounts c = counts_split(logits, N, V, parts, 5, targets);
    EXPECT_EQ(c.targets, 4) << parts;
    EXPECT_EQ(c.top1, 1) << parts;  // target 0
    EXPECT_EQ(c.topk, 2) << parts;  // targets 0 and 4
  }
}

TEST(Accuracy, MaskedTargetsAreNotCounted) {
  const int V = 3;
  const std::vector<float> logits = {0, 1, 2, 2, 1, 0, 0, 5, 0};
  const std::vector<int32_t> targets = {2, -1, 1};
  const TopkCounts c = counts_split(logits, 3, V, 1, 1, targets);
  EXPECT_EQ(c.targets, 2);
  EXPECT_EQ(c.top1, 2);
  EXPECT_EQ(c.topk, 2);
}

TEST(Accuracy, SlicedCountsEqualWholeRows) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> coarse(0, 6);  // few distinct values: many ties
  const int V = 50, N = 200;
  std::vector<float> logits(N * V);
  for (float& x : logits) x = static_cast<float>(coarse(rng)) * 0.25f;
  std::vector<int32_t> targets(N);
  for (int32_t& t : targets) t = static_cast<int32_t>(rng() % (V + 5)) - 5;  // some masked (< 0)
  // the reference: sort each row by (value desc, id asc)
  TopkCounts ref;
  for (int i = 0; i < N; ++i) {
    if (targets[static_cast<size_t>(i)] < 0) continue;
    ++ref.targets;
    const float* r = logits.data() + i * V;
    const int t = targets[static_cast<size_t>(i)];
    int rank = 0;  // candidates ranked before the target
    for (int j = 0; j < V; ++j) rank += r[j] > r[t] || (r[j] == r[t] && j < t);
    ref.top1 += rank < 1;
    ref.topk += rank < 5;
  }
  for (int parts : {1, 2, 4, 7}) {
    const TopkCounts c = counts_split(logits, N, V, parts, 5, targets);
    EXPECT_EQ(c.targets, ref.targets) << parts;
    EXPECT_EQ(c.top1, ref.top1) << parts;
    EXPECT_EQ(c.topk, ref.topk) << parts;
  }
  EXPECT_GT(ref.top1, 0);
  EXPECT_GT(ref.topk, ref.top1);
}

}  // namespace
}  // namespace mt::parallel
