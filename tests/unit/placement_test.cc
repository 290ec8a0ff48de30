// What: topology-aware placement (parallel/placement.h) without processes: host-major world
// order from per-rank host lists (by slot, round-robin over hosts as `mpirun --map-by node`
// numbers them, uneven hosts), which tp groups span hosts for a layout, and the warning naming
// the groups, hosts and a hint; pp/dp groups spanning hosts are counted, never warned about.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "parallel/mesh.h"
#include "parallel/placement.h"

using mt::parallel::host_major_order;
using mt::parallel::Mesh;
using mt::parallel::place;
using mt::parallel::placement_warning;

namespace {
using Hosts = std::vector<std::string>;
// n hosts x s slots, numbered by slot (h1 h1 h2 h2) or round-robin (h1 h2 h1 h2)
Hosts by_slot(int n, int s) {
  Hosts h;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < s; ++j) h.push_back("h" + std::to_string(i + 1));
  return h;
}
Hosts round_robin(int n, int s) {
  Hosts h;
  for (int j = 0; j < s; ++j)
    for (int i = 0; i < n; ++i) h.push_back("h" + std::to_string(i + 1));
  return h;
}
}  // namespace

TEST(Placement, HostMajorOrderIsIdentityForBySlot) {
  for (int n = 1; n <= 4; ++n)
    for (int s = 1; s <= 4; ++s) {
      const auto order = host_major_order(by_slot(n, s));
      for (int r = 0; r < n * s; ++r) ASSERT_EQ(order[r], r);
    }
}

TEST(Placement, RoundRobinIsReorderedHostByHost) {
  // mpirun --map-by node on 2 hosts x 2 slots: launcher ranks 0,2 on h1 and 1,3 on h2
  EXPECT_EQ(host_major_order({"h1", "h2", "h1", "h2"}), (std::vector<int>{0, 2, 1, 3}));
  // hosts in order of first appearance, not by name; launcher rank 0 stays world rank 0
  EXPECT_EQ(host_major_order({"b", "a", "b", "c", "a"}), (std::vector<int>{0, 2, 1, 4, 3}));
  for (int n = 1; n <= 4; ++n)
    for (int s = 1; s <= 4; ++s) {
      const Hosts hosts = round_robin(n, s);
      const auto order = host_major_order(hosts);
      std::vector<int> seen(hosts.size(), 0);
      for (size_t r = 0; r < hosts.size(); ++r) {
        ASSERT_EQ(hosts[r], "h" + std::to_string(order[r] / s + 1)) << "world ranks of a host are contiguous";
        ++seen[order[r]];
      }
      for (int c : seen) ASSERT_EQ(c, 1) << "a permutation";
      ASSERT_EQ(order[0], 0);
    }
}

TEST(Placement, TpGroupsInsideAHostWheneverTpDividesTheRanksPerHost) {
  for (int n = 1; n <= 4; ++n)
    for (int s = 1; s <= 8; ++s)
      for (int tp = 1; tp <= s; ++tp) {
        if (s % tp) continue;
        for (const Hosts& hosts : {by_slot(n, s), round_robin(n, s)}) {
          const Mesh mesh(n * s, n * s / tp, tp);
          const auto p = place(hosts, mesh);
          ASSERT_EQ(p.tp_groups.size(), static_cast<size_t>(n * s / tp));
          ASSERT_TRUE(p.crossing_tp_groups.empty()) << n << " hosts x " << s << " tp " << tp;
          ASSERT_EQ(placement_warning(p, mesh), "");
          for (int w = 0; w < n * s; ++w) ASSERT_EQ(hosts[p.launcher_rank_of[w]], p.host_of_world_rank[w]);
        }
      }
}

TEST(Placement, MapByNodeDp2Tp2On2Hosts) {
  const Mesh mesh(4, 2, 2);
  const auto p = place({"h1", "h2", "h1", "h2"}, mesh);
  EXPECT_TRUE(p.reordered());
  EXPECT_EQ(p.host_of_world_rank, (Hosts{"h1", "h1", "h2", "h2"}));
  EXPECT_EQ(p.launcher_rank_of, (std::vector<int>{0, 2, 1, 3}));
  ASSERT_EQ(p.tp_groups.size(), 2u);
  EXPECT_EQ(p.tp_groups[0].ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.tp_groups[0].hosts, (Hosts{"h1"}));
  EXPECT_EQ(p.tp_groups[1].hosts, (Hosts{"h2"}));
  EXPECT_EQ(p.dp_groups_crossing, 2);  // dp spans hosts: by design
  EXPECT_EQ(placement_warning(p, mesh), "");
}

TEST(Placement, Tp4On2HostsX2SlotsWarnsNamingTheGroupAndHosts) {
  const Mesh mesh(4, 1, 4);
  const auto p = place(by_slot(2, 2), mesh);
  ASSERT_EQ(p.crossing_tp_groups.size(), 1u);
  EXPECT_EQ(p.crossing_tp_groups[0].hosts, (Hosts{"h1", "h2"}));
  const std::string w = placement_warning(p, mesh);
  EXPECT_NE(w.find("1 of 1 tp group(s) span hosts"), std::string::npos) << w;
  EXPECT_NE(w.find("ranks {0,1,2,3} on h1 + h2"), std::string::npos) << w;
  EXPECT_NE(w.find("parallel.tp = 4 is larger than the ranks of a host (2)"), std::string::npos) << w;
  EXPECT_NE(w.find("hint:"), std::string::npos) << w;
}

TEST(Placement, UnevenHostsWarnOnlyForTheGroupsThatSpan) {
  // 3 + 1 ranks, tp 2: {0,1} on h1, {2,3} on h1 + h2
  const Mesh mesh(4, 2, 2);
  const auto p = place({"h1", "h1", "h2", "h1"}, mesh);
  EXPECT_EQ(p.host_of_world_rank, (Hosts{"h1", "h1", "h1", "h2"}));
  ASSERT_EQ(p.crossing_tp_groups.size(), 1u);
  EXPECT_EQ(p.crossing_tp_groups[0].ranks, (std::vector<int>{2, 3}));
  const std::string w = placement_warning(p, mesh);
  EXPECT_NE(w.find("ranks {2,3} on h1 + h2"), std::string::npos) << w;
  EXPECT_NE(w.find("uneven rank counts (1 to 3)"), std::string::npos) << w;
}

TEST(Placement, ManySpanningGroupsAreListedShort) {
  // 8 hosts x 1 slot, tp 2: every group spans two hosts; three are named
  const Mesh mesh(8, 4, 2);
  const auto p = place(by_slot(8, 1), mesh);
  EXPECT_EQ(p.crossing_tp_groups.size(), 4u);
  const std::string w = placement_warning(p, mesh);
  EXPECT_NE(w.find("4 of 4 tp group(s)"), std::string::npos) << w;
  EXPECT_NE(w.find("(+1 more)"), std::string::npos) << w;
}

TEST(Placement, PipelineAcrossHostsIsCountedNotWarned) {
  // dp 1 x pp 2 x tp 2 on 2 hosts x 2 slots: each stage's tp group on its own host
  const Mesh mesh(4, 1, 2, 2);
  const auto p = place(round_robin(2, 2), mesh);
  EXPECT_TRUE(p.crossing_tp_groups.empty());
  EXPECT_EQ(p.pp_groups_crossing, 2);
  EXPECT_EQ(placement_warning(p, mesh), "");
  // dp 2 x pp 2 on 2 hosts x 2 slots: a replica's two stages share a host, dp spans hosts
  const Mesh m2(4, 2, 1, 2);
  const auto p2 = place(round_robin(2, 2), m2);
  EXPECT_EQ(p2.pp_groups_crossing, 0);
  EXPECT_EQ(p2.dp_groups_crossing, 2);
}
