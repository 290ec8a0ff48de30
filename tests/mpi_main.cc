// What: the GoogleTest main of the multi-rank tests (tests/mpi/*_test.cc), run by ctest under
// `mpirun -np 2` and `-np 4`. Every rank runs every test; rank 0 prints the usual report,
// the other ranks print only their failures, prefixed with their rank.
// Why: a multi-rank test must neither pass when one rank failed nor leave ranks hanging:
//  - after EACH test, all ranks exchange their verdict (MPI_Allgather on MPI_COMM_WORLD); if
//    any rank failed, rank 0 names the test and the failed ranks and calls
//    MPI_Abort(MPI_COMM_WORLD, 1), so no rank goes on into a later test's collectives with a
//    peer that is out of step;
//  - at the end, the overall result is reduced the same way; the process exits 0 only if
//    every rank passed every test;
//  - exceptions escaping gtest (or MPI set-up) end the job with MPI_Abort too.
// Limits (write tests accordingly): a rank that leaves a test body early (failed ASSERT_*,
// exception) while its peers block in a collective of that same test still hangs them.
// Tests should issue all their collectives first and check afterwards, or use EXPECT_*
// (which does not return); the ctest TIMEOUT is the final guard.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "parallel/mpi_env.h"

namespace {

// Prints every failed assertion of this rank on stderr with the rank, at once.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestStart(const ::testing::TestInfo& info) override {
    test_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure in %s\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), test_.c_str(), r.message());
    std::fflush(stderr);
  }

 private:
  int rank_;
  std::string test_;
};

// After each test: all ranks agree on the verdict; any failure ends the job.
class CollectiveVerdict : public ::testing::EmptyTestEventListener {
 public:
  CollectiveVerdict(int rank, int size) : rank_(rank), size_(size) {}
  void OnTestEnd(const ::testing::TestInfo& info) override {
    int failed = info.result()->Failed() ? 1 : 0;
    std::vector<int> all(static_cast<size_t>(size_), 0);
    MPI_Allgather(&failed, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
    std::string ranks;
    for (int r = 0; r < size_; ++r)
      if (all[r]) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    if (ranks.empty()) return;
    if (rank_ == 0) {
      std::fprintf(stderr,
                   "[mpi_main] test %s.%s FAILED on rank(s) %s of %d; aborting the job (MPI_Abort) so that no "
                   "rank waits in a later collective\n",
                   info.test_suite_name(), info.name(), ranks.c_str(), size_);
      std::fflush(stdout);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Barrier(MPI_COMM_WORLD);  // never completes: rank 0 aborts the job
  }

 private:
  int rank_, size_;
};

int run(int* argc, char*** argv) {
  mt::parallel::MpiEnv env(argc, argv);
  ::testing::InitGoogleTest(argc, *argv);
  const int rank = env.rank(), size = env.size();

  // Shuffling must give every rank the same order: share rank 0's seed.
  if (GTEST_FLAG_GET(shuffle)) {
    int seed = GTEST_FLAG_GET(random_seed);
    if (seed == 0) seed = static_cast<int>(MPI_Wtime() * 1000) % 99999 + 1;
    MPI_Bcast(&seed, 1, MPI_INT, 0, MPI_COMM_WORLD);
    GTEST_FLAG_SET(random_seed, seed);
  }

  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new RankFailurePrinter(rank));
  listeners.Append(new CollectiveVerdict(rank, size));

  const int rc = RUN_ALL_TESTS();

  int failed = rc != 0 ? 1 : 0;
  std::vector<int> all(static_cast<size_t>(size), 0);
  MPI_Allgather(&failed, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::string ranks;
  for (int r = 0; r < size; ++r)
    if (all[r]) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  if (!ranks.empty()) {
    if (rank == 0) {
      std::fprintf(stderr, "[mpi_main] FAILED on rank(s) %s of %d\n", ranks.c_str(), size);
      mt::parallel::MpiEnv::abort_job(1);
    }
    MPI_Barrier(MPI_COMM_WORLD);  // never completes: rank 0 aborts the job after printing
    mt::parallel::MpiEnv::abort_job(1);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[mpi_main] exception outside the tests: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "[mpi_main] unknown exception outside the tests\n");
  }
  mt::parallel::MpiEnv::abort_job(1);
}
