// Partition alone (parallel/models/partition.h), without processes: for every kind (replicated,
// rows, fused rows of unequal blocks, cols, padded vocabulary) and tp 1, 2, 4, 8
//  - local -> full -> local round-trips, and every element of the full tensor is held by
//    exactly one rank (every rank for replicated), vocab padding by nobody;
//  - the fused q|k|v layout with fewer k/v heads puts each block's piece where Megatron does;
//  - resharding a tensor from tp a to tp b with copy_shared_elements equals slicing the full
//    tensor at tp b directly, for every pair;
//  - sizes that do not split are refused with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "core/error.h"
#include "parallel/models/partition.h"

using mt::core::Shape;
using mt::parallel::copy_shared_elements;
using mt::parallel::Partition;
using mt::parallel::shape_cols;
using mt::parallel::shape_rows;

namespace {

struct Case {
  const char* what;
  Partition p;
  Shape full;
};

std::vector<Case> cases() {
  return {{"replicated 2-D", Partition::replicated(), {6, 5}},
          {"replicated 1-D", Partition::replicated(), {7}},
          {"rows", Partition::rows(), {16, 3}},
          {"rows 1-D (bias)", Partition::rows(), {8}},
          {"q|k|v 8 q heads, 2 kv heads of 2", Partition::rows({16, 8, 8}), {32, 4}},
          {"q|k|v bias", Partition::rows({16, 8, 8}), {32}},
          {"gate|up", Partition::rows({24, 24}), {48, 2}},
          // Llama q|k|v by heads of 2 rows: 8 query heads, 2 kv heads (replicated at tp 4, 8)
          {"q|k|v by heads, 2 kv heads", Partition::rows({16, 4, 4}, 2), {24, 3}},
          {"q|k|v by heads, 1 kv head (multi-query)", Partition::rows({16, 2, 2}, 2), {20, 3}},
          {"cols", Partition::cols(), {3, 16}},
          {"vocab 50 rows, align 4", Partition::vocab(4), {50, 3}}};
}

// The slice of rank `rank` at tp, cut from the full tensor through to_full (NaN for padding).
std::vector<float> slice(const Partition& p, const Shape& full, int tp, int rank, const std::vector<float>& f) {
  const Shape l = p.local_shape(full, tp);
  std::vector<float> out(static_cast<size_t>(shape_rows(l) * shape_cols(l)));
  for (int64_t r = 0; r < shape_rows(l); ++r) {
    const auto at = p.to_full(full, tp, rank, r);
    for (int64_t c = 0; c < shape_cols(l); ++c)
      out[r * shape_cols(l) + c] = at.row < shape_rows(full) ? f[at.row * shape_cols(full) + at.col + c] : NAN;
  }
  return out;
}

}  // namespace

TEST(Partition, RoundTripAndEveryElementHeldOnce) {
  for (const auto& k : cases()) {
    for (int tp : {1, 2, 4, 8}) {
      ASSERT_EQ(k.p.check(k.full, tp), "") << k.what << " tp " << tp;
      const Shape l = k.p.local_shape(k.full, tp);
      std::map<std::pair<int64_t, int64_t>, int> held, replicas;
      for (int rank = 0; rank < tp; ++rank) {
        for (int64_t r = 0; r < shape_rows(l); ++r) {
          const auto at = k.p.to_full(k.full, tp, rank, r);
          for (int64_t c = 0; c < shape_cols(l); ++c) {
            if (at.row >= shape_rows(k.full)) {
              ASSERT_EQ(k.p.kind(), Partition::Kind::Vocab) << k.what;  // only vocab pads
              continue;
            }
            ++held[{at.row, at.col + c}];
            const auto back = k.p.to_local(k.full, tp, at.row, at.col + c);
            ASSERT_TRUE(back.held_by(rank)) << k.what << " tp " << tp << " rank " << rank;
            replicas[{at.row, at.col + c}] = k.p.kind() == Partition::Kind::Replicated ? tp : back.replicas;
            ASSERT_EQ(back.row, r) << k.what;
            ASSERT_EQ(back.col, c) << k.what;
          }
        }
      }
      ASSERT_EQ(static_cast<int64_t>(held.size()), shape_rows(k.full) * shape_cols(k.full)) << k.what << " tp " << tp;
      for (const auto& [pos, n] : held) ASSERT_EQ(n, replicas[pos]) << k.what << " tp " << tp;
      // counted_rows: every element of the full tensor counted by exactly one rank
      std::map<std::pair<int64_t, int64_t>, int> counted;
      for (int rank = 0; rank < tp; ++rank)
        for (const auto& [r0, r1] : k.p.counted_rows(k.full, tp, rank))
          for (int64_t r = r0; r < r1; ++r) {
            const auto at = k.p.to_full(k.full, tp, rank, r);
            if (at.row >= shape_rows(k.full)) continue;
            for (int64_t c = 0; c < shape_cols(l); ++c) ++counted[{at.row, at.col + c}];
          }
      ASSERT_EQ(counted.size(), held.size()) << k.what << " tp " << tp;
      for (const auto& [pos, n] : counted) ASSERT_EQ(n, 1) << k.what << " tp " << tp;
    }
  }
}

TEST(Partition, FusedBlocksOfUnequalSizeSplitEachBlock) {
  // q|k|v: 4 query heads and 2 key/value heads of 2 channels: blocks {8, 4, 4} at tp 2. Rank 1
  // holds query rows 4..7, key rows 10..11 and value rows 14..15 of the full (16, C) weight.
  const Partition p = Partition::rows({8, 4, 4});
  const Shape full{16, 5};
  EXPECT_EQ(p.local_shape(full, 2), (Shape{8, 5}));
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < 8; ++r) rows.push_back(p.to_full(full, 2, 1, r).row);
  EXPECT_EQ(rows, (std::vector<int64_t>{4, 5, 6, 7, 10, 11, 14, 15}));
  // GPT-2's equal q|k|v: full row j*C + rank*C/tp + i (the layout checkpoints already hold)
  const int64_t C = 12;
  const Partition qkv = Partition::rows({C, C, C});
  for (int tp : {1, 2, 3, 4})
    for (int rank = 0; rank < tp; ++rank)
      for (int64_t r = 0; r < 3 * C / tp; ++r) {
        const int64_t part = C / tp, j = r / part, i = r % part;
        ASSERT_EQ(qkv.to_full({3 * C, C}, tp, rank, r).row, j * C + rank * part + i);
      }
  EXPECT_EQ(p.describe(), "rows[8|4|4]");
}

TEST(Partition, KvHeadsFewerThanRanksAreReplicated) {
  // 4 query heads, 2 kv heads of 2 rows: at tp 4 rank r holds query head r and kv head r / 2
  const Partition p = Partition::rows({8, 4, 4}, 2);
  const Shape full{16, 3};
  EXPECT_EQ(p.check(full, 4), "");
  EXPECT_EQ(p.local_shape(full, 4), (Shape{6, 3}));
  for (int rank = 0; rank < 4; ++rank) {
    std::vector<int64_t> rows;
    for (int64_t r = 0; r < 6; ++r) rows.push_back(p.to_full(full, 4, rank, r).row);
    const int64_t q = 2 * rank, kv = 2 * (rank / 2);
    EXPECT_EQ(rows, (std::vector<int64_t>{q, q + 1, 8 + kv, 9 + kv, 12 + kv, 13 + kv})) << "rank " << rank;
    const auto runs = p.replicated_runs(full, 4, rank);
    ASSERT_EQ(runs.size(), 2u);
    EXPECT_EQ(runs[0].local_row, 2);
    EXPECT_EQ(runs[0].full_row, 8 + kv);
    EXPECT_EQ(runs[1].full_row, 12 + kv);
    EXPECT_EQ(runs[0].first_holder, rank % 2 == 0);
  }
  const auto own = p.to_local(full, 4, 10, 1);  // kv head 1's first row: ranks 2 and 3
  EXPECT_EQ(own.rank, 2);
  EXPECT_EQ(own.replicas, 2);
  EXPECT_TRUE(p.has_replicas(full, 4));
  EXPECT_FALSE(p.has_replicas(full, 2));
  // 3 kv heads neither split over 2 ranks nor divide 4... (3 units vs tp 2)
  EXPECT_NE(Partition::rows({12, 6, 6}, 2).check({24, 3}, 2).find("3 units"), std::string::npos);
  EXPECT_EQ(p.describe(), "rows[8|4|4] by units of 2");
}

TEST(Partition, VocabPadsToAlignTimesTp) {
  const Partition p = Partition::vocab(64);
  EXPECT_EQ(p.padded_rows({50257, 8}, 1), 50304);
  EXPECT_EQ(p.padded_rows({50257, 8}, 2), 50304);
  EXPECT_EQ(p.padded_rows({50257, 8}, 8), 50688);
  EXPECT_EQ(p.local_shape({50, 8}, 2), (Shape{64, 8}));
  EXPECT_EQ(p.to_full({50, 8}, 2, 1, 3).row, 67);  // rank 1's row 3: padding (>= 50)
}

TEST(Partition, ReshardingEqualsSlicingAtTheNewSize) {
  std::mt19937 g(7);
  std::uniform_real_distribution<float> u(-1, 1);
  for (const auto& k : cases()) {
    std::vector<float> full(static_cast<size_t>(shape_rows(k.full) * shape_cols(k.full)));
    for (auto& v : full) v = u(g);
    for (int a : {1, 2, 4, 8}) {
      for (int b : {1, 2, 4, 8}) {
        for (int dst = 0; dst < b; ++dst) {
          const auto want = slice(k.p, k.full, b, dst, full);
          std::vector<float> got(want.size(), NAN);
          for (int src = 0; src < a; ++src) {
            const auto s = slice(k.p, k.full, a, src, full);
            copy_shared_elements(k.p, k.full, a, src, s.data(), b, dst, got.data());
          }
          for (size_t i = 0; i < want.size(); ++i) {
            if (std::isnan(want[i])) {
              ASSERT_TRUE(std::isnan(got[i])) << k.what << " padding written, " << a << " -> " << b;
            } else {
              ASSERT_EQ(got[i], want[i]) << k.what << " tp " << a << " -> " << b << " rank " << dst << " elem " << i;
            }
          }
        }
      }
    }
  }
}

TEST(Partition, SizesThatDoNotSplitAreRefusedWithTheReason) {
  EXPECT_NE(Partition::rows({8, 2, 2}).check({12, 4}, 4).find("block of 2 rows"), std::string::npos);
  EXPECT_NE(Partition::rows({8, 2}).check({12, 4}, 1).find("do not add up"), std::string::npos);
  EXPECT_NE(Partition::cols().check({4, 6}, 4).find("6 columns"), std::string::npos);
  EXPECT_NE(Partition::cols().check({6}, 2).find("1-D"), std::string::npos);
  EXPECT_THROW(Partition::cols().local_shape({4, 6}, 4), mt::core::Error);
  EXPECT_EQ(Partition::replicated().check({5, 3}, 7), "");
}
