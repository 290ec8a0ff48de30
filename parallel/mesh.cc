// What: Mesh rank arithmetic, validation with helpful errors, and the dp/tp split.
#include "parallel/mesh.h"

#include <string>

#include "core/error.h"

namespace mt::parallel {

namespace {
std::string shapes_text(const std::vector<std::pair<int, int>>& shapes) {
  std::string s;
  for (const auto& [d, t] : shapes) {
    if (!s.empty()) s += ", ";
    s += fmt::format("dp={} tp={}", d, t);
  }
  return s.empty() ? "none" : s;
}
}  // namespace

Mesh::Mesh(int world, int dp, int tp) : world_(world), dp_(dp), tp_(tp) {
  MT_CHECK(world >= 1 && dp >= 1 && tp >= 1, "mesh sizes must be positive: world {}, dp {}, tp {}", world, dp, tp);
  MT_CHECK(dp * tp == world, "mesh dp x tp = {} x {} = {} does not match the world size {}", dp, tp, dp * tp, world);
}

void Mesh::check_rank(int rank) const {
  MT_CHECK(rank >= 0 && rank < world_, "rank {} is outside the mesh of {} ranks", rank, world_);
}

MeshCoords Mesh::coords(int rank) const {
  check_rank(rank);
  return {rank / tp_, rank % tp_};
}

int Mesh::rank_of(int dp_index, int tp_index) const {
  MT_CHECK(dp_index >= 0 && dp_index < dp_ && tp_index >= 0 && tp_index < tp_,
           "mesh coordinates (dp {}, tp {}) are outside dp {} x tp {}", dp_index, tp_index, dp_, tp_);
  return dp_index * tp_ + tp_index;
}

std::vector<int> Mesh::tp_group(int rank) const {
  const MeshCoords c = coords(rank);
  std::vector<int> g;
  g.reserve(tp_);
  for (int t = 0; t < tp_; ++t) g.push_back(rank_of(c.dp, t));
  return g;
}

std::vector<int> Mesh::dp_group(int rank) const {
  const MeshCoords c = coords(rank);
  std::vector<int> g;
  g.reserve(dp_);
  for (int d = 0; d < dp_; ++d) g.push_back(rank_of(d, c.tp));
  return g;
}

std::vector<std::pair<int, int>> Mesh::valid_shapes(int world, const TpRule& rule) {
  std::vector<std::pair<int, int>> v;
  for (int t = 1; t <= world; ++t)
    if (world % t == 0 && rule.allows(t)) v.emplace_back(world / t, t);
  return v;
}

void Mesh::validate(int world, int dp, int tp, const TpRule& rule) {
  MT_CHECK(world >= 1, "world size must be at least 1, got {}", world);
  const auto shapes = valid_shapes(world, rule);
  const std::string valid = fmt::format("valid choices for {} rank(s){}: {}", world,
                                        rule.constraint.empty() ? "" : " and " + rule.constraint, shapes_text(shapes));
  const std::string hint = "set parallel.tp (and parallel.dp, or parallel.dp=0 for world / tp) to one of the "
                           "valid choices, or launch a different number of ranks";
  if (tp < 1 || dp < 1)
    throw core::Error(fmt::format("parallel.dp = {} and parallel.tp = {} must be at least 1; {}", dp, tp, valid))
        .with_yaml(tp < 1 ? "parallel.tp" : "parallel.dp")
        .with_hint(hint)
        .with_where(__FILE__, __LINE__);
  if (static_cast<long long>(dp) * tp != world)
    throw core::Error(fmt::format("parallel.dp x parallel.tp = {} x {} = {} does not match the {} launched rank(s); "
                                  "{}",
                                  dp, tp, static_cast<long long>(dp) * tp, world, valid))
        .with_yaml("parallel.dp")
        .with_hint(hint)
        .with_where(__FILE__, __LINE__);
  if (!rule.allows(tp))
    throw core::Error(fmt::format("{}; {}", rule.violation(tp), valid))
        .with_yaml("parallel.tp")
        .with_hint(hint)
        .with_where(__FILE__, __LINE__);
}

MeshComms make_mesh_comms(Communicator& world, const Mesh& mesh) {
  MT_CHECK(world.size() == mesh.world(), "the mesh has {} ranks but communicator '{}' has {}", mesh.world(),
           world.name(), world.size());
  const MeshCoords c = mesh.coords(world.rank());
  MeshComms m;
  m.world = &world;
  // Same tp index -> same dp group, ordered by dp index; same dp index -> same tp group.
  m.dp = world.split(c.tp, c.dp);
  m.tp = world.split(c.dp, c.tp);
  MT_CHECK(m.dp && m.tp, "splitting '{}' into the dp and tp groups failed", world.name());
  m.dp->set_name("dp");
  m.tp->set_name("tp");
  MT_CHECK(m.dp->size() == mesh.dp() && m.tp->size() == mesh.tp() && m.dp->rank() == c.dp && m.tp->rank() == c.tp,
           "mesh split of '{}' produced groups of sizes dp {} tp {} (expected {} and {})", world.name(),
           m.dp->size(), m.tp->size(), mesh.dp(), mesh.tp());
  return m;
}

}  // namespace mt::parallel
