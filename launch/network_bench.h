// What: `meshtrain bench network`: measures the two levels of the network the job runs on and
// fits the cost model's Network (launch/cost_model.h) to them. In one MPI job over H hosts of
// l ranks each (consecutive ranks share a host, e.g. a hostfile with slots=l), it times the
// framework's all-reduce over a size sweep on
//   intra: the l ranks of each host (shared memory), every host at once;
//   inter: the l groups of one rank per host (local rank k of each, over the network), all at
//          once, on bytes / l (per ring step the message size the flat ring sends across
//          hosts); the l groups share each host's link, as the hierarchical algorithm's inter
//          phase does, and the fit counts that sharing (links_per_host = 1);
//   flat:  all H x l ranks, parallel.allreduce = flat;
//   hier.: all H x l ranks, parallel.allreduce = hierarchical (only with H > 1 and l > 1);
// every communicator configured as the trainer configures its dp group (configure_allreduce:
// those spanning hosts send in network-sized pieces);
// fits alpha and beta per level (least squares on relative errors, each size's terms from the
// algorithm the framework runs at that size: flat_allreduce_terms) and prints the fits, then
// per size the measured flat and hierarchical times next to the two-level model's predictions
// (flat_allreduce_s, hierarchical_allreduce_s), with the errors. --json writes the fits in the form
// `meshtrain scale` reads (`network:` in the experiment, or the file's path).
// Why: the cost model's predictions for multi-host points are only as good as its intra- and
// inter-host alpha/beta, which must come from the hosts themselves, not a spec sheet.
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "launch/cost_model.h"
#include "parallel/communicator.h"

namespace mt::launch {

struct BenchNetworkArgs {
  size_t min_bytes = 4096;
  size_t max_bytes = 16u << 20;
  int factor = 4;
  int iters = 10;   // timed iterations per round (a quarter from 4 MiB, at least 2)
  int rounds = 5;   // the median round counts
  int warmup = 2;
  std::string json_out;
};

int cmd_bench_network(const BenchNetworkArgs& a, parallel::Communicator& world);

// {"intra": {"alpha_us", "gbytes_per_s"}, "inter": {...}, "ranks_per_host", "links_per_host",
// "ring_min_bytes"}: the form `bench network --json` writes under "network" and `scale` reads.
nlohmann::json network_to_json(const Network& net);
// Reads that form; `where` names the file / YAML key in errors. Missing ring_min_bytes: the
// MPI backend's 256 KiB; missing links_per_host: 1.
Network network_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace mt::launch
