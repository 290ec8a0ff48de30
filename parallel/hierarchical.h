// What: parallel.allreduce (auto | flat | hierarchical): which ranks of a communicator share a
// host (host_layout), and configure_allreduce(), which turns an MPI communicator's all_reduce
// into the hierarchical one (MpiCommunicator::enable_hierarchy: reduce-scatter inside each host
// over shared memory, all-reduce of 1/local_size of the data across hosts, all-gather inside
// the host) where that layout allows it, and says what it chose and why.
// Why: between hosts the network is the bottleneck; a flat ring sends 2(p-1)/p of the array
// through every host's link, the hierarchical all-reduce 2(h-1)/h (h hosts): 1.5x fewer bytes
// at 2 hosts x 2 ranks. Inside one host nothing changes (auto is flat there), so one-host runs
// keep their exact losses. The sub-communicators are built once, here, and owned by the
// communicator they serve: no global state.
#pragma once

#include <string>

#include "parallel/communicator.h"

namespace mt::parallel {

// Who shares a host, as the ranks of one communicator see it.
struct HostLayout {
  int hosts = 1;       // distinct hosts among the communicator's ranks
  int host = 0;        // this rank's host, numbered by first appearance in rank order
  int local_rank = 0;  // this rank's position among its host's ranks of the communicator
  int min_local = 1;   // fewest ranks of the communicator on one host
  int max_local = 1;   // most
  bool uniform() const { return min_local == max_local; }
};

// Collective over `c` (a host communicator). Hosts are told apart by host name (gethostname;
// a simulated host's UTS namespace has its own), or, with fake_hosts = K > 0 (testing:
// parallel.fake_hosts, bench allreduce --fake-hosts), by world rank: world rank r is on fake
// host r * K / world size (contiguous blocks, as launchers fill nodes in rank order).
HostLayout host_layout(Communicator& c, int fake_hosts = 0);

// Throws mt::core::Error (YAML key parallel.allreduce) unless mode is auto, flat or hierarchical.
void check_allreduce_mode(const std::string& mode);

struct AllreducePlan {
  bool hierarchical = false;  // c's all_reduce is now hierarchical
  std::string note;           // what was chosen and why, for a log line (same on every rank of c)
};

// Collective over `c` (unless c is no MPI communicator). Every mode: a communicator that
// spans hosts sends its flat algorithms' messages in network-sized pieces
// (MpiCommunicator::set_spans_hosts). "flat": nothing else changes. "hierarchical" and "auto": hierarchical when c is an MPI communicator (under any
// TimeoutCommunicator), spans more than one host, some host holds more than one of its ranks
// and every host holds the same number; otherwise flat, and the note says why (one host; one
// rank per host: hierarchical would be the flat algorithm; uneven hosts: not supported; a
// device backend: NCCL builds its own rings and trees across nodes, so there it is flat).
// "hierarchical" differs from "auto" only in that falling back is logged as a warning.
AllreducePlan configure_allreduce(Communicator& c, const std::string& mode, int fake_hosts = 0);

}  // namespace mt::parallel
