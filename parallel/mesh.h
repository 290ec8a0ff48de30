// What: Mesh, the dp x tp arrangement of the world's ranks as a value type with pure rank
// arithmetic, and make_mesh_comms(), which splits a world communicator into the dp and tp
// groups of the calling rank.
// Why: tensor-parallel ranks exchange activations every layer, data-parallel ranks exchange
// gradients once per step, so tp groups are made of ADJACENT ranks (rank = dp * tp_size + tp):
// with a launcher that fills nodes in rank order they share a node (NVLink / shared memory).
// There is no global parallel state: the mesh and its communicators are passed explicitly.
//
//   world 8, dp 4 x tp 2:   tp groups {0,1} {2,3} {4,5} {6,7}    dp groups {0,2,4,6} {1,3,5,7}
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "parallel/communicator.h"

namespace mt::parallel {

struct MeshCoords {
  int dp = 0;  // index of the data-parallel replica, 0 .. dp_size-1
  int tp = 0;  // index within the tensor-parallel group, 0 .. tp_size-1
  bool operator==(const MeshCoords& o) const { return dp == o.dp && tp == o.tp; }
};

// The tensor-parallel sizes a model allows (Architecture::tp_violation / tp_constraint; a
// model's rule, so the mesh needs no model sizes): `violation(tp)` is "" when tp is allowed,
// else why not, naming the config key; `constraint` names what limits it in the list of
// valid choices ("model.n_head = 8"). The default allows every tp.
struct TpRule {
  std::string constraint;
  std::function<std::string(int tp)> violation;
  bool allows(int tp) const { return !violation || violation(tp).empty(); }
};

class Mesh {
 public:
  // Throws mt::core::Error unless world, dp, tp >= 1 and dp * tp == world.
  Mesh(int world, int dp, int tp);

  int world() const { return world_; }
  int dp() const { return dp_; }
  int tp() const { return tp_; }

  MeshCoords coords(int rank) const;
  int rank_of(int dp_index, int tp_index) const;
  int rank_of(MeshCoords c) const { return rank_of(c.dp, c.tp); }
  // Ranks of `rank`'s tp group (same dp index; adjacent, ascending) and dp group (same tp
  // index, stride tp, ascending). A rank's position in its group is its tp (resp. dp) index.
  std::vector<int> tp_group(int rank) const;
  std::vector<int> dp_group(int rank) const;

  bool operator==(const Mesh& o) const { return world_ == o.world_ && dp_ == o.dp_ && tp_ == o.tp_; }

  // Checks a configuration: dp, tp >= 1, dp * tp == world, and the model's rule allows tp
  // (e.g. tp divides the heads). The error lists the valid (dp, tp) choices for this world
  // size and model, with the config keys to set.
  static void validate(int world, int dp, int tp, const TpRule& rule);
  // All (dp, tp) with dp * tp == world that the rule allows, by ascending tp.
  static std::vector<std::pair<int, int>> valid_shapes(int world, const TpRule& rule);

 private:
  void check_rank(int rank) const;
  int world_, dp_, tp_;
};

// The calling rank's sub-communicators. `world` is not owned (the caller keeps it).
struct MeshComms {
  Communicator* world = nullptr;
  std::unique_ptr<Communicator> dp;  // dp->rank() == coords(world rank).dp
  std::unique_ptr<Communicator> tp;  // tp->rank() == coords(world rank).tp
};

// Collective over `world`: splits it into the mesh's dp and tp groups (names "dp", "tp").
// world.size() must equal mesh.world().
MeshComms make_mesh_comms(Communicator& world, const Mesh& mesh);

}  // namespace mt::parallel
