// What: what of the NCCL communicator runs without a GPU, under 1 and 2 real MPI ranks:
// the ncclUniqueId bootstrap over an MPI communicator (ncclGetUniqueId needs no GPU), the
// library version against the header, and construction failures that every rank must
// report instead of hanging (a CUDA device that does not exist; one rank failing alone).
// These tests run on any machine of a CUDA build; they never skip.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstring>

#include "core/hash.h"
#include "core/error.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"

using namespace mt::parallel;
using mt::core::Error;

namespace {
uint64_t fnv(const void* p, size_t n) { return mt::core::fnv1a64(p, n); }
// Same value on every rank of `c`?
bool same_everywhere(MPI_Comm c, uint64_t h) {
  uint64_t lo = h, hi = h;
  MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, c);
  MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, c);
  return lo == hi;
}
}  // namespace

TEST(NcclBootstrap, LibraryMatchesHeader) {
  EXPECT_EQ(nccl_library_version(), nccl_header_version());
  EXPECT_GE(nccl_header_version(), 21800);
}

TEST(NcclBootstrap, UniqueIdBroadcastFromRankZero) {
  MpiCommunicator world(MPI_COMM_WORLD, "world");
  const NcclUniqueIdBytes a = nccl_unique_id_over(world);
  const NcclUniqueIdBytes b = nccl_unique_id_over(world);
  size_t nonzero = 0;
  for (char ch : a) nonzero += ch != 0;
  EXPECT_GT(nonzero, 0u) << "an all-zero ncclUniqueId";
  EXPECT_TRUE(same_everywhere(world.raw(), fnv(a.data(), a.size()))) << "ranks got different ids";
  EXPECT_TRUE(same_everywhere(world.raw(), fnv(b.data(), b.size())));
  EXPECT_NE(std::memcmp(a.data(), b.data(), a.size()), 0) << "two calls gave the same id";
}

// Each group's rank 0 makes its own id: identical inside a group, different between groups.
TEST(NcclBootstrap, UniqueIdPerSplitGroup) {
  MpiCommunicator world(MPI_COMM_WORLD, "world");
  auto group = world.split(world.rank() % 2, world.rank());
  ASSERT_NE(group, nullptr);
  const NcclUniqueIdBytes id = nccl_unique_id_over(*group);
  auto* g = dynamic_cast<MpiCommunicator*>(group.get());
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(same_everywhere(g->raw(), fnv(id.data(), id.size())));
  std::vector<char> all(id.size() * world.size());
  MPI_Allgather(id.data(), static_cast<int>(id.size()), MPI_CHAR, all.data(), static_cast<int>(id.size()), MPI_CHAR,
                MPI_COMM_WORLD);
  if (world.size() >= 2) {
    EXPECT_NE(std::memcmp(all.data(), all.data() + id.size(), id.size()), 0);
  }
}

// No rank has a device 9999: every rank fails in cudaSetDevice and says so (with a GPU the
// runtime answers "invalid device ordinal", without one "insufficient driver" (35)).
TEST(NcclBootstrap, BadDeviceIsAnErrorOnEveryRank) {
  MpiCommunicator world(MPI_COMM_WORLD, "world");
  try {
    NcclCommunicator c(world, 9999, nullptr);
    ADD_FAILURE() << "an NCCL communicator on CUDA device 9999";
  } catch (const Error& e) {
    const std::string m = e.what();
    if (world.rank() == 0) std::fprintf(stderr, "the error, as users see it:\n%s\n", m.c_str());
    EXPECT_NE(m.find("cudaSetDevice(9999) for NCCL communicator 'world' (rank " + std::to_string(world.rank()) +
                     " of " + std::to_string(world.size()) + ", CUDA device 9999) failed"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("cudaError"), std::string::npos) << m;  // the runtime's own name for it
  }
  world.barrier();
}

// Only the last rank asks for a device that does not exist. Without a GPU every rank fails
// on its own; with one, the others learn of the failure from the agreement step. Either way
// every rank throws and none waits in ncclCommInitRank.
TEST(NcclBootstrap, OneRankFailingEndsConstructionEverywhere) {
  MpiCommunicator world(MPI_COMM_WORLD, "world");
  const int p = world.size(), r = world.rank();
  try {
    NcclCommunicator c(world, r == p - 1 ? 9999 : 0, nullptr);
    ADD_FAILURE() << "construction succeeded although rank " << p - 1 << " has no device 9999";
  } catch (const Error& e) {
    const std::string m = e.what();
    std::fprintf(stderr, "[rank %d] %s\n", r, m.c_str());
    const bool own = m.find("cudaSetDevice(") != std::string::npos;
    const bool peer = m.find("rank(s) of group 'world' failed to set up CUDA for an NCCL communicator; this rank (rank " +
                             std::to_string(r) + ") did not") != std::string::npos;
    EXPECT_TRUE(own || peer) << m;
    if (r == p - 1) {
      EXPECT_TRUE(own) << m;
    }
  }
  world.barrier();
}
