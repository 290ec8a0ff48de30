// What: host_layout and configure_allreduce (hierarchical.h).
#include "parallel/hierarchical.h"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "parallel/mpi_communicator.h"
#include "parallel/timeout_communicator.h"

namespace mt::parallel {

namespace {

std::string this_host(int fake_hosts) {
  if (fake_hosts > 0) {
    int r = 0, n = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return fmt::format("fake-host-{}", static_cast<long long>(r) * fake_hosts / n);
  }
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

}  // namespace

void check_allreduce_mode(const std::string& mode) {
  if (mode != "auto" && mode != "flat" && mode != "hierarchical")
    throw core::Error(fmt::format("parallel.allreduce = '{}' is not auto, flat or hierarchical", mode))
        .with_yaml("parallel.allreduce")
        .with_hint("auto: hierarchical across hosts, flat inside one");
}

HostLayout host_layout(Communicator& c, int fake_hosts) {
  const std::vector<std::string> names = all_gather_strings(c, this_host(fake_hosts));
  std::map<std::string, int> index;  // name -> host number
  std::vector<int> count;            // ranks per host
  HostLayout l;
  for (int r = 0; r < c.size(); ++r) {
    const std::string& name = names[static_cast<size_t>(r)];
    auto [it, fresh] = index.emplace(name, static_cast<int>(count.size()));
    if (fresh) count.push_back(0);
    if (r == c.rank()) {
      l.host = it->second;
      l.local_rank = count[it->second];
    }
    ++count[it->second];
  }
  l.hosts = static_cast<int>(count.size());
  l.min_local = *std::min_element(count.begin(), count.end());
  l.max_local = *std::max_element(count.begin(), count.end());
  return l;
}

AllreducePlan configure_allreduce(Communicator& c, const std::string& mode, int fake_hosts) {
  check_allreduce_mode(mode);
  AllreducePlan plan;
  auto* mpi = dynamic_cast<MpiCommunicator*>(&backend_of(c));
  if (!mpi) {
    plan.note = fmt::format("flat: the {} backend arranges its own rings and trees across nodes", c.backend_name());
    return plan;
  }
  if (mpi->hierarchical()) {
    plan.hierarchical = true;
    plan.note = "hierarchical (already configured)";
    return plan;
  }
  const HostLayout l = host_layout(c, fake_hosts);
  mpi->set_spans_hosts(l.hosts > 1);  // network-sized pieces for the flat algorithms (also "flat")
  const std::string where = fmt::format("{} rank(s) on {} host(s){}", c.size(), l.hosts,
                                        fake_hosts > 0 ? fmt::format(" (parallel.fake_hosts = {})", fake_hosts) : "");
  if (mode == "flat") plan.note = fmt::format("flat: {} (parallel.allreduce = flat)", where);
  else if (l.hosts == 1) plan.note = fmt::format("flat: {}, nothing crosses a network", where);
  else if (l.max_local == 1) plan.note = fmt::format("flat: {}, one rank per host (hierarchical would be the same)", where);
  else if (!l.uniform())
    plan.note = fmt::format("flat: {} holding {} to {} ranks each; hierarchical needs the same number on every host",
                            where, l.min_local, l.max_local);
  if (!plan.note.empty()) {
    if (mode == "hierarchical" && c.rank() == 0 && plan.note.find("= flat") == std::string::npos)
      core::log::warn("parallel.allreduce = hierarchical on '{}': {}", c.name(), plan.note);
    return plan;
  }
  mpi->enable_hierarchy(l.host, l.local_rank);
  plan.hierarchical = true;
  plan.note = fmt::format("hierarchical: {} x {} ranks (reduce-scatter inside each host, all-reduce of 1/{} across "
                          "hosts, all-gather inside)",
                          l.hosts, l.max_local, l.max_local) +
              (fake_hosts > 0 ? fmt::format(" (parallel.fake_hosts = {})", fake_hosts) : "");
  return plan;
}

}  // namespace mt::parallel
