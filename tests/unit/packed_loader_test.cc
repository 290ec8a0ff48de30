// data.mode packed (and data.eod_token) on real HDF5 datasets, with the loader's thread:
//  - a document sample is the stored document, plus the eod token unless it already ends
//    with it, truncated to seq_len + 1 tokens (documents and packed modes alike);
//  - packed rows hold exactly the documents-mode samples of the same stream, in stream order,
//    none lost, none split, each in its own (input, target) pairs; doc ids 0, 1, ... per row,
//    padding (target -1, an id of its own) only at a row's end; first fit in sequence (the
//    first document of a row did not fit the rest of the row before); train.batch_size rows
//    per step;
//  - dp replicas together get exactly the rows of one replica under every policy;
//  - a loader restored from state() mid-epoch continues with exactly the same stream;
//  - global_positions (the pad fraction's denominator) is the sum of every replica's positions.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "core/error.h"
#include "model_util.h"
#include "io/dataset.h"
#include "io/loader.h"

namespace fs = std::filesystem;
using namespace mt::io;

namespace {

constexpr int kT = 32, kVocab = 500, kEod = 499;

// Documents of skewed lengths (1..150 tokens); every 5th ends with kEod already.
std::string make_dataset(const std::string& name, int docs, uint32_t seed) {
  const std::string dir = (fs::temp_directory_path() / ("mt-pk-" + name + "-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  DatasetWriterOptions o;
  o.dir = dir;
  o.vocab_size = kVocab;
  o.shard_tokens = 3000;
  o.chunk_tokens = 512;
  o.val_fraction = 0.3;
  DatasetWriter w(o);
  std::mt19937 g(seed);
  for (int d = 0; d < docs; ++d) {
    const double u = std::uniform_real_distribution<double>(0, 1)(g);
    std::vector<int32_t> doc(static_cast<size_t>(1 + u * u * u * 150));
    for (auto& t : doc) t = static_cast<int32_t>(g() % (kVocab - 1));  // (kEod only where placed)
    if (d % 5 == 0) doc.back() = kEod;
    w.add_document(doc.data(), static_cast<int64_t>(doc.size()));
  }
  w.finish();
  return dir;
}

LoaderOptions options(SampleMode mode, SchedulePolicy policy, int dp, int rank, int eod = kEod) {
  LoaderOptions o;
  o.mode = mode;
  o.policy = policy;
  o.seq_len = kT;
  o.micro_batch = 3;
  o.batch_samples = 12;
  o.batch_tokens = 12 * kT;
  o.seed = 5;
  o.dp = dp;
  o.dp_rank = rank;
  o.eod_token = eod;
  o.cost = mt::test_gpt2_cost(2, kT, kVocab);
  return o;
}

// The sample of document d by the rule: stored tokens, the eod appended unless the document
// ends with it, the first T + 1 tokens.
std::vector<int32_t> expected_sample(const Dataset& ds, uint64_t d, int eod) {
  const auto& st = ds.doc_starts("train");
  std::vector<int32_t> t(static_cast<size_t>(st[d + 1] - st[d]));
  ds.read_tokens("train", st[d], static_cast<int64_t>(t.size()), t.data());
  if (eod >= 0 && (t.empty() || t.back() != eod)) t.push_back(eod);
  if (t.size() > static_cast<size_t>(kT) + 1) t.resize(static_cast<size_t>(kT) + 1);
  return t;
}

// (input, target) pairs of a row segment.
using Pairs = std::vector<std::pair<int32_t, int32_t>>;
Pairs pairs_of(const MicroBatch& mb, int r, int from, int to) {
  Pairs p;
  for (int t = from; t < to; ++t) {
    const size_t i = static_cast<size_t>(r * mb.T + t);
    p.emplace_back(mb.inputs[i], mb.targets[i]);
  }
  return p;
}
Pairs pairs_of(const std::vector<int32_t>& sample) {
  Pairs p;
  for (size_t i = 0; i + 1 < sample.size(); ++i) p.emplace_back(sample[i], sample[i + 1]);
  return p;
}

// One packed row as read back: documents as (id, epoch) with their pairs.
struct Row {
  std::vector<std::pair<uint64_t, uint64_t>> docs;
  std::vector<Pairs> pairs;
  int used = 0;
};

// Every row of a packed batch, checking its layout: doc ids 0, 1, ... over contiguous
// segments whose lengths are the samples' targets, then padding (target -1, input 0, the id
// after the last document) up to T.
std::vector<Row> rows_of(const Batch& b) {
  std::vector<Row> rows;
  size_t next = 0;
  for (int m = 0; m < b.n_micro; ++m) {
    const MicroBatch& mb = b.micro[static_cast<size_t>(m)];
    EXPECT_EQ(mb.T, kT);
    EXPECT_EQ(mb.doc_ids.size(), static_cast<size_t>(mb.B) * static_cast<size_t>(mb.T));
    for (int r = 0; r < mb.B; ++r) {
      Row row;
      int at = 0;
      int32_t id = 0;
      while (at < mb.T && mb.targets[static_cast<size_t>(r * mb.T + at)] >= 0) {
        const SampleRef& ref = b.samples.at(next++);
        const int len = ref.tokens - 1;
        for (int t = at; t < at + len; ++t) {
          EXPECT_EQ(mb.doc_ids[static_cast<size_t>(r * mb.T + t)], id) << "row " << r << " position " << t;
          EXPECT_GE(mb.targets[static_cast<size_t>(r * mb.T + t)], 0) << "a document's positions all have targets";
        }
        row.docs.emplace_back(ref.id, ref.epoch);
        row.pairs.push_back(pairs_of(mb, r, at, at + len));
        at += len, ++id;
      }
      EXPECT_GT(id, 0) << "a row holds at least one document";
      row.used = at;
      for (int t = at; t < mb.T; ++t) {  // padding only at the end
        const size_t i = static_cast<size_t>(r * mb.T + t);
        EXPECT_EQ(mb.targets[i], -1);
        EXPECT_EQ(mb.inputs[i], 0);
        EXPECT_EQ(mb.doc_ids[i], id) << "padding has an id of its own";
      }
      rows.push_back(std::move(row));
    }
  }
  EXPECT_EQ(next, b.samples.size());
  return rows;
}

TEST(Packed, DocumentSamplesEndWithTheEodToken) {
  const std::string dir = make_dataset("eod", 200, 1);
  Dataset ds = Dataset::open(dir);
  for (int eod : {-1, kEod}) {
    Hdf5Source src(dir, kVocab, kT, SampleMode::Documents, true, 0, 1, eod);
    const auto& len = *src.sample_tokens(Split::Train);
    int appended = 0;
    for (uint64_t d = 0; d < len.size(); ++d) {
      const auto want = expected_sample(ds, d, eod);
      ASSERT_EQ(len[d], static_cast<int32_t>(want.size())) << "document " << d;
      std::vector<int32_t> got(want.size());
      src.sample(Split::Train, d, kT, got.data());
      ASSERT_EQ(got, want) << "document " << d << " eod " << eod;
      const int64_t stored = ds.doc_starts("train")[d + 1] - ds.doc_starts("train")[d];
      appended += static_cast<int64_t>(want.size()) > stored;
    }
    if (eod >= 0) EXPECT_GT(appended, 0);
    else EXPECT_EQ(appended, 0);
  }
  fs::remove_all(dir);
}

TEST(Packed, RowsHoldTheDocumentsModeSamplesInStreamOrder) {
  const std::string dir = make_dataset("rows", 400, 2);
  Dataset ds = Dataset::open(dir);
  Hdf5Source docs_src(dir, kVocab, kT, SampleMode::Documents, true, 0, 1, kEod);
  Hdf5Source packed_src(dir, kVocab, kT, SampleMode::Packed, true, 0, 1, kEod);
  // the documents-mode stream (the planner's order) and each sample as documents mode rows it
  PlannerOptions po;
  po.mode = SampleMode::Documents;
  po.num_samples = docs_src.epoch_samples(Split::Train);
  po.sample_tokens = docs_src.sample_tokens(Split::Train);
  po.seq_len = kT;
  po.batch_tokens = 1000;
  po.seed = 5;
  Planner stream(po);
  std::vector<std::pair<uint64_t, uint64_t>> order;
  StepPlan plan;
  while (order.size() < 3000) {
    stream.plan(plan);
    for (const auto& r : plan.samples) order.emplace_back(r.id, r.epoch);
  }
  std::map<uint64_t, Pairs> doc_rows;  // documents mode's (input, target) pairs of each document
  Loader dl(docs_src, options(SampleMode::Documents, SchedulePolicy::Static, 1, 0));
  for (int64_t s = 0; doc_rows.size() < docs_src.epoch_samples(Split::Train) && s < 200; ++s) {
    const Batch& b = dl.next(s);
    size_t row = 0;
    for (int m = 0; m < b.n_micro; ++m) {
      const MicroBatch& mb = b.micro[static_cast<size_t>(m)];
      for (int r = 0; r < mb.B; ++r, ++row) doc_rows[b.samples[row].id] = pairs_of(mb, r, 0, b.samples[row].tokens - 1);
    }
  }
  Loader pl(packed_src, options(SampleMode::Packed, SchedulePolicy::Static, 1, 0));
  size_t k = 0;  // position in the stream
  int prev_used = -1;
  for (int64_t s = 0; s < 40; ++s) {
    const Batch& b = pl.next(s);
    const auto rows = rows_of(b);
    ASSERT_EQ(rows.size(), 12u) << "train.batch_size rows per step";
    int64_t targets = 0;
    for (const Row& row : rows) {
      for (size_t j = 0; j < row.docs.size(); ++j, ++k) {
        ASSERT_EQ(row.docs[j], order[k]) << "step " << s << ": not the stream's next document";
        const uint64_t d = row.docs[j].first;
        ASSERT_EQ(row.pairs[j], pairs_of(expected_sample(ds, d, kEod))) << "document " << d;
        ASSERT_EQ(row.pairs[j], doc_rows.at(d)) << "document " << d << " differs from documents mode";
        targets += static_cast<int64_t>(row.pairs[j].size());
      }
      // first fit in sequence: this row's first document did not fit the previous row
      if (prev_used >= 0) {
        EXPECT_GT(prev_used + static_cast<int>(row.pairs[0].size()), kT);
      }
      prev_used = row.used;
    }
    EXPECT_EQ(targets, b.global_targets);
    EXPECT_EQ(b.targets, b.global_targets);
    EXPECT_EQ(b.global_positions, 12 * kT);
    EXPECT_EQ(b.positions, 12 * kT);
  }
  EXPECT_GT(k, docs_src.epoch_samples(Split::Train)) << "the test crossed an epoch boundary";
  fs::remove_all(dir);
}

TEST(Packed, ReplicasTogetherGetTheRowsOfOne) {
  const std::string dir = make_dataset("dp", 300, 3);
  Hdf5Source src(dir, kVocab, kT, SampleMode::Packed, true, 0, 1, kEod);
  Loader one(src, options(SampleMode::Packed, SchedulePolicy::Static, 1, 0));
  for (SchedulePolicy p : {SchedulePolicy::Static, SchedulePolicy::RoundRobin, SchedulePolicy::Balanced,
                           SchedulePolicy::Dynamic}) {
    const int dp = 3;
    std::vector<std::unique_ptr<Loader>> ls;
    for (int r = 0; r < dp; ++r) ls.push_back(std::make_unique<Loader>(src, options(SampleMode::Packed, p, dp, r)));
    for (int64_t s = 0; s < 10; ++s) {
      std::multiset<std::vector<std::pair<uint64_t, uint64_t>>> want, got;
      const Batch& ob = one.next(s);
      const int64_t global_targets = ob.global_targets;
      for (const Row& row : rows_of(ob)) want.insert(row.docs);
      int64_t targets = 0;
      for (auto& l : ls) {
        const Batch& b = l->next(s);
        EXPECT_EQ(b.global_targets, global_targets);
        EXPECT_EQ(b.global_positions, 12 * kT);
        targets += b.targets;
        for (const Row& row : rows_of(b)) got.insert(row.docs);
        std::vector<double> cost, ms;
        for (int r = 0; r < dp; ++r) cost.push_back(10.0 + r), ms.push_back(10.0 * (r + 1));
        l->report(s, cost, ms);
      }
      EXPECT_EQ(got, want) << "step " << s << " policy " << policy_name(p);
      EXPECT_EQ(targets, global_targets);
    }
  }
  fs::remove_all(dir);
}

// A batch as plain data (ids, tokens, targets, doc ids), for comparisons.
std::vector<int64_t> flat(const Batch& b) {
  std::vector<int64_t> f{b.step, b.global_targets, b.n_micro};
  for (const auto& s : b.samples) f.insert(f.end(), {static_cast<int64_t>(s.id), static_cast<int64_t>(s.epoch)});
  for (int m = 0; m < b.n_micro; ++m) {
    const auto& mb = b.micro[static_cast<size_t>(m)];
    f.insert(f.end(), {mb.B, mb.T});
    const size_t n = static_cast<size_t>(mb.B) * static_cast<size_t>(mb.T);
    for (size_t i = 0; i < n; ++i) f.insert(f.end(), {mb.inputs[i], mb.targets[i], mb.doc_ids[i]});
  }
  return f;
}

TEST(Packed, RestoredStateContinuesTheExactStream) {
  const std::string dir = make_dataset("res", 300, 4);
  Hdf5Source src(dir, kVocab, kT, SampleMode::Packed, true, 0, 1, kEod);
  const int64_t per_epoch = static_cast<int64_t>(src.epoch_samples(Split::Train));
  for (SchedulePolicy p : {SchedulePolicy::Balanced, SchedulePolicy::Dynamic}) {
    Loader full(src, options(SampleMode::Packed, p, 2, 1));
    std::string saved;
    std::vector<std::vector<int64_t>> tail;
    bool mid_epoch = false;
    for (int64_t s = 0; s < 30; ++s) {
      const Batch& b = full.next(s);
      if (s >= 11) tail.push_back(flat(b));
      if (s == 10) mid_epoch = b.after.pos > 0 && static_cast<int64_t>(b.after.pos) < per_epoch;
      std::vector<double> cost{b.cost, b.cost * 0.7}, ms{5.0 + static_cast<double>(s % 3), 9.0};
      full.report(s, cost, ms);
      if (s == 10) saved = full.state();  // a checkpoint after 11 steps
    }
    EXPECT_TRUE(mid_epoch);
    Loader resumed(src, options(SampleMode::Packed, p, 2, 1));
    resumed.restore(saved, 11);
    for (int64_t s = 11; s < 30; ++s) {
      const Batch& b = resumed.next(s);
      ASSERT_EQ(flat(b), tail[static_cast<size_t>(s - 11)]) << "step " << s << " " << policy_name(p);
      std::vector<double> cost{b.cost, b.cost * 0.7}, ms{5.0 + static_cast<double>(s % 3), 9.0};
      resumed.report(s, cost, ms);
    }
    // another eod token is another stream: the position is recomputed, not taken over
    Loader other(src, options(SampleMode::Packed, p, 2, 1, 7));
    other.restore(saved, 11);
    EXPECT_EQ(other.next(11).step, 11);
  }
  fs::remove_all(dir);
}

TEST(Packed, GlobalPositionsCountEveryReplicasPadding) {
  const std::string dir = make_dataset("pad", 300, 5);
  for (SampleMode mode : {SampleMode::Documents, SampleMode::Packed}) {
    Hdf5Source src(dir, kVocab, kT, mode, true, 0, 1, kEod);
    for (SchedulePolicy p : {SchedulePolicy::Static, SchedulePolicy::Balanced}) {
      Loader a(src, options(mode, p, 2, 0)), b(src, options(mode, p, 2, 1));
      for (int64_t s = 0; s < 8; ++s) {
        const Batch& x = a.next(s);
        const Batch& y = b.next(s);
        EXPECT_EQ(x.global_positions, y.global_positions);
        EXPECT_EQ(x.global_positions, x.positions + y.positions) << mode_name(mode) << " step " << s;
        EXPECT_GT(x.global_positions, x.global_targets);  // skewed lengths: some padding
      }
    }
  }
  fs::remove_all(dir);
}

TEST(Packed, SplitSmallerThanOneBatchOfRowsIsAnError) {
  const std::string dir = make_dataset("small", 40, 6);
  Hdf5Source src(dir, kVocab, kT, SampleMode::Packed, true, 0, 1, kEod);
  LoaderOptions o = options(SampleMode::Packed, SchedulePolicy::Static, 1, 0);
  o.batch_samples = 100000;
  try {
    Loader l(src, o, dir);
    FAIL() << "no error";
  } catch (const mt::core::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("fewer than one global batch of train.batch_size = 100000 rows"), std::string::npos) << m;
    EXPECT_NE(m.find(dir), std::string::npos) << m;
  }
  fs::remove_all(dir);
}

}  // namespace
