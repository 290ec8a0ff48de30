// HDF5 token datasets: written shards read back exactly (across shard boundaries, both
// dtypes); every bad input is a clear error naming the file; concat samples are windows of
// the split, deterministic, and visit every window once per epoch.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "io/dataset.h"
#include "io/metrics.h"
#include "io/schedule.h"

namespace fs = std::filesystem;
using namespace mt::io;

namespace {

struct Corpus {
  std::string dir;
  std::vector<std::vector<int32_t>> docs;
};

Corpus make(const std::string& name, const std::string& dtype, int vocab, double val = 0.2, int64_t chunk = 1 << 16) {
  Corpus c;
  c.dir = (fs::temp_directory_path() / ("mt-ds-" + name + "-" + std::to_string(::getpid()))).string();
  fs::remove_all(c.dir);
  DatasetWriterOptions o;
  o.dir = c.dir;
  o.dtype = dtype;
  o.vocab_size = vocab;
  o.shard_tokens = 1000;  // many shards
  o.val_fraction = val;
  o.chunk_tokens = chunk;
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
  // the manifest's dtype differs from the tokens' stored type
  m = manifest;
  m.replace(m.find("\"uint16\""), 8, "\"uint32\"");
  write_file_atomic(c.dir + "/manifest.json", m);
  const std::string ed = error_of([&] { Dataset::open(c.dir); });
  EXPECT_NE(ed.find("tokens are stored as uint16, the manifest says uint32"), std::string::npos) << ed;
  EXPECT_NE(ed.find("train_00000.h5"), std::string::npos) << ed;
  // token ids >= the manifest's vocab_size (tokens go up to 99): named with shard and offset
  m = manifest;
  m.replace(m.find("\"vocab_size\": 100"), 17, "\"vocab_size\": 10");
  write_file_atomic(c.dir + "/manifest.json", m);
  const std::string ev = error_of([&] { Dataset::open(c.dir); });
  EXPECT_NE(ev.find(">= the dataset's vocab_size 10"), std::string::npos) << ev;
  EXPECT_NE(ev.find("at offset"), std::string::npos) << ev;
  EXPECT_NE(ev.find(".h5"), std::string::npos) << ev;
  restore();
  // seq_len longer than every document (documents mode); fine in concat mode
  const std::string es = error_of([&] { Hdf5Source(c.dir, 100, 5000, SampleMode::Documents); });
  EXPECT_NE(es.find("model.seq_len = 5000 is longer than every document of split 'train'"), std::string::npos) << es;
  EXPECT_EQ(error_of([&] { Hdf5Source(c.dir, 100, 500, SampleMode::Concat); }), "");
  // corrupted document offsets
  {
    const std::string s0 = c.dir + "/" + Dataset::open(c.dir).shards("train")[0].file;
    const std::string keep = read_file(s0);
    hid_t f = H5Fopen(s0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "doc_offsets", H5P_DEFAULT);
    std::vector<uint64_t> off(Dataset::open(c.dir).shards("train")[0].docs + 1);
    H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off.data());
    std::swap(off[1], off[2]);  // no longer rising
    H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off.data());
    H5Dclose(d);
    H5Fclose(f);
    const std::string eo = error_of([&] { Dataset::open(c.dir); });
    EXPECT_NE(eo.find("doc_offsets[2]"), std::string::npos) << eo;
    EXPECT_NE(eo.find(s0), std::string::npos) << eo;
    std::ofstream(s0, std::ios::binary) << keep;
  }
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

TEST(Hdf5Source, ConcatWindowsAndDocumentsAreSlicesOfTheStream) {
  Corpus c = make("src", "uint16", 1000, 0.0);
  const int T = 16;
  Dataset d = Dataset::open(c.dir);
  std::vector<int32_t> all(d.num_tokens("train"));
  d.read_tokens("train", 0, static_cast<int64_t>(all.size()), all.data());
  Hdf5Source concat(c.dir, 1000, T, SampleMode::Concat);
  EXPECT_EQ(concat.epoch_samples(Split::Train), static_cast<uint64_t>((all.size() - 1) / T));
  EXPECT_EQ(concat.sample_tokens(Split::Train), nullptr);
  std::vector<int32_t> s(T + 1);
  for (uint64_t w : {uint64_t{0}, uint64_t{1}, concat.epoch_samples(Split::Train) - 1}) {
    concat.sample(Split::Train, w, T, s.data());
    EXPECT_TRUE(std::equal(s.begin(), s.end(), all.begin() + static_cast<int64_t>(w) * T)) << "window " << w;
  }
  Hdf5Source docs(c.dir, 1000, T, SampleMode::Documents);
  ASSERT_EQ(docs.epoch_samples(Split::Train), 60u);
  const auto* len = docs.sample_tokens(Split::Train);
  ASSERT_NE(len, nullptr);
  for (uint64_t i = 0; i < 60; ++i) {
    ASSERT_EQ((*len)[i], std::min<int32_t>(T + 1, static_cast<int32_t>(c.docs[i].size())));
    docs.sample(Split::Train, i, T, s.data());
    EXPECT_TRUE(std::equal(s.begin(), s.begin() + (*len)[i], c.docs[i].begin())) << "document " << i;
  }
  // no val split: eval reads train
  EXPECT_EQ(docs.epoch_samples(Split::Eval), 60u);
  fs::remove_all(c.dir);
}

// Ranks share the token pass of verification (checksums, token ids): rank r of n reads the
// shards r, r + n, ... (in manifest order), so a bad shard is caught by exactly one rank and
// no rank reads the whole dataset; the structure (sizes, doc_offsets) is checked by all.
TEST(Dataset, VerificationIsSharedAcrossRanks) {
  Corpus c = make("share", "uint16", 100);
  const std::string shard = c.dir + "/" + Dataset::open(c.dir).shards("train")[1].file;
  std::string bytes = read_file(shard);
  bytes[bytes.size() - 100] ^= 0x01;
  std::ofstream(shard, std::ios::binary) << bytes;
  EXPECT_EQ(error_of([&] { Dataset::open(c.dir, true, true, 0, 2); }), "");  // shards 0, 2, ...
  const std::string e = error_of([&] { Dataset::open(c.dir, true, true, 1, 2); });
  EXPECT_NE(e.find("checksum mismatch"), std::string::npos) << e;
  EXPECT_NE(e.find(shard), std::string::npos) << e;
  EXPECT_NE(error_of([&] { Dataset::open(c.dir, true, true, 1, 3); }).find(shard), std::string::npos);
  EXPECT_EQ(error_of([&] { Dataset::open(c.dir, true, true, 2, 3); }), "");
  fs::remove_all(c.dir);
}

TEST(Dataset, MappedReadsEqualHdf5Reads) {
  for (const std::string dtype : {"uint16", "uint32"}) {
    Corpus c = make("map" + dtype, dtype, dtype == "uint16" ? 50000 : 70000, 0.2, 64);
    Dataset mapped = Dataset::open(c.dir, true, true), plain = Dataset::open(c.dir, true, false);
    EXPECT_EQ(mapped.mapped_shards(), mapped.num_shards());
    EXPECT_EQ(plain.mapped_shards(), 0);
    const int64_t n = mapped.num_tokens("train");
    std::vector<int32_t> a(n), b(n);
    mapped.read_tokens("train", 0, n, a.data());
    plain.read_tokens("train", 0, n, b.data());
    EXPECT_EQ(a, b);
    std::mt19937 g(3);
    for (int k = 0; k < 200; ++k) {  // random ranges, many across chunk and shard boundaries
      const int64_t off = static_cast<int64_t>(g() % static_cast<uint64_t>(n)), cnt = std::min<int64_t>(n - off, g() % 700);
      std::vector<int32_t> x(cnt), y(cnt);
      mapped.read_tokens("train", off, cnt, x.data());
      plain.read_tokens("train", off, cnt, y.data());
      ASSERT_EQ(x, y) << "range " << off << " + " << cnt;
      ASSERT_TRUE(std::equal(x.begin(), x.end(), a.begin() + off));
    }
    fs::remove_all(c.dir);
  }
}

TEST(Dataset, ShardLookupIs64Bit) {
  // a synthetic index of three 3-billion-token shards: no file needed for the arithmetic
  std::vector<ShardInfo> shards(3);
  int64_t first = 0;
  for (auto& s : shards) {
    s.tokens = 3'000'000'000;
    s.first_token = first;
    first += s.tokens;
  }
  EXPECT_EQ(locate_shard(shards, 0), 0u);
  EXPECT_EQ(locate_shard(shards, 2'999'999'999), 0u);
  EXPECT_EQ(locate_shard(shards, 3'000'000'000), 1u);
  EXPECT_EQ(locate_shard(shards, (int64_t{1} << 32) + 5), 1u);
  EXPECT_EQ(locate_shard(shards, 8'999'999'999), 2u);
}

}  // namespace
