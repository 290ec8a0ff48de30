// What: topology-aware placement of the mesh on hosts. host_major_order() gives every launcher
// (MPI_COMM_WORLD) rank its meshtrain world rank: hosts in order of their first rank, then the
// ranks of each host in launcher order. place() applies that order and a dp x pp x tp mesh to a
// per-rank host list and returns where every world rank runs, the tp groups that span hosts,
// and a warning naming them with a hint. Pure functions (no MPI), unit-tested in
// tests/unit/placement_test.cc; make_world_communicator() orders the world with the same
// function (MPI_Comm_split with the world rank as key).
// Why: the Mesh puts a tp group on ADJACENT world ranks (mesh.h), which shares a host only if
// the launcher numbered the ranks host by host. `mpirun --map-by node` (round-robin over hosts)
// and some Slurm distributions (cyclic) do not: without reordering, every tp group of dp 2 x tp 2
// on 2 hosts x 2 slots would span both hosts and run its per-layer all-reduces over the network.
// Host-major order makes a tp group (and the sp group, which is the tp group) share a host
// whenever tp divides every host's rank count. A layout that cannot (tp larger than the ranks
// of a host, uneven hosts) still runs, with a warning. pp and dp groups span hosts by design
// (pipeline neighbours exchange one activation per micro-batch, dp groups once per step), so
// they are only described, never warned about.
#pragma once

#include <string>
#include <vector>

#include "parallel/mesh.h"

namespace mt::parallel {

// world_rank_of[launcher rank]: hosts by their lowest launcher rank, ranks of a host in launcher
// order (so launcher rank 0 is always world rank 0). The identity when the launcher filled
// hosts in rank order (mpirun's default --map-by slot, srun's block distribution).
std::vector<int> host_major_order(const std::vector<std::string>& host_of_launcher_rank);

// A mesh group (tp, pp or dp) by world ranks, with the distinct hosts it spans (first-seen order).
struct PlacedGroup {
  std::vector<int> ranks;
  std::vector<std::string> hosts;
  bool crosses_hosts() const { return hosts.size() > 1; }
};

struct Placement {
  std::vector<int> world_rank_of;               // by launcher rank
  std::vector<int> launcher_rank_of;            // by world rank
  std::vector<std::string> host_of_world_rank;  // by world rank
  std::vector<PlacedGroup> tp_groups;           // every tp group, by its first rank
  std::vector<PlacedGroup> crossing_tp_groups;  // those of tp_groups that span hosts
  int pp_groups_crossing = 0, dp_groups_crossing = 0;  // (pp, dp span hosts by design: counted only)
  int max_ranks_per_host = 0, min_ranks_per_host = 0;
  bool reordered() const;  // world rank != launcher rank somewhere
};

// The placement of `mesh` on the hosts of `host_of_launcher_rank` (size mesh.world()).
Placement place(const std::vector<std::string>& host_of_launcher_rank, const Mesh& mesh);

// "" when no tp group spans hosts; else one warning naming the groups (the first few), their
// hosts and a hint (tp dividing the ranks per host, a multiple of tp ranks on every host).
std::string placement_warning(const Placement& p, const Mesh& mesh);

// "tp groups inside a host (2 groups); pp groups spanning hosts 2/2; dp ..." for the banner.
std::string placement_summary(const Placement& p, const Mesh& mesh);

}  // namespace mt::parallel
