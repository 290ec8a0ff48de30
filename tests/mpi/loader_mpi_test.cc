// The loader across real ranks (np 2 and 4, one dp replica per rank): for every mode
// (concat, documents, packed) and every policy, the samples the ranks received during one
// epoch, gathered on rank 0, are every sample exactly once; every rank agrees on each step's
// loss normaliser; the dynamic schedule's measurements travel by a real all-gather (rank r
// reports r + 1 times slower) and shift the work towards the faster ranks.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "model_util.h"
#include "io/dataset.h"
#include "io/loader.h"

namespace fs = std::filesystem;
using namespace mt::io;

namespace {

std::string shared_dataset() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  char dir[256] = {0};
  if (rank == 0) {
    const std::string d = (fs::temp_directory_path() / ("mt-ldmpi-" + std::to_string(::getpid()))).string();
    fs::remove_all(d);
    DatasetWriterOptions o;
    o.dir = d;
    o.vocab_size = 300;
    o.shard_tokens = 2000;
    o.val_fraction = 0.2;
    DatasetWriter w(o);
    std::mt19937 g(17);
    for (int k = 0; k < 500; ++k) {
      const double u = std::uniform_real_distribution<double>(0, 1)(g);
      std::vector<int32_t> doc(static_cast<size_t>(2 + u * u * u * 120));
      for (auto& t : doc) t = static_cast<int32_t>(g() % 300);
      w.add_document(doc.data(), static_cast<int64_t>(doc.size()));
    }
    w.finish();
    std::strncpy(dir, d.c_str(), sizeof(dir) - 1);
  }
  MPI_Bcast(dir, sizeof(dir), MPI_CHAR, 0, MPI_COMM_WORLD);
  return dir;
}

TEST(LoaderMpi, RanksTogetherCoverAnEpochOnceUnderEveryPolicy) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const std::string dir = shared_dataset();
  for (SampleMode mode : {SampleMode::Concat, SampleMode::Documents, SampleMode::Packed}) {
    Hdf5Source src(dir, 300, 24, mode);
    for (SchedulePolicy p : {SchedulePolicy::Static, SchedulePolicy::RoundRobin, SchedulePolicy::Balanced,
                             SchedulePolicy::Dynamic}) {
      LoaderOptions o;
      o.mode = mode;
      o.policy = p;
      o.seq_len = 24;
      o.micro_batch = 2;
      o.batch_samples = 16;
      o.batch_tokens = 300;
      o.seed = 3;
      o.dp = size;
      o.dp_rank = rank;
      o.cost = mt::test_gpt2_cost(2, 32, 300);
      Loader l(src, o);
      std::vector<uint64_t> mine;  // ids of epoch 0 this rank received
      int64_t first_share = -1, last_share = -1;
      bool disagree = false;
      for (int64_t s = 0;; ++s) {
        const Batch& b = l.next(s);
        for (const auto& r : b.samples)
          if (r.epoch == 0) mine.push_back(r.id);
        // every rank must use the same loss normaliser
        int64_t gt[2] = {b.global_targets, -b.global_targets};
        MPI_Allreduce(MPI_IN_PLACE, gt, 2, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
        disagree |= gt[0] != -gt[1];
        // measurements as the trainer exchanges them: rank r runs r + 1 times slower
        const double m[2] = {b.cost, b.cost * (rank + 1)};
        std::vector<double> all(2 * static_cast<size_t>(size));
        MPI_Allgather(m, 2, MPI_DOUBLE, all.data(), 2, MPI_DOUBLE, MPI_COMM_WORLD);
        std::vector<double> cost, ms;
        for (int r = 0; r < size; ++r) cost.push_back(all[2 * r]), ms.push_back(all[2 * r + 1]);
        l.report(s, cost, ms);
        if (s == 0) first_share = static_cast<int64_t>(b.samples.size());
        last_share = static_cast<int64_t>(b.samples.size());
        if (b.after.epoch > 0) break;  // the same on every rank: the planner is global
      }
      EXPECT_FALSE(disagree);
      // gather every rank's ids on rank 0
      int n = static_cast<int>(mine.size());
      std::vector<int> counts(static_cast<size_t>(size)), displs(static_cast<size_t>(size));
      MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
      int total = 0;
      for (int r = 0; r < size; ++r) displs[static_cast<size_t>(r)] = total, total += counts[static_cast<size_t>(r)];
      std::vector<uint64_t> ids(static_cast<size_t>(std::max(total, 1)));
      MPI_Gatherv(mine.data(), n, MPI_UINT64_T, ids.data(), counts.data(), displs.data(), MPI_UINT64_T, 0,
                  MPI_COMM_WORLD);
      if (rank == 0) {
        std::map<uint64_t, int> seen;
        for (int i = 0; i < total; ++i) ++seen[ids[static_cast<size_t>(i)]];
        const auto* len = src.sample_tokens(Split::Train);
        const uint64_t nsamples = src.epoch_samples(Split::Train);
        for (uint64_t id = 0; id < nsamples; ++id) {
          const int want = len == nullptr || (*len)[id] >= 2 ? 1 : 0;
          EXPECT_EQ(seen.count(id) ? seen[id] : 0, want) << "sample " << id << ", " << policy_name(p);
        }
        EXPECT_EQ(static_cast<uint64_t>(seen.size()), nsamples);
      }
      // dynamic, concat: the slowest rank ends with fewer samples than it started with
      if (p == SchedulePolicy::Dynamic && mode == SampleMode::Concat && rank == size - 1) {
        EXPECT_LT(last_share, first_share);
      }
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) fs::remove_all(dir);
}

}  // namespace
