// What: the hierarchical all-reduce (parallel.allreduce, parallel/hierarchical.h) on one
// machine, with hosts simulated by parallel.fake_hosts or given to enable_hierarchy directly:
// the host layout and what configure_allreduce chooses (one host, one rank per host, uneven
// hosts: flat; 2 x 2: hierarchical); results against a double-precision reference for odd
// sizes (not divisible by the ranks per host, smaller than them, across the ring threshold)
// and several algorithm options; every dtype and op on the shared closed forms, blocking and
// nonblocking waited in different orders; bitwise-identical results on every rank and from
// one call to the next; the same through a TimeoutCommunicator.
// Under np 2 and np 4 (tests/CMakeLists.txt); np 4 runs the 2 hosts x 2 ranks case.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <limits>

#include "collective_cases.h"
#include "core/error.h"
#include "core/hash.h"
#include "parallel/hierarchical.h"
#include "parallel/mpi_communicator.h"
#include "parallel/timeout_communicator.h"

using namespace mt::parallel;
using namespace mt::testing;

namespace {

// Inputs with rounding in every sum, different on every rank and element.
double rough(int r, size_t i) { return std::sin(0.37 * static_cast<double>(i) + 1.3 * r) * 3.0 + 0.01 * r; }

// Bitwise equality of `n` bytes across the ranks of MPI_COMM_WORLD.
bool same_on_all_ranks(const void* p, size_t n) {
  uint64_t h = mt::core::fnv1a64(p, n), lo = h, hi = h;
  MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  return lo == hi;
}

struct Opt {
  const char* name;
  MpiCommOptions opt;
};
std::vector<Opt> options() {
  MpiCommOptions dflt, ring, small, lib;
  dflt.hier_min_bytes = ring.hier_min_bytes = small.hier_min_bytes = lib.hier_min_bytes = 0;  // at every size
  lib.small_algorithm = SmallAlgorithm::Library;
  ring.hier_chunk_bytes = 40000;  // chunks in flight two at a time (sizes not multiples of it)  // (flat ops only: the inter-host stage stays the framework's)
  ring.ring_min_bytes = 0;  // the ring everywhere, in tiny segments
  ring.segment_bytes = 256;
  small.ring_min_bytes = std::numeric_limits<size_t>::max();  // recursive doubling across hosts
  small.small_piece_bytes = 1000;
  return {{"default", dflt}, {"ring_seg256", ring}, {"rd_pieces1000", small}, {"library", lib}};
}

// Hosts for enable_hierarchy: pairs of ranks ({0,1} {2,3}), one host, one host per rank.
struct Layout {
  const char* name;
  int host, local_rank;
};
std::vector<Layout> layouts(int r, int p) {
  std::vector<Layout> v = {{"one_host", 0, r}, {"host_per_rank", r, 0}};
  if (p % 2 == 0) v.push_back({"pairs", r / 2, r % 2});
  return v;
}

template <class T>
void reference_case(Communicator& c, const std::string& tag) {
  const int p = c.size(), r = c.rank();
  constexpr DType dt = Ty<T>::dt;
  const double eps = std::numeric_limits<T>::epsilon();
  for (size_t n : {size_t(1), size_t(3), size_t(17), size_t(1001), size_t(100003)}) {
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max}) {
      // every rank's inputs, computed once (a recomputation may contract to FMA differently)
      std::vector<T> in(n * p);
      for (int q = 0; q < p; ++q)
        for (size_t i = 0; i < n; ++i) in[q * n + i] = static_cast<T>(rough(q, i));
      std::vector<T> x(in.begin() + r * n, in.begin() + (r + 1) * n), again = x;
      c.all_reduce(x.data(), n, dt, op);
      c.all_reduce(again.data(), n, dt, op);
      size_t bad = 0;
      double worst = 0;
      for (size_t i = 0; i < n; ++i) {
        double ref = op == ReduceOp::Max ? -1e300 : 0.0, mag = 0;
        for (int q = 0; q < p; ++q) {
          const double v = in[q * n + i];
          ref = op == ReduceOp::Max ? std::max(ref, v) : ref + v;
          mag += std::abs(v);
        }
        if (op == ReduceOp::Avg) ref /= p, mag /= p;
        const double err = std::abs(static_cast<double>(x[i]) - ref);
        // p-1 additions (+ the division), each within half an ulp of a partial sum
        const double tol = op == ReduceOp::Max ? 0.0 : (p + 1) * eps * mag;
        if (err > tol) ++bad, worst = std::max(worst, err);
      }
      EXPECT_EQ(bad, 0u) << tag << " " << dtype_name(dt) << " " << reduce_op_name(op) << " n=" << n
                         << ": worst error " << worst;
      EXPECT_EQ(std::memcmp(x.data(), again.data(), n * sizeof(T)), 0)
          << tag << " n=" << n << ": two identical calls gave different bits";
      EXPECT_TRUE(same_on_all_ranks(x.data(), n * sizeof(T)))
          << tag << " " << dtype_name(dt) << " " << reduce_op_name(op) << " n=" << n << ": ranks differ";
    }
  }
}

}  // namespace

TEST(HierarchicalAllreduce, HostLayoutAndChoice) {
  MpiCommunicator world(MPI_COMM_WORLD, "world");
  const int p = world.size(), r = world.rank();
  const HostLayout real = host_layout(world);
  EXPECT_EQ(real.hosts, 1);  // every rank of this test runs on this machine
  EXPECT_EQ(real.local_rank, r);
  const HostLayout two = host_layout(world, 2);
  EXPECT_EQ(two.hosts, 2);
  EXPECT_EQ(two.host, r * 2 / p);
  EXPECT_EQ(two.local_rank, r % (p / 2));
  EXPECT_TRUE(two.uniform());

  {  // one host: auto and hierarchical are flat, so one-host runs are unchanged
    MpiCommunicator c(MPI_COMM_WORLD, "c");
    for (const char* mode : {"auto", "hierarchical", "flat"}) {
      const AllreducePlan plan = configure_allreduce(c, mode);
      EXPECT_FALSE(plan.hierarchical) << mode << ": " << plan.note;
      EXPECT_NE(plan.note.find("flat"), std::string::npos) << plan.note;
    }
    EXPECT_FALSE(c.hierarchical());
  }
  {  // fake hosts 2: np 2 -> one rank per host (flat), np 4 -> 2 x 2 (hierarchical)
    MpiCommunicator c(MPI_COMM_WORLD, "c");
    EXPECT_FALSE(configure_allreduce(c, "flat", 2).hierarchical);
    const AllreducePlan plan = configure_allreduce(c, "auto", 2);
    EXPECT_EQ(plan.hierarchical, p == 4) << plan.note;
    EXPECT_EQ(c.hierarchical(), p == 4);
    if (p == 4) {
      EXPECT_EQ(c.intra_host()->size(), 2);
      EXPECT_EQ(c.inter_host()->size(), 2);
      EXPECT_EQ(c.intra_host()->rank(), r % 2);
      EXPECT_EQ(c.inter_host()->rank(), r / 2);
    } else {
      EXPECT_NE(plan.note.find("one rank per host"), std::string::npos) << plan.note;
    }
  }
  if (p == 4) {  // fake hosts 3 over 4 ranks: 2 + 1 + 1, uneven -> flat with the reason
    MpiCommunicator c(MPI_COMM_WORLD, "c");
    const AllreducePlan plan = configure_allreduce(c, "hierarchical", 3);
    EXPECT_FALSE(plan.hierarchical);
    EXPECT_NE(plan.note.find("same number"), std::string::npos) << plan.note;
  }
  EXPECT_THROW(check_allreduce_mode("ring"), mt::core::Error);
}

TEST(HierarchicalAllreduce, MatchesDoubleReference) {
  for (const auto& o : options()) {
    if (o.opt.small_algorithm == SmallAlgorithm::Library) continue;  // (the closed forms cover it)
    int r = 0, p = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    for (const Layout& me : layouts(r, p)) {
      MpiCommunicator c(MPI_COMM_WORLD, "h", o.opt);
      c.enable_hierarchy(me.host, me.local_rank);
      ASSERT_TRUE(c.hierarchical());
      const std::string tag = std::string(o.name) + "/" + me.name;
      reference_case<float>(c, tag);
      reference_case<double>(c, tag);
    }
  }
}

TEST(HierarchicalAllreduce, ClosedFormsEveryDtypeBlockingAndNonblocking) {
  HostMem mem;
  for (const auto& o : options()) {
    MpiCommunicator c(MPI_COMM_WORLD, "h", o.opt);
    const int r = c.rank();
    c.enable_hierarchy(c.size() % 2 == 0 ? r / 2 : 0, c.size() % 2 == 0 ? r % 2 : r);
    for (bool nb : {false, true}) {
      all_reduce_case<float>(c, mem, o.name, nb);
      all_reduce_case<double>(c, mem, o.name, nb);
      all_reduce_case<int32_t>(c, mem, o.name, nb);
      all_reduce_case<int64_t>(c, mem, o.name, nb);
      all_reduce_case<Bf16>(c, mem, o.name, nb);
    }
  }
}

// parallel.fake_hosts through a TimeoutCommunicator, as the trainer configures its dp group,
// with ops of several sizes in flight at once and waited in different orders.
TEST(HierarchicalAllreduce, ThroughTimeoutCommunicatorInFlightTogether) {
  MpiCommOptions opt;
  opt.hier_min_bytes = 0;
  opt.hier_chunk_bytes = 100000;
  TimeoutCommunicator c(std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "dp", opt), 60);
  const AllreducePlan plan = configure_allreduce(c, "auto", 2);
  EXPECT_EQ(plan.hierarchical, c.size() == 4) << plan.note;
  const int p = c.size(), r = c.rank();
  std::vector<std::vector<float>> bufs;
  for (size_t n : {size_t(5), size_t(70001), size_t(1), size_t(262147)}) {
    std::vector<float> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<float>((r + 1) * static_cast<int>(i % 13 + 1));
    bufs.push_back(std::move(b));
  }
  std::vector<std::shared_ptr<Work>> works;
  for (auto& b : bufs) works.push_back(c.iall_reduce(b.data(), b.size(), DType::F32, ReduceOp::Sum));
  wait_all(works, r);
  for (auto& b : bufs) {
    size_t bad = 0;
    for (size_t i = 0; i < b.size(); ++i) bad += b[i] != static_cast<float>(p * (p + 1) / 2 * (i % 13 + 1));
    EXPECT_EQ(bad, 0u) << "n=" << b.size();
  }
}
