// What: Mesh rank arithmetic without processes, over every (dp, tp) factorisation of world
// sizes 1..64: coords/rank_of round-trip, groups partition the world, tp groups are adjacent
// ranks, and validation errors list the valid choices and mention model.n_head.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/mesh.h"
#include "parallel/models/registry.h"

using mt::core::Error;
using mt::parallel::Mesh;
using mt::parallel::MeshCoords;
using mt::parallel::TpRule;

namespace {

std::vector<std::pair<int, int>> factorisations(int world) {
  std::vector<std::pair<int, int>> v;
  for (int tp = 1; tp <= world; ++tp)
    if (world % tp == 0) v.emplace_back(world / tp, tp);
  return v;
}

// GPT-2's rule for n_head heads (the model's rule is what the mesh checks)
TpRule heads(int n_head) {
  mt::core::ModelConfig m;
  m.n_head = n_head;
  m.n_embd = 4 * n_head;
  return mt::parallel::tp_rule(*mt::parallel::make_architecture(m));
}

std::string error_of(int world, int dp, int tp, int n_head) {
  try {
    Mesh::validate(world, dp, tp, heads(n_head));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Mesh, CoordsRoundTripForAllShapes) {
  for (int world = 1; world <= 64; ++world) {
    for (auto [dp, tp] : factorisations(world)) {
      const Mesh m(world, dp, tp);
      EXPECT_EQ(m.world(), world);
      EXPECT_EQ(m.dp(), dp);
      EXPECT_EQ(m.tp(), tp);
      for (int r = 0; r < world; ++r) {
        const MeshCoords c = m.coords(r);
        ASSERT_GE(c.dp, 0);
        ASSERT_LT(c.dp, dp);
        ASSERT_GE(c.tp, 0);
        ASSERT_LT(c.tp, tp);
        ASSERT_EQ(m.rank_of(c.dp, c.tp), r) << "world " << world << " dp " << dp << " tp " << tp;
        ASSERT_EQ(m.rank_of(c), r);
        ASSERT_EQ(r, c.dp * tp + c.tp);  // the documented layout
      }
      for (int d = 0; d < dp; ++d)
        for (int t = 0; t < tp; ++t) ASSERT_EQ(m.coords(m.rank_of(d, t)), (MeshCoords{d, t}));
    }
  }
}

TEST(Mesh, GroupsPartitionTheWorld) {
  for (int world = 1; world <= 64; ++world) {
    for (auto [dp, tp] : factorisations(world)) {
      const Mesh m(world, dp, tp);
      std::set<std::vector<int>> tp_groups, dp_groups;
      for (int r = 0; r < world; ++r) {
        const auto tg = m.tp_group(r), dg = m.dp_group(r);
        ASSERT_EQ(static_cast<int>(tg.size()), tp);
        ASSERT_EQ(static_cast<int>(dg.size()), dp);
        // a rank's position in its group is its coordinate (what split's key gives it)
        ASSERT_EQ(tg[m.coords(r).tp], r);
        ASSERT_EQ(dg[m.coords(r).dp], r);
        // tp groups are adjacent ranks; dp groups stride by tp
        for (size_t i = 1; i < tg.size(); ++i) ASSERT_EQ(tg[i], tg[i - 1] + 1);
        for (size_t i = 1; i < dg.size(); ++i) ASSERT_EQ(dg[i], dg[i - 1] + tp);
        // every member of my group has the same group
        for (int q : tg) ASSERT_EQ(m.tp_group(q), tg);
        for (int q : dg) ASSERT_EQ(m.dp_group(q), dg);
        tp_groups.insert(tg);
        dp_groups.insert(dg);
      }
      ASSERT_EQ(static_cast<int>(tp_groups.size()), dp);
      ASSERT_EQ(static_cast<int>(dp_groups.size()), tp);
      for (const auto* groups : {&tp_groups, &dp_groups}) {
        std::vector<int> all;
        for (const auto& g : *groups) all.insert(all.end(), g.begin(), g.end());
        std::sort(all.begin(), all.end());
        ASSERT_EQ(static_cast<int>(all.size()), world);
        for (int r = 0; r < world; ++r) ASSERT_EQ(all[r], r);
      }
      // a tp group and a dp group meet in exactly one rank
      for (int r = 0; r < world; ++r)
        for (int q = 0; q < world; ++q) {
          const auto tg = m.tp_group(r), dg = m.dp_group(q);
          int common = 0;
          for (int a : tg) common += std::count(dg.begin(), dg.end(), a);
          ASSERT_EQ(common, 1);
        }
    }
  }
}

TEST(Mesh, ValidShapesAreExactlyTheAcceptedOnes) {
  for (int world = 1; world <= 64; ++world) {
    for (int n_head : {1, 2, 3, 4, 6, 8, 12, 16, 25, 32}) {
      const auto shapes = Mesh::valid_shapes(world, heads(n_head));
      std::set<std::pair<int, int>> valid(shapes.begin(), shapes.end());
      for (int tp = 1; tp <= world; ++tp) {
        for (int dp = 1; dp <= world; ++dp) {
          const bool ok = valid.count({dp, tp}) > 0;
          const bool expect_ok = dp * tp == world && n_head % tp == 0;
          ASSERT_EQ(ok, expect_ok) << world << " " << dp << " " << tp << " " << n_head;
          if (dp * tp == world || dp == 1) {  // matching shapes, plus a mismatch per tp
            ASSERT_EQ(error_of(world, dp, tp, n_head).empty(), expect_ok)
                << world << " " << dp << " " << tp << " " << n_head;
          }
        }
      }
      // (dp=world, tp=1) is always valid
      ASSERT_TRUE(valid.count({world, 1}));
    }
  }
}

TEST(Mesh, SizeMismatchListsValidChoices) {
  const std::string e = error_of(4, 3, 2, 8);
  ASSERT_FALSE(e.empty());
  EXPECT_NE(e.find("3 x 2 = 6"), std::string::npos) << e;
  EXPECT_NE(e.find("4 launched rank"), std::string::npos) << e;
  EXPECT_NE(e.find("dp=4 tp=1"), std::string::npos) << e;
  EXPECT_NE(e.find("dp=2 tp=2"), std::string::npos) << e;
  EXPECT_NE(e.find("dp=1 tp=4"), std::string::npos) << e;
  EXPECT_NE(e.find("model.n_head = 8"), std::string::npos) << e;
  EXPECT_NE(e.find("parallel.tp"), std::string::npos) << e;
}

TEST(Mesh, HeadsNotDivisibleMentionsNHead) {
  const std::string e = error_of(6, 2, 3, 8);  // 3 does not divide 8
  ASSERT_FALSE(e.empty());
  EXPECT_NE(e.find("does not divide model.n_head = 8"), std::string::npos) << e;
  EXPECT_NE(e.find("dp=6 tp=1"), std::string::npos) << e;
  EXPECT_NE(e.find("dp=3 tp=2"), std::string::npos) << e;
  EXPECT_EQ(e.find("dp=2 tp=3"), std::string::npos) << e;  // not valid for 8 heads
  EXPECT_NE(e.find("hint"), std::string::npos) << e;
}

TEST(Mesh, RejectsNonPositiveAndOutOfRange) {
  EXPECT_THROW(Mesh(4, 0, 4), Error);
  EXPECT_THROW(Mesh(4, 2, 3), Error);
  EXPECT_THROW(Mesh(0, 1, 1), Error);
  EXPECT_FALSE(error_of(4, 4, 0, 8).empty());
  EXPECT_FALSE(error_of(4, 4, 1, 0).empty());
  const Mesh m(8, 4, 2);
  EXPECT_THROW(m.coords(8), Error);
  EXPECT_THROW(m.coords(-1), Error);
  EXPECT_THROW(m.rank_of(4, 0), Error);
  EXPECT_THROW(m.rank_of(0, 2), Error);
  EXPECT_EQ(m, Mesh(8, 4, 2));
  EXPECT_FALSE(m == Mesh(8, 2, 4));
}

TEST(Mesh, DocumentedExample) {
  const Mesh m(8, 4, 2);
  EXPECT_EQ(m.tp_group(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(m.dp_group(5), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(m.coords(5), (MeshCoords{2, 1}));
}
