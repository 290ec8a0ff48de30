// What: Mesh, the dp x pp x tp arrangement of the world's ranks as a value type with pure rank
// arithmetic, and make_mesh_comms(), which splits a world communicator into the dp, tp and pp
// groups of the calling rank.
// Why: tensor-parallel ranks exchange activations every layer, pipeline neighbours once per
// micro-batch and stage, data-parallel ranks gradients once per step, so tp is innermost
// (ADJACENT ranks), then pp, then dp:  rank = (dp * pp_size + pp) * tp_size + tp.  With a
// launcher that fills nodes in rank order a tp group shares a node (NVLink / shared memory)
// and pipeline neighbours are close. There is no global parallel state: the mesh and its
// communicators are passed explicitly.
//
//   world 8, dp 4 x tp 2:        tp groups {0,1} {2,3} {4,5} {6,7}    dp groups {0,2,4,6} {1,3,5,7}
//   world 8, dp 2 x pp 2 x tp 2: tp groups {0,1} {2,3} {4,5} {6,7}    pp groups {0,2} {1,3} {4,6} {5,7}
//                                dp groups {0,4} {1,5} {2,6} {3,7}
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
  int pp = 0;  // pipeline stage, 0 .. pp_size-1
  bool operator==(const MeshCoords& o) const { return dp == o.dp && tp == o.tp && pp == o.pp; }
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
  // Throws mt::core::Error unless world, dp, tp, pp >= 1 and dp * pp * tp == world.
  Mesh(int world, int dp, int tp, int pp = 1);

  int world() const { return world_; }
  int dp() const { return dp_; }
  int tp() const { return tp_; }
  int pp() const { return pp_; }

  MeshCoords coords(int rank) const;
  int rank_of(int dp_index, int pp_index, int tp_index) const;
  int rank_of(int dp_index, int tp_index) const;  // pp == 1 only (checked)
  int rank_of(MeshCoords c) const { return rank_of(c.dp, c.pp, c.tp); }
  // Ranks of `rank`'s tp group (same dp and pp; adjacent, ascending), dp group (same pp and
  // tp, stride pp x tp, ascending) and pp group (same dp and tp, stride tp, by ascending
  // stage). A rank's position in its group is its tp (resp. dp, pp) index.
  std::vector<int> tp_group(int rank) const;
  std::vector<int> dp_group(int rank) const;
  std::vector<int> pp_group(int rank) const;

  bool operator==(const Mesh& o) const {
    return world_ == o.world_ && dp_ == o.dp_ && tp_ == o.tp_ && pp_ == o.pp_;
  }

  // Checks a configuration: dp, tp, pp >= 1, pp x tp divides world, dp * pp * tp == world,
  // and the model's rule allows tp (e.g. tp divides the heads). The error lists the valid
  // (dp, tp) choices for this world size, pp and model, with the config keys to set.
  static void validate(int world, int dp, int tp, int pp, const TpRule& rule);
  static void validate(int world, int dp, int tp, const TpRule& rule) { validate(world, dp, tp, 1, rule); }
  // All (dp, tp) with dp * pp * tp == world that the rule allows, by ascending tp (pp is given:
  // the pipeline depth is chosen for the model's size, dp and tp for the world).
  static std::vector<std::pair<int, int>> valid_shapes(int world, const TpRule& rule, int pp = 1);

 private:
  void check_rank(int rank) const;
  int world_, dp_, tp_, pp_;
};

// The calling rank's sub-communicators. `world` is not owned (the caller keeps it).
struct MeshComms {
  Communicator* world = nullptr;
  std::unique_ptr<Communicator> dp;  // dp->rank() == coords(world rank).dp
  std::unique_ptr<Communicator> tp;  // tp->rank() == coords(world rank).tp
  std::unique_ptr<Communicator> pp;  // pp->rank() == coords(world rank).pp, the stage (size 1 at pp 1)
};

// Collective over `world`: splits it into the mesh's dp, tp and pp groups (names "dp", "tp",
// "pp"; the three splits in that order on every rank).
// world.size() must equal mesh.world().
MeshComms make_mesh_comms(Communicator& world, const Mesh& mesh);

}  // namespace mt::parallel
