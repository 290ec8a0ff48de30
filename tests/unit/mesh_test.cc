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

// ---- pipeline: dp x pp x tp

TEST(Mesh, PipelineExampleDp2Pp2Tp2) {
  const Mesh m(8, 2, 2, 2);
  EXPECT_EQ(m.pp(), 2);
  // rank = (dp * pp + stage) * tp + tp_index
  const std::vector<MeshCoords> expect = {{0, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0, 1, 1},
                                          {1, 0, 0}, {1, 1, 0}, {1, 0, 1}, {1, 1, 1}};  // {dp, tp, pp}
  for (int r = 0; r < 8; ++r) EXPECT_EQ(m.coords(r), expect[static_cast<size_t>(r)]) << r;
  const std::vector<std::vector<int>> tp = {{0, 1}, {0, 1}, {2, 3}, {2, 3}, {4, 5}, {4, 5}, {6, 7}, {6, 7}};
  const std::vector<std::vector<int>> pp = {{0, 2}, {1, 3}, {0, 2}, {1, 3}, {4, 6}, {5, 7}, {4, 6}, {5, 7}};
  const std::vector<std::vector<int>> dp = {{0, 4}, {1, 5}, {2, 6}, {3, 7}, {0, 4}, {1, 5}, {2, 6}, {3, 7}};
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(m.tp_group(r), tp[static_cast<size_t>(r)]) << r;
    EXPECT_EQ(m.pp_group(r), pp[static_cast<size_t>(r)]) << r;
    EXPECT_EQ(m.dp_group(r), dp[static_cast<size_t>(r)]) << r;
  }
  EXPECT_EQ(m.rank_of(1, 1, 0), 6);
  EXPECT_THROW(m.rank_of(1, 0), Error);  // the 2-argument form is for pp 1
  EXPECT_FALSE(m == Mesh(8, 4, 2));
  // world 4, pp 4: one pipeline of 4 stages
  const Mesh p4(4, 1, 1, 4);
  EXPECT_EQ(p4.pp_group(2), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(p4.coords(3).pp, 3);
}

TEST(Mesh, PipelineGroupsPartitionTheWorldForAllShapes) {
  for (int world = 1; world <= 32; ++world)
    for (int pp = 1; pp <= world; ++pp) {
      if (world % pp) continue;
      for (auto [dp, tp] : factorisations(world / pp)) {
        const Mesh m(world, dp, tp, pp);
        std::set<std::vector<int>> pps;
        for (int r = 0; r < world; ++r) {
          const MeshCoords c = m.coords(r);
          ASSERT_EQ(r, (c.dp * pp + c.pp) * tp + c.tp);
          ASSERT_EQ(m.rank_of(c), r);
          const auto pg = m.pp_group(r), dg = m.dp_group(r), tg = m.tp_group(r);
          ASSERT_EQ(static_cast<int>(pg.size()), pp);
          ASSERT_EQ(pg[static_cast<size_t>(c.pp)], r);
          ASSERT_EQ(dg[static_cast<size_t>(c.dp)], r);
          ASSERT_EQ(tg[static_cast<size_t>(c.tp)], r);
          for (size_t i = 1; i < pg.size(); ++i) ASSERT_EQ(pg[i], pg[i - 1] + tp);
          for (size_t i = 1; i < dg.size(); ++i) ASSERT_EQ(dg[i], dg[i - 1] + pp * tp);
          for (int q : pg) {
            ASSERT_EQ(m.pp_group(q), pg);
            ASSERT_EQ(m.coords(q).dp, c.dp);
            ASSERT_EQ(m.coords(q).tp, c.tp);
          }
          pps.insert(pg);
        }
        ASSERT_EQ(static_cast<int>(pps.size()), dp * tp);
      }
    }
}

TEST(Mesh, PipelineValidation) {
  auto err = [](int world, int dp, int tp, int pp) -> std::string {
    try {
      Mesh::validate(world, dp, tp, pp, heads(8));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(err(8, 2, 2, 2), "");
  EXPECT_EQ(err(4, 1, 1, 4), "");
  std::string e = err(6, 1, 2, 4);  // pp 4 does not divide 6
  EXPECT_NE(e.find("parallel.pp = 4 does not divide the 6 launched rank(s)"), std::string::npos) << e;
  e = err(8, 4, 2, 2);  // 4 x 2 x 2 = 16
  EXPECT_NE(e.find("parallel.dp x parallel.pp x parallel.tp = 4 x 2 x 2 = 16 does not match the 8"), std::string::npos) << e;
  EXPECT_NE(e.find("valid choices for 8 rank(s) at parallel.pp = 2"), std::string::npos) << e;
  EXPECT_NE(e.find("dp=2 tp=2"), std::string::npos) << e;
  EXPECT_NE(e.find("dp=4 tp=1"), std::string::npos) << e;
  EXPECT_NE(e.find("dp=1 tp=4"), std::string::npos) << e;
  EXPECT_EQ(e.find("dp=8 tp=1"), std::string::npos) << e;
  e = err(12, 1, 3, 4);  // tp 3 does not divide 8 heads
  EXPECT_NE(e.find("model.n_head = 8"), std::string::npos) << e;
  EXPECT_EQ(Mesh::valid_shapes(8, heads(8), 2), (std::vector<std::pair<int, int>>{{4, 1}, {2, 2}, {1, 4}}));
  EXPECT_TRUE(Mesh::valid_shapes(6, heads(8), 4).empty());
  EXPECT_THROW(Mesh(8, 2, 2, 3), Error);
  EXPECT_THROW(Mesh(8, 2, 2, 0), Error);
}
