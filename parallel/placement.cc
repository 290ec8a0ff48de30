// What: host-major world order and the placement report of a mesh on hosts (see placement.h).
#include "parallel/placement.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"

namespace mt::parallel {

std::vector<int> host_major_order(const std::vector<std::string>& host_of_launcher_rank) {
  std::map<std::string, int> host_index;  // host -> order of first appearance
  std::vector<int> count;                 // ranks per host, by host index
  for (const auto& h : host_of_launcher_rank) {
    auto [it, fresh] = host_index.emplace(h, static_cast<int>(count.size()));
    if (fresh) count.push_back(0);
    ++count[it->second];
  }
  std::vector<int> first(count.size(), 0);  // world rank of each host's first rank
  for (size_t i = 1; i < count.size(); ++i) first[i] = first[i - 1] + count[i - 1];
  std::vector<int> order(host_of_launcher_rank.size());
  for (size_t r = 0; r < host_of_launcher_rank.size(); ++r) order[r] = first[host_index[host_of_launcher_rank[r]]]++;
  return order;
}

bool Placement::reordered() const {
  for (size_t r = 0; r < world_rank_of.size(); ++r)
    if (world_rank_of[r] != static_cast<int>(r)) return true;
  return false;
}

namespace {
PlacedGroup group(std::vector<int> ranks, const std::vector<std::string>& host_of) {
  PlacedGroup g;
  for (int r : ranks)
    if (std::find(g.hosts.begin(), g.hosts.end(), host_of[r]) == g.hosts.end()) g.hosts.push_back(host_of[r]);
  g.ranks = std::move(ranks);
  return g;
}
}  // namespace

Placement place(const std::vector<std::string>& host_of_launcher_rank, const Mesh& mesh) {
  MT_CHECK(static_cast<int>(host_of_launcher_rank.size()) == mesh.world(), "placement: {} hosts for a world of {}",
           host_of_launcher_rank.size(), mesh.world());
  Placement p;
  p.world_rank_of = host_major_order(host_of_launcher_rank);
  const size_t n = host_of_launcher_rank.size();
  p.launcher_rank_of.assign(n, 0);
  p.host_of_world_rank.assign(n, "");
  for (size_t r = 0; r < n; ++r) {
    p.launcher_rank_of[p.world_rank_of[r]] = static_cast<int>(r);
    p.host_of_world_rank[p.world_rank_of[r]] = host_of_launcher_rank[r];
  }
  std::map<std::string, int> per_host;
  for (const auto& h : host_of_launcher_rank) ++per_host[h];
  p.max_ranks_per_host = 0;
  p.min_ranks_per_host = static_cast<int>(n);
  for (const auto& [h, c] : per_host) {
    p.max_ranks_per_host = std::max(p.max_ranks_per_host, c);
    p.min_ranks_per_host = std::min(p.min_ranks_per_host, c);
  }
  for (int r = 0; r < mesh.world(); ++r) {
    const MeshCoords c = mesh.coords(r);
    if (c.tp == 0) {
      p.tp_groups.push_back(group(mesh.tp_group(r), p.host_of_world_rank));
      if (p.tp_groups.back().crosses_hosts()) p.crossing_tp_groups.push_back(p.tp_groups.back());
    }
    if (c.pp == 0 && mesh.pp() > 1 && group(mesh.pp_group(r), p.host_of_world_rank).crosses_hosts())
      ++p.pp_groups_crossing;
    if (c.dp == 0 && mesh.dp() > 1 && group(mesh.dp_group(r), p.host_of_world_rank).crosses_hosts())
      ++p.dp_groups_crossing;
  }
  return p;
}

namespace {
std::string ranks_text(const std::vector<int>& r) { return fmt::format("{{{}}}", fmt::join(r, ",")); }
}  // namespace

std::string placement_warning(const Placement& p, const Mesh& mesh) {
  if (p.crossing_tp_groups.empty()) return "";
  constexpr size_t kShown = 3;
  std::string groups;
  for (size_t i = 0; i < p.crossing_tp_groups.size() && i < kShown; ++i) {
    const auto& g = p.crossing_tp_groups[i];
    groups += fmt::format("{}ranks {} on {}", i ? "; " : "", ranks_text(g.ranks), fmt::join(g.hosts, " + "));
  }
  if (p.crossing_tp_groups.size() > kShown) groups += fmt::format("; ... (+{} more)", p.crossing_tp_groups.size() - kShown);
  std::string why;
  if (mesh.tp() > p.max_ranks_per_host)
    why = fmt::format("parallel.tp = {} is larger than the ranks of a host ({})", mesh.tp(), p.max_ranks_per_host);
  else if (p.min_ranks_per_host != p.max_ranks_per_host)
    why = fmt::format("the hosts run uneven rank counts ({} to {}) that parallel.tp = {} does not divide",
                      p.min_ranks_per_host, p.max_ranks_per_host, mesh.tp());
  else
    why = fmt::format("parallel.tp = {} does not divide the {} ranks per host", mesh.tp(), p.max_ranks_per_host);
  return fmt::format(
      "placement: {} of {} tp group(s) span hosts ({}), so their per-layer all-reduces (and sequence-parallel "
      "gathers) go over the network: {}; hint: use a parallel.tp that divides the ranks per host, or start a "
      "multiple of parallel.tp ranks on every host (mpirun --map-by ppr:N:node, srun --ntasks-per-node=N)",
      p.crossing_tp_groups.size(), p.tp_groups.size(), groups, why);
}

std::string placement_summary(const Placement& p, const Mesh& mesh) {
  const size_t tp_in = p.tp_groups.size() - p.crossing_tp_groups.size();
  std::string s = mesh.tp() == 1 ? std::string("tp 1")
                  : p.crossing_tp_groups.empty()
                      ? fmt::format("tp groups inside a host ({} of {})", tp_in, p.tp_groups.size())
                      : fmt::format("tp groups SPANNING hosts: {} of {}", p.crossing_tp_groups.size(), p.tp_groups.size());
  if (mesh.pp() > 1)
    s += fmt::format(", pp groups spanning hosts {} of {}", p.pp_groups_crossing, mesh.world() / mesh.pp());
  if (mesh.dp() > 1)
    s += fmt::format(", dp groups spanning hosts {} of {}", p.dp_groups_crossing, mesh.world() / mesh.dp());
  if (p.reordered()) s += " (world ranks reordered host by host from the launcher's order)";
  return s;
}

}  // namespace mt::parallel
