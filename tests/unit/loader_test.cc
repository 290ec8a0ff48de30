// The Loader on real HDF5 datasets, with its background thread: batches hold exactly the
// planned samples' tokens (documents padded with target -1); the stream does not depend on
// the prefetch depth or on restarts; several replicas' loaders together cover an epoch once;
// a loader restored from state() continues with exactly the batches of an uninterrupted one
// (dynamic schedule included); a split smaller than one global batch is a clear error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <random>

#include "core/error.h"
#include "model_util.h"
#include "io/dataset.h"
#include "io/loader.h"

namespace fs = std::filesystem;
using namespace mt::io;

namespace {

std::string make_dataset(const std::string& name, int docs, uint32_t seed) {
  const std::string dir = (fs::temp_directory_path() / ("mt-ld-" + name + "-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  DatasetWriterOptions o;
  o.dir = dir;
  o.vocab_size = 500;
  o.shard_tokens = 3000;
  o.chunk_tokens = 512;
  o.val_fraction = 0.3;
  DatasetWriter w(o);
  std::mt19937 g(seed);
  for (int d = 0; d < docs; ++d) {
    const double u = std::uniform_real_distribution<double>(0, 1)(g);
    std::vector<int32_t> doc(static_cast<size_t>(1 + u * u * u * 150));
    for (auto& t : doc) t = static_cast<int32_t>(g() % 500);
    w.add_document(doc.data(), static_cast<int64_t>(doc.size()));
  }
  w.finish();
  return dir;
}

LoaderOptions options(SampleMode mode, SchedulePolicy policy, int dp, int rank, int prefetch = 2) {
  LoaderOptions o;
  o.mode = mode;
  o.policy = policy;
  o.seq_len = 32;
  o.micro_batch = 3;
  o.batch_samples = 12;
  o.batch_tokens = 400;
  o.seed = 5;
  o.dp = dp;
  o.dp_rank = rank;
  o.prefetch = prefetch;
  o.cost = mt::test_gpt2_cost(2, 32, 500);
  return o;
}

// A batch as plain data, for comparisons.
struct Flat {
  std::vector<uint64_t> ids;
  std::vector<int32_t> inputs, targets, shapes;
  int64_t global_targets = 0;
  bool operator==(const Flat& o) const {
    return ids == o.ids && inputs == o.inputs && targets == o.targets && shapes == o.shapes &&
           global_targets == o.global_targets;
  }
};
Flat flat(const Batch& b) {
  Flat f;
  for (const auto& s : b.samples) f.ids.push_back(s.id * 1000 + s.epoch);
  for (int m = 0; m < b.n_micro; ++m) {
    const auto& mb = b.micro[static_cast<size_t>(m)];
    f.shapes.insert(f.shapes.end(), {mb.B, mb.T});
    const size_t n = static_cast<size_t>(mb.B) * static_cast<size_t>(mb.T);  // the micro-batch proper
    f.inputs.insert(f.inputs.end(), mb.inputs.begin(), mb.inputs.begin() + static_cast<std::ptrdiff_t>(n));
    f.targets.insert(f.targets.end(), mb.targets.begin(), mb.targets.begin() + static_cast<std::ptrdiff_t>(n));
  }
  f.global_targets = b.global_targets;
  return f;
}

// Deterministic stand-in for the trainer's all-gathered measurements.
void fake_report(Loader& l, int64_t s, int dp) {
  std::vector<double> cost, ms;
  for (int r = 0; r < dp; ++r) {
    cost.push_back(10.0 + static_cast<double>((s * 7 + r * 3) % 5));
    ms.push_back(cost.back() * (r == 1 ? 2.0 : 1.0) + static_cast<double>(s % 3));
  }
  l.report(s, cost, ms);
}

TEST(Loader, BatchesHoldThePlannedSamplesTokens) {
  const std::string dir = make_dataset("tok", 400, 1);
  for (SampleMode mode : {SampleMode::Concat, SampleMode::Documents}) {
    Hdf5Source src(dir, 500, 32, mode);
    Dataset ds = Dataset::open(dir);
    Loader l(src, options(mode, SchedulePolicy::Balanced, 2, 1));
    for (int64_t s = 0; s < 6; ++s) {
      double wait = -1;
      const Batch& b = l.next(s, &wait);
      EXPECT_GE(wait, 0.0);
      ASSERT_EQ(b.step, s);
      size_t row = 0;
      int64_t targets = 0;
      for (int m = 0; m < b.n_micro; ++m) {
        const auto& mb = b.micro[static_cast<size_t>(m)];
        for (int r = 0; r < mb.B; ++r, ++row) {
          const SampleRef& ref = b.samples[row];
          std::vector<int32_t> want(static_cast<size_t>(ref.tokens));
          const int64_t start = mode == SampleMode::Concat ? static_cast<int64_t>(ref.id) * 32
                                                            : ds.doc_starts("train")[ref.id];
          ds.read_tokens("train", start, ref.tokens, want.data());
          for (int t = 0; t < mb.T; ++t) {
            const int32_t in = mb.inputs[static_cast<size_t>(r * mb.T + t)];
            const int32_t tg = mb.targets[static_cast<size_t>(r * mb.T + t)];
            if (t < ref.tokens - 1) {
              ASSERT_EQ(in, want[static_cast<size_t>(t)]);
              ASSERT_EQ(tg, want[static_cast<size_t>(t) + 1]);
              ++targets;
            } else {
              ASSERT_EQ(tg, -1) << "padding carries no target";
            }
          }
        }
      }
      EXPECT_EQ(row, b.samples.size());
      EXPECT_EQ(targets, b.targets);
      if (mode == SampleMode::Concat) {
        EXPECT_EQ(b.global_targets, 12 * 32);
      } else {
        EXPECT_LE(b.global_targets, 400);
      }
    }
  }
  fs::remove_all(dir);
}

TEST(Loader, StreamIndependentOfPrefetchAndRestarts) {
  const std::string dir = make_dataset("pf", 400, 2);
  Hdf5Source src(dir, 500, 32, SampleMode::Documents);
  Loader a(src, options(SampleMode::Documents, SchedulePolicy::Dynamic, 2, 0, 1));
  Loader b(src, options(SampleMode::Documents, SchedulePolicy::Dynamic, 2, 0, 1));
  Loader c(src, options(SampleMode::Documents, SchedulePolicy::Balanced, 2, 0, 4));
  Loader d(src, options(SampleMode::Documents, SchedulePolicy::Balanced, 2, 0, 1));
  std::vector<Flat> fc;
  for (int64_t s = 0; s < 12; ++s) {
    EXPECT_EQ(flat(a.next(s)), flat(b.next(s))) << "step " << s;
    fake_report(a, s, 2);
    fake_report(b, s, 2);
    fc.push_back(flat(c.next(s)));
  }
  // a restart at an earlier or later step reproduces those steps (documents: replayed)
  for (int64_t s : {7, 3, 4, 11}) EXPECT_EQ(flat(d.next(s)), fc[static_cast<size_t>(s)]) << "step " << s;
  fs::remove_all(dir);
}

TEST(Loader, ReplicasTogetherCoverAnEpochOnce) {
  const std::string dir = make_dataset("cov", 300, 3);
  for (SampleMode mode : {SampleMode::Concat, SampleMode::Documents, SampleMode::Packed}) {
    Hdf5Source src(dir, 500, 32, mode);
    const uint64_t n = src.epoch_samples(Split::Train);
    for (SchedulePolicy p : {SchedulePolicy::Static, SchedulePolicy::RoundRobin, SchedulePolicy::Dynamic}) {
      const int dp = 3;
      std::vector<std::unique_ptr<Loader>> ls;
      for (int r = 0; r < dp; ++r) ls.push_back(std::make_unique<Loader>(src, options(mode, p, dp, r)));
      std::map<uint64_t, int> seen;
      bool done = false;
      for (int64_t s = 0; !done; ++s) {
        for (auto& l : ls) {
          const Batch& b = l->next(s);
          for (const auto& ref : b.samples) {
            if (ref.epoch == 0) ++seen[ref.id];
            else done = true;
          }
          fake_report(*l, s, dp);
        }
      }
      const auto* len = src.sample_tokens(Split::Train);
      for (uint64_t id = 0; id < n; ++id) {
        const int want = len == nullptr || (*len)[id] >= 2 ? 1 : 0;
        ASSERT_EQ(seen.count(id) ? seen[id] : 0, want) << "sample " << id << " policy " << policy_name(p);
      }
    }
  }
  fs::remove_all(dir);
}

TEST(Loader, RestoredStateContinuesTheExactStream) {
  const std::string dir = make_dataset("res", 400, 4);
  for (SampleMode mode : {SampleMode::Concat, SampleMode::Documents, SampleMode::Packed}) {
    Hdf5Source src(dir, 500, 32, mode);
    for (SchedulePolicy p : {SchedulePolicy::Balanced, SchedulePolicy::Dynamic}) {
      Loader full(src, options(mode, p, 2, 1));
      std::string saved;
      std::vector<Flat> tail;
      for (int64_t s = 0; s < 15; ++s) {
        const Flat f = flat(full.next(s));
        if (s >= 6) tail.push_back(f);
        fake_report(full, s, 2);
        if (s == 5) saved = full.state();  // a checkpoint after 6 steps
      }
      Loader resumed(src, options(mode, p, 2, 1));
      resumed.restore(saved, 6);
      for (int64_t s = 6; s < 15; ++s) {
        ASSERT_EQ(flat(resumed.next(s)), tail[static_cast<size_t>(s - 6)]) << "step " << s << " " << policy_name(p);
        fake_report(resumed, s, 2);
      }
      EXPECT_EQ(resumed.estimates(), full.estimates());
      // the dynamic weights really moved away from an even split
      if (p == SchedulePolicy::Dynamic) {
        EXPECT_GT(full.estimates()[0], 1.2 * full.estimates()[1]);
      }
    }
  }
  fs::remove_all(dir);
}

TEST(Loader, EvalBatchesSplitTheEvalSetStatically) {
  const std::string dir = make_dataset("ev", 400, 6);
  Hdf5Source src(dir, 500, 32, SampleMode::Documents);
  Loader one(src, options(SampleMode::Documents, SchedulePolicy::Dynamic, 1, 0));
  Loader r0(src, options(SampleMode::Documents, SchedulePolicy::Dynamic, 2, 0));
  Loader r1(src, options(SampleMode::Documents, SchedulePolicy::Dynamic, 2, 1));
  Batch a, b, c;
  for (int64_t k = 0; k < 3; ++k) {
    one.eval_batch(k, a);
    r0.eval_batch(k, b);
    r1.eval_batch(k, c);
    std::multiset<uint64_t> all, parts;
    for (const auto& s : a.samples) all.insert(s.id);
    for (const auto& s : b.samples) parts.insert(s.id);
    for (const auto& s : c.samples) parts.insert(s.id);
    EXPECT_EQ(all, parts);
    EXPECT_EQ(a.global_targets, b.global_targets);
  }
  fs::remove_all(dir);
}

TEST(Loader, SplitSmallerThanOneGlobalBatchIsAnError) {
  const std::string dir = make_dataset("small", 40, 7);
  auto error_of = [&](SampleMode mode, int64_t batch) {
    try {
      Hdf5Source src(dir, 500, 32, mode);
      LoaderOptions o = options(mode, SchedulePolicy::Static, 1, 0);
      o.batch_samples = batch;
      o.batch_tokens = batch;
      Loader l(src, o, dir);
    } catch (const mt::core::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string a = error_of(SampleMode::Concat, 100000);
  EXPECT_NE(a.find("fewer than one global batch of train.batch_size = 100000"), std::string::npos) << a;
  EXPECT_NE(a.find(dir), std::string::npos) << a;
  const std::string b = error_of(SampleMode::Documents, 100000);
  EXPECT_NE(b.find("fewer than one global batch of data.batch_tokens = 100000"), std::string::npos) << b;
  EXPECT_EQ(error_of(SampleMode::Concat, 4), "");
  fs::remove_all(dir);
}

}  // namespace
