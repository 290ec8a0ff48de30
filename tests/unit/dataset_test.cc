// HDF5 token datasets: written shards read back exactly (across shard boundaries, both
// dtypes); every bad input is a clear error naming the file; concat samples are windows of
// the split, deterministic, and visit every window once per epoch.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "io/dataset.h"
#include "io/metrics.h"

namespace fs = std::filesystem;
using namespace mt::io;

namespace {

struct Corpus {
  std::string dir;
  std::vector<std::vector<int32_t>> docs;
};

Corpus make(const std::string& name, const std::string& dtype, int vocab, double val = 0.2) {
  Corpus c;
  c.dir = (fs::temp_directory_path() / ("mt-ds-" + name + "-" + std::to_string(::getpid()))).string();
  fs::remove_all(c.dir);
  DatasetWriterOptions o;
  o.dir = c.dir;
  o.dtype = dtype;
  o.vocab_size = vocab;
  o.shard_tokens = 1000;  // many shards
  o.val_fraction = val;
  DatasetWriter w(o);
  std::mt19937 g(7);
  for (int d = 0; d < 60; ++d) {
    std::vector<int32_t> doc(50 + g() % 200);
    for (auto& t : doc) t = static_cast<int32_t>(g() % vocab);
    w.add_document(doc.data(), static_cast<int64_t>(doc.size()));
    c.docs.push_back(doc);
  }
  w.finish();
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const mt::core::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Dataset, RoundTripAcrossShardsBothDtypes) {
  for (const auto& [dtype, vocab] : std::vector<std::pair<std::string, int>>{{"uint16", 50000}, {"uint32", 100000}}) {
    Corpus c = make("rt" + dtype, dtype, vocab);
    Dataset d = Dataset::open(c.dir);
    EXPECT_GT(d.shards("train").size(), 3u);
    const int64_t n = d.num_tokens("train") + d.num_tokens("val");
    int64_t expect = 0;
    for (const auto& doc : c.docs) expect += static_cast<int64_t>(doc.size());
    EXPECT_EQ(n, expect);
    EXPECT_EQ(d.num_documents("train") + d.num_documents("val"), 60);
    // the train split is the train documents in order: rebuild it from a full read
    std::vector<int32_t> all(d.num_tokens("train"));
    d.read_tokens("train", 0, static_cast<int64_t>(all.size()), all.data());
    // every window read across a shard boundary equals the same slice of the full read
    for (const auto& s : d.shards("train")) {
      if (s.first_token < 5) continue;
      std::vector<int32_t> w(10);
      d.read_tokens("train", s.first_token - 5, 10, w.data());
      EXPECT_TRUE(std::equal(w.begin(), w.end(), all.begin() + (s.first_token - 5)));
    }
    // and the documents appear in it in order
    std::vector<int32_t> concat;
    Dataset d2 = Dataset::open(c.dir);
    int64_t pos = 0;
    for (const auto& doc : c.docs) {
      if (pos + static_cast<int64_t>(doc.size()) <= static_cast<int64_t>(all.size()) &&
          std::equal(doc.begin(), doc.end(), all.begin() + pos)) {
        pos += static_cast<int64_t>(doc.size());
      }
    }
    EXPECT_EQ(pos, static_cast<int64_t>(all.size())) << "train split is not the train documents in order";
    fs::remove_all(c.dir);
  }
}

TEST(Dataset, BadInputsAreClearErrors) {
  Corpus c = make("bad", "uint16", 100);
  const std::string shard = c.dir + "/" + Dataset::open(c.dir).shards("train")[1].file;
  const std::string manifest = read_file(c.dir + "/manifest.json");
  auto restore = [&] { write_file_atomic(c.dir + "/manifest.json", manifest); };
  // vocabulary larger than the model's
  EXPECT_NE(error_of([&] { Dataset::open(c.dir).check_vocab(50); }).find("exceeds model.vocab_size 50"), std::string::npos);
  // newer format version
  std::string m = manifest;
  m.replace(m.find("\"format_version\": 1"), 19, "\"format_version\": 7");
  write_file_atomic(c.dir + "/manifest.json", m);
  EXPECT_NE(error_of([&] { Dataset::open(c.dir); }).find("format version 7"), std::string::npos);
  // unknown dtype
  m = manifest;
  m.replace(m.find("\"uint16\""), 8, "\"float32\"");
  write_file_atomic(c.dir + "/manifest.json", m);
  EXPECT_NE(error_of([&] { Dataset::open(c.dir); }).find("unknown token dtype 'float32'"), std::string::npos);
  restore();
  // corrupted tokens (bit flip in the data): checksum
  const std::string good = read_file(shard);
  {
    std::string bad = good;
    bad[bad.size() - 100] ^= 0x01;
    std::ofstream(shard, std::ios::binary) << bad;
  }
  const std::string e1 = error_of([&] { Dataset::open(c.dir); });
  EXPECT_TRUE(e1.find("checksum mismatch") != std::string::npos || e1.find("HDF5") != std::string::npos) << e1;
  EXPECT_NE(e1.find(shard), std::string::npos) << e1;
  // truncated
  std::ofstream(shard, std::ios::binary) << good.substr(0, good.size() / 2);
  const std::string e2 = error_of([&] { Dataset::open(c.dir); });
  EXPECT_NE(e2.find(shard), std::string::npos) << e2;
  // missing
  fs::remove(shard);
  EXPECT_NE(error_of([&] { Dataset::open(c.dir); }).find("missing shard"), std::string::npos);
  // no manifest
  EXPECT_NE(error_of([&] { Dataset::open(c.dir + "/nope"); }).find("no dataset manifest"), std::string::npos);
  fs::remove_all(c.dir);
  // token id outside the declared vocabulary is refused by the writer
  DatasetWriterOptions o;
  o.dir = c.dir + "-w";
  o.vocab_size = 10;
  DatasetWriter w(o);
  const int32_t bad_doc[3] = {1, 2, 10};
  EXPECT_NE(error_of([&] { w.add_document(bad_doc, 3); }).find("token id 10"), std::string::npos);
  fs::remove_all(o.dir);
  // empty train split
  DatasetWriterOptions e = o;
  e.dir = c.dir + "-e";
  e.val_fraction = 1.0;
  DatasetWriter we(e);
  const int32_t doc[3] = {1, 2, 3};
  we.add_document(doc, 3);
  we.finish();
  EXPECT_NE(error_of([&] { Dataset::open(e.dir); }).find("train split is empty"), std::string::npos);
  fs::remove_all(e.dir);
}

TEST(Hdf5Source, WindowsAreAPermutationPerEpochAndDeterministic) {
  Corpus c = make("src", "uint16", 1000, 0.0);
  const int T = 16;
  Hdf5Source src(c.dir, 1000, T, 42);
  Dataset d = Dataset::open(c.dir);
  const int64_t windows = (d.num_tokens("train") - 1) / T;
  std::vector<int32_t> all(d.num_tokens("train"));
  d.read_tokens("train", 0, static_cast<int64_t>(all.size()), all.data());
  std::set<int64_t> seen;
  std::vector<int32_t> s(T + 1), s2(T + 1);
  for (int64_t i = 0; i < windows; ++i) {
    src.sample(Split::Train, static_cast<uint64_t>(i), T, s.data());
    // locate the window: it must start at a multiple of T and match the stream
    int64_t found = -1;
    for (int64_t w = 0; w < windows && found < 0; ++w)
      if (std::equal(s.begin(), s.end(), all.begin() + w * T) && !seen.count(w)) found = w;
    ASSERT_GE(found, 0) << "sample " << i << " is not an unused window";
    seen.insert(found);
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), windows);  // every window exactly once
  src.sample(Split::Train, 3, T, s.data());
  Hdf5Source again(c.dir, 1000, T, 42);
  again.sample(Split::Train, 3, T, s2.data());
  EXPECT_EQ(s, s2);
  fs::remove_all(c.dir);
}

}  // namespace
