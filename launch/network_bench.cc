// What: `meshtrain bench network` (see network_bench.h).
#include "launch/network_bench.h"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "parallel/hierarchical.h"

namespace mt::launch {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// Seconds per all-reduce of `bytes` on `comm`: the median over rounds of (the max over its
// ranks of the mean over `iters` calls).
double time_allreduce(parallel::Communicator& comm, std::vector<float>& buf, size_t bytes, const BenchNetworkArgs& a) {
  const size_t count = bytes / sizeof(float);
  std::fill(buf.begin(), buf.begin() + count, 0.0f);  // zeros: no growth towards inf
  const int iters = bytes >= (4u << 20) ? std::max(2, a.iters / 4) : a.iters;
  for (int i = 0; i < a.warmup; ++i) comm.all_reduce(buf.data(), count, parallel::DType::F32, parallel::ReduceOp::Sum);
  std::vector<double> rounds;
  for (int r = 0; r < a.rounds; ++r) {
    comm.barrier();
    const double t0 = MPI_Wtime();
    for (int i = 0; i < iters; ++i) comm.all_reduce(buf.data(), count, parallel::DType::F32, parallel::ReduceOp::Sum);
    double t = (MPI_Wtime() - t0) / iters;
    comm.all_reduce(&t, 1, parallel::DType::F64, parallel::ReduceOp::Max);
    rounds.push_back(t);
  }
  return median(rounds);
}

// A barrier over the world that sleeps between polls: the ranks waiting while one level is
// measured must not take the cores of the ranks measuring it (simulated hosts share them).
void idle_barrier() {
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  int done = 0;
  while (MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done) usleep(2000);
}

std::vector<size_t> sizes(const BenchNetworkArgs& a) {
  std::vector<size_t> s;
  for (size_t b = a.min_bytes; b <= a.max_bytes; b *= static_cast<size_t>(a.factor)) {
    s.push_back(b / sizeof(float) * sizeof(float));
    if (b > a.max_bytes / static_cast<size_t>(a.factor)) break;
  }
  return s;
}

// `share`: groups of the level that send through one link at once (inter: l per host).
AlphaBeta fit_level(const Network& shape, const std::vector<size_t>& bytes, const std::vector<double>& secs, int n,
                    bool inter, double share) {
  std::vector<std::pair<CostTerms, double>> pts;
  for (size_t i = 0; i < bytes.size(); ++i) {
    const LevelTerms t = flat_allreduce_terms(shape, static_cast<double>(bytes[i]), n);
    CostTerms c = inter ? t.inter : t.intra;
    c.coef_bytes *= share;
    pts.push_back({c, secs[i]});
  }
  return fit_alpha_beta_terms(pts);
}

}  // namespace

nlohmann::json network_to_json(const Network& net) {
  auto level = [](const AlphaBeta& ab) {
    return nlohmann::json{{"alpha_us", ab.alpha_s * 1e6}, {"gbytes_per_s", ab.beta_s > 0 ? 1e-9 / ab.beta_s : 0.0}};
  };
  return {{"intra", level(net.intra)}, {"inter", level(net.inter)}, {"ranks_per_host", net.ranks_per_host},
          {"links_per_host", net.links_per_host}, {"ring_min_bytes", net.ring_min_bytes},
          {"hier_min_bytes", net.hier_min_bytes}};
}

Network network_from_json(const nlohmann::json& j, const std::string& where) {
  auto err = [&](const std::string& what) {
    return core::Error(fmt::format("network: {}", what)).with_file(where)
        .with_hint("network: {intra: {alpha_us: A, gbytes_per_s: G}, inter: {alpha_us: A, gbytes_per_s: G}, "
                   "ranks_per_host: L} (what `meshtrain bench network --json` writes under \"network\")");
  };
  if (!j.is_object()) throw err("not a mapping");
  const nlohmann::json& n = j.contains("network") && j.at("network").is_object() ? j.at("network") : j;
  Network net;
  net.ring_min_bytes = 256u << 10;
  net.hier_min_bytes = 64u << 10;
  auto level = [&](const char* name) {
    if (!n.contains(name) || !n.at(name).is_object()) throw err(fmt::format("missing '{}'", name));
    const auto& l = n.at(name);
    if (!l.contains("alpha_us") || !l.contains("gbytes_per_s") || !l.at("alpha_us").is_number() ||
        !l.at("gbytes_per_s").is_number())
      throw err(fmt::format("'{}' needs numbers alpha_us and gbytes_per_s", name));
    const double alpha = l.at("alpha_us").get<double>(), g = l.at("gbytes_per_s").get<double>();
    if (alpha < 0 || !(g > 0)) throw err(fmt::format("'{}': alpha_us >= 0 and gbytes_per_s > 0 (got {}, {})", name, alpha, g));
    return AlphaBeta{alpha * 1e-6, 1e-9 / g};
  };
  net.intra = level("intra");
  net.inter = level("inter");
  if (!n.contains("ranks_per_host") || !n.at("ranks_per_host").is_number_integer() ||
      n.at("ranks_per_host").get<int>() < 1)
    throw err("missing ranks_per_host (an integer >= 1: consecutive ranks sharing a host)");
  net.ranks_per_host = n.at("ranks_per_host").get<int>();
  for (const auto& [key, value] : n.items()) {
    const bool known = key == "intra" || key == "inter" || key == "ranks_per_host" || key == "links_per_host" ||
                       key == "ring_min_bytes" || key == "hier_min_bytes";
    if (!known) throw err(fmt::format("unknown key '{}'", key));
    if (key != "intra" && key != "inter" && !value.is_number()) throw err(fmt::format("'{}' must be a number", key));
  }
  if (n.contains("links_per_host")) net.links_per_host = std::max(1, n.at("links_per_host").get<int>());
  if (n.contains("ring_min_bytes")) net.ring_min_bytes = n.at("ring_min_bytes").get<double>();
  if (n.contains("hier_min_bytes")) net.hier_min_bytes = n.at("hier_min_bytes").get<double>();
  return net;
}

int cmd_bench_network(const BenchNetworkArgs& a, parallel::Communicator& world) {
  MT_CHECK(a.min_bytes >= 4 && a.max_bytes >= a.min_bytes && a.factor >= 2 && a.iters >= 1 && a.rounds >= 1 &&
               a.warmup >= 0,
           "bench network: need 4 <= min_bytes <= max_bytes, factor >= 2, iters >= 1, rounds >= 1, warmup >= 0");
  // hosts from MPI itself: ranks sharing memory form a host
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world.rank(), MPI_INFO_NULL, &node);
  int local = 0, l = 1;
  MPI_Comm_rank(node, &local);
  MPI_Comm_size(node, &l);
  int leader = world.rank();
  MPI_Bcast(&leader, 1, MPI_INT, 0, node);
  MPI_Comm_free(&node);
  const int n = world.size(), hosts = n / l;
  const int host = world.rank() / l;
  int ok = (n % l == 0 && world.rank() == host * l + local && leader == host * l) ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!ok) {
    throw core::Error(fmt::format("bench network: the ranks are not placed as H hosts of {} consecutive ranks each",
                                  l))
        .with_hint("give every host the same slots (hostfile slots=L) and keep mpirun's default --map-by slot");
  }
  const bool print = world.rank() == 0;
  const auto sz = sizes(a);
  std::vector<float> buf(a.max_bytes / sizeof(float) + 1, 0.0f);  // touched once: fresh pages are slow
  // the levels, each measured while the rest of the job waits (raw MPI barrier: no deadline)
  Network net;
  net.ranks_per_host = l;
  net.links_per_host = 1;
  net.ring_min_bytes = 256u << 10;  // the MPI backend's defaults (parallel/mpi_communicator.h)
  net.hier_min_bytes = 64u << 10;
  auto intra = world.split(host, world.rank());
  auto inter = world.split(local, world.rank());
  // configured as the trainer configures its dp communicator (parallel/hierarchical.h): the
  // communicators that span hosts send in network-sized pieces; `hier` (all ranks) runs
  // parallel.allreduce = hierarchical where it applies (several hosts of l > 1 ranks)
  parallel::configure_allreduce(world, "flat");
  parallel::configure_allreduce(*inter, "flat");
  auto hier = world.split(0, world.rank());
  const bool hier_ok = parallel::configure_allreduce(*hier, "auto").hierarchical;
  std::vector<double> t_intra(sz.size(), 0), t_inter(sz.size(), 0), t_flat(sz.size(), 0), t_hier(sz.size(), 0);
  if (print) {
    std::cout << fmt::format("# network benchmark: {} host(s) x {} rank(s), framework all_reduce (f32 sum, backend {}); "
                             "median of {} rounds\n",
                             hosts, l, world.backend_name(), a.rounds);
    std::cout.flush();
  }
  // The inter level runs 1/l of each size: its ring steps then move the message sizes the flat
  // ring of all ranks moves across hosts (bytes / ranks), the range the fit must cover (TCP
  // over a rate-limited link is not linear in the message size: bursts beyond its queue lose
  // packets).
  std::vector<size_t> sz_inter;
  for (size_t b : sz) sz_inter.push_back(std::max<size_t>(sizeof(float), b / l / sizeof(float) * sizeof(float)));
  // Every group of a level runs at once (every host its intra all-reduce, every local index
  // its inter all-reduce), so as many ranks compete for the cores as in the flat all-reduce,
  // and the inter level's l groups share each host's link, as the hierarchical algorithm's
  // inter phase does; the fit divides that sharing out (coef_bytes x l / links_per_host).
  if (l > 1) {
    for (size_t i = 0; i < sz.size(); ++i) t_intra[i] = time_allreduce(*intra, buf, sz[i], a);
  }
  idle_barrier();
  if (hosts > 1) {
    for (size_t i = 0; i < sz.size(); ++i) t_inter[i] = time_allreduce(*inter, buf, sz_inter[i], a);
  }
  idle_barrier();
  for (size_t i = 0; i < sz.size(); ++i) t_flat[i] = time_allreduce(world, buf, sz[i], a);
  if (hier_ok) {
    idle_barrier();
    for (size_t i = 0; i < sz.size(); ++i) t_hier[i] = time_allreduce(*hier, buf, sz[i], a);
  }
  MPI_Allreduce(MPI_IN_PLACE, t_intra.data(), static_cast<int>(sz.size()), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, t_inter.data(), static_cast<int>(sz.size()), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  if (!print) return 0;
  // fits: the intra level on the l ranks of one host, the inter level on one rank per host
  // (shape = the measured group: one rank per host for inter)
  Network one_host = net;
  one_host.ranks_per_host = l;
  Network one_per_host = net;
  one_per_host.ranks_per_host = 1;
  if (l > 1) net.intra = fit_level(one_host, sz, t_intra, l, false, 1.0);
  if (hosts > 1) net.inter = fit_level(one_per_host, sz_inter, t_inter, hosts, true, static_cast<double>(l) / net.links_per_host);
  if (l == 1) net.intra = net.inter;  // nothing shares a host: the intra level is never used
  if (hosts == 1) net.inter = net.intra;
  auto show = [](const AlphaBeta& ab) {
    return fmt::format("alpha {:.1f} us, {:.3f} GB/s", ab.alpha_s * 1e6, ab.beta_s > 0 ? 1e-9 / ab.beta_s : 0.0);
  };
  std::cout << fmt::format("# intra-host ({} ranks on each host, all hosts at once): {}{}\n", l, show(net.intra),
                           l > 1 ? "" : " (not measured: 1 rank per host)");
  std::cout << fmt::format("# inter-host ({} hosts, {} groups of one rank per host at once, sharing each host's "
                           "link): {} per link{}\n",
                           hosts, l, show(net.inter), hosts > 1 ? "" : " (not measured: 1 host)");
  std::cout << fmt::format("# flat = all {} ranks; predicted by the two-level model (cost_model.h: "
                           "flat_allreduce_s); hier. = parallel.allreduce hierarchical on all ranks "
                           "(hierarchical_allreduce_s; flat below {} KiB){}\n",
                           n, net.hier_min_bytes / 1024, hier_ok ? "" : " (not measured: needs several hosts of > 1 rank)");
  std::cout << fmt::format("# inter us: one rank per host on bytes / {} (the flat ring's per-host share)\n", l);
  std::cout << fmt::format("# {:>10}  {:>10} {:>10}  {:>10} {:>10} {:>7}  {:>10} {:>10} {:>7}\n", "bytes", "intra us",
                           "inter us", "flat us", "predicted", "error", "hier. us", "predicted", "error");
  nlohmann::json rows = nlohmann::json::array();
  double worst = 0, worst_hier = 0;
  for (size_t i = 0; i < sz.size(); ++i) {
    const double b = static_cast<double>(sz[i]);
    const double pred = flat_allreduce_s(net, b, n), hier = hierarchical_allreduce_s(net, b, n);
    const double err = 100.0 * (pred - t_flat[i]) / t_flat[i];
    worst = std::max(worst, std::fabs(err));
    const double herr = hier_ok ? 100.0 * (hier - t_hier[i]) / t_hier[i] : 0.0;
    worst_hier = std::max(worst_hier, std::fabs(herr));
    std::cout << fmt::format("  {:>10}  {:>10.1f} {:>10.1f}  {:>10.1f} {:>10.1f} {:>+6.1f}%  {:>10.1f} {:>10.1f} {:>+6.1f}%\n",
                             sz[i], t_intra[i] * 1e6, t_inter[i] * 1e6, t_flat[i] * 1e6, pred * 1e6, err,
                             t_hier[i] * 1e6, hier * 1e6, herr);
    nlohmann::json row{{"bytes", sz[i]}, {"intra_us", t_intra[i] * 1e6}, {"inter_bytes", sz_inter[i]},
                       {"inter_us", t_inter[i] * 1e6}, {"flat_us", t_flat[i] * 1e6},
                       {"flat_predicted_us", pred * 1e6}, {"error_pct", err},
                       {"hierarchical_predicted_us", hier * 1e6}};
    if (hier_ok) row["hierarchical_us"] = t_hier[i] * 1e6, row["hierarchical_error_pct"] = herr;
    rows.push_back(row);
  }
  std::cout << fmt::format("# largest |error| flat {:.1f}%{}\n", worst,
                           hier_ok ? fmt::format(", hierarchical {:.1f}%", worst_hier) : "");
  std::cout.flush();
  if (!a.json_out.empty()) {
    std::ofstream f(a.json_out);
    if (!f) throw core::Error("cannot write the network fit").with_file(a.json_out);
    f << nlohmann::json{{"hosts", hosts}, {"world", n}, {"network", network_to_json(net)}, {"rows", rows}}.dump(2)
      << "\n";
  }
  return 0;
}

}  // namespace mt::launch
