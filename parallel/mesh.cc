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

Mesh::Mesh(int world, int dp, int tp, int pp) : world_(world), dp_(dp), tp_(tp), pp_(pp) {
  MT_CHECK(world >= 1 && dp >= 1 && tp >= 1 && pp >= 1, "mesh sizes must be positive: world {}, dp {}, pp {}, tp {}",
           world, dp, pp, tp);
  MT_CHECK(static_cast<long long>(dp) * pp * tp == world, "mesh dp x pp x tp = {} x {} x {} = {} does not match the world size {}",
           dp, pp, tp, static_cast<long long>(dp) * pp * tp, world);
}

void Mesh::check_rank(int rank) const {
  MT_CHECK(rank >= 0 && rank < world_, "rank {} is outside the mesh of {} ranks", rank, world_);
}

MeshCoords Mesh::coords(int rank) const {
  check_rank(rank);
  MeshCoords c;
  c.tp = rank % tp_;
  c.pp = (rank / tp_) % pp_;
  c.dp = rank / (tp_ * pp_);
  return c;
}

int Mesh::rank_of(int dp_index, int pp_index, int tp_index) const {
  MT_CHECK(dp_index >= 0 && dp_index < dp_ && pp_index >= 0 && pp_index < pp_ && tp_index >= 0 && tp_index < tp_,
           "mesh coordinates (dp {}, pp {}, tp {}) are outside dp {} x pp {} x tp {}", dp_index, pp_index, tp_index,
           dp_, pp_, tp_);
  return (dp_index * pp_ + pp_index) * tp_ + tp_index;
}

int Mesh::rank_of(int dp_index, int tp_index) const {
  MT_CHECK(pp_ == 1, "rank_of(dp, tp) on a mesh with pp {}: give the stage", pp_);
  return rank_of(dp_index, 0, tp_index);
}

std::vector<int> Mesh::tp_group(int rank) const {
  const MeshCoords c = coords(rank);
  std::vector<int> g;
  g.reserve(tp_);
  for (int t = 0; t < tp_; ++t) g.push_back(rank_of(c.dp, c.pp, t));
  return g;
}

std::vector<int> Mesh::dp_group(int rank) const {
  const MeshCoords c = coords(rank);
  std::vector<int> g;
  g.reserve(dp_);
  for (int d = 0; d < dp_; ++d) g.push_back(rank_of(d, c.pp, c.tp));
  return g;
}

std::vector<int> Mesh::pp_group(int rank) const {
  const MeshCoords c = coords(rank);
  std::vector<int> g;
  g.reserve(pp_);
  for (int p = 0; p < pp_; ++p) g.push_back(rank_of(c.dp, p, c.tp));
  return g;
}

std::vector<std::pair<int, int>> Mesh::valid_shapes(int world, const TpRule& rule, int pp) {
  std::vector<std::pair<int, int>> v;
  if (pp < 1 || world % pp != 0) return v;
  const int rest = world / pp;
  for (int t = 1; t <= rest; ++t)
    if (rest % t == 0 && rule.allows(t)) v.emplace_back(rest / t, t);
  return v;
}

void Mesh::validate(int world, int dp, int tp, int pp, const TpRule& rule) {
  MT_CHECK(world >= 1, "world size must be at least 1, got {}", world);
  const std::string hint = "set parallel.tp (and parallel.dp, or parallel.dp=0 for world / (tp x pp)) to one of the "
                           "valid choices, or launch a different number of ranks";
  if (pp < 1 || world % pp != 0) {
    throw core::Error(fmt::format("parallel.pp = {} {} the {} launched rank(s)", pp,
                                  pp < 1 ? "must be at least 1 and divide" : "does not divide", world))
        .with_yaml("parallel.pp")
        .with_hint("choose parallel.pp among the divisors of the world size, or launch a multiple of parallel.pp "
                   "ranks")
        .with_where(__FILE__, __LINE__);
  }
  const auto shapes = valid_shapes(world, rule, pp);
  const std::string with_pp = pp > 1 ? fmt::format(" at parallel.pp = {}", pp) : "";
  const std::string valid = fmt::format("valid choices for {} rank(s){}{}: {}", world, with_pp,
                                        rule.constraint.empty() ? "" : " and " + rule.constraint, shapes_text(shapes));
  if (tp < 1 || dp < 1)
    throw core::Error(fmt::format("parallel.dp = {} and parallel.tp = {} must be at least 1; {}", dp, tp, valid))
        .with_yaml(tp < 1 ? "parallel.tp" : "parallel.dp")
        .with_hint(hint)
        .with_where(__FILE__, __LINE__);
  if (pp == 1 && static_cast<long long>(dp) * tp != world)
    throw core::Error(fmt::format("parallel.dp x parallel.tp = {} x {} = {} does not match the {} launched rank(s); "
                                  "{}",
                                  dp, tp, static_cast<long long>(dp) * tp, world, valid))
        .with_yaml("parallel.dp")
        .with_hint(hint)
        .with_where(__FILE__, __LINE__);
  if (pp > 1 && static_cast<long long>(dp) * pp * tp != world)
    throw core::Error(fmt::format("parallel.dp x parallel.pp x parallel.tp = {} x {} x {} = {} does not match the {} "
                                  "launched rank(s); {}",
                                  dp, pp, tp, static_cast<long long>(dp) * pp * tp, world, valid))
        .with_yaml(world % (static_cast<long long>(pp) * tp) != 0 ? "parallel.tp" : "parallel.dp")
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
  // One colour per group, the key orders its members: same (pp, tp) -> a dp group by dp index;
  // same (dp, pp) -> a tp group by tp index; same (dp, tp) -> a pp group by stage. (At pp 1 the
  // colours are those of the dp x tp mesh: c.tp and c.dp.)
  m.dp = world.split(c.pp * mesh.tp() + c.tp, c.dp);
  m.tp = world.split(c.dp * mesh.pp() + c.pp, c.tp);
  m.pp = world.split(c.dp * mesh.tp() + c.tp, c.pp);
  MT_CHECK(m.dp && m.tp && m.pp, "splitting '{}' into the dp, tp and pp groups failed", world.name());
  m.dp->set_name("dp");
  m.tp->set_name("tp");
  m.pp->set_name("pp");
  MT_CHECK(m.dp->size() == mesh.dp() && m.tp->size() == mesh.tp() && m.pp->size() == mesh.pp() &&
               m.dp->rank() == c.dp && m.tp->rank() == c.tp && m.pp->rank() == c.pp,
           "mesh split of '{}' produced groups of sizes dp {} tp {} pp {} (expected {}, {} and {})", world.name(),
           m.dp->size(), m.tp->size(), m.pp->size(), mesh.dp(), mesh.tp(), mesh.pp());
  return m;
}

}  // namespace mt::parallel
