// What: our safetensors reader and writer (io/hf/safetensors.h): F32 and BF16 round trips,
// sharding with model.safetensors.index.json, F16 and BF16 decoding against hand-made bytes,
// strided reads, size strings, and every malformed file the issue lists, each an error naming
// the file (and the tensor or dtype): a truncated header, an offset past the end, a size that
// disagrees with dtype x shape, overlapping tensors, a dtype we do not read.
// Why: import trusts nothing in a downloaded file; export must write what Python reads (the
// e2e test hf_roundtrip_test.sh loads our files with the Python library).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf/safetensors.h"

using namespace mt::io::hf;
namespace fs = std::filesystem;

namespace {

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mt-st-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // A file of an 8-byte length, `header` and `data` bytes.
  std::string raw(const std::string& name, const std::string& header, const std::string& data, int64_t len = -1) {
    const std::string p = dir_ + "/" + name;
    std::ofstream f(p, std::ios::binary);
    const uint64_t n = len >= 0 ? static_cast<uint64_t>(len) : header.size();
    for (int i = 0; i < 8; ++i) f.put(static_cast<char>(n >> (8 * i)));
    f << header << data;
    return p;
  }
  // The Error message (file included) of opening `path`, "" if it opened.
  static std::string open_error(const std::string& path) {
    try {
      SafetensorsFile f(path);
    } catch (const mt::core::Error& e) {
      return e.what();
    }
    return "";
  }
  std::string dir_;
};

TEST_F(Safetensors, F32RoundTripIsBitwiseAndHeaderIsValid) {
  std::vector<float> a = {1.0f, -2.5f, 3.25e-20f, -0.0f, 1e30f, 7.0f}, b = {0.5f, 0.25f};
  SafetensorsWriter w(dir_, {{"a", {2, 3}}, {"b.bias", {2}}}, "F32", 1 << 20);
  w.write("a", a.data());
  w.write("b.bias", b.data());
  w.finish();
  EXPECT_EQ(w.files(), std::vector<std::string>{"model.safetensors"});
  SafetensorsModel m(dir_);
  EXPECT_EQ(m.names(), (std::vector<std::string>{"a", "b.bias"}));
  EXPECT_EQ(m.entry("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(m.entry("a").dtype, "F32");
  const auto ra = m.read_all("a");
  EXPECT_EQ(std::memcmp(ra.data(), a.data(), a.size() * 4), 0);
  EXPECT_EQ(m.read_all("b.bias"), b);
  float col[2];
  m.read("a", 1, 2, col, 3);  // column 1: a[0][1], a[1][1]
  EXPECT_EQ(col[0], -2.5f);
  EXPECT_EQ(col[1], 1e30f);
  EXPECT_EQ(m.file_of("a").metadata().at("format"), "pt");
  // the data starts 8-byte aligned, as the Python writer leaves it
  std::ifstream f(dir_ + "/model.safetensors", std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST_F(Safetensors, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(-2.0f), 0xc000);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1); just above rounds up
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  std::vector<float> v = {1.0f, 3.14159265f, -1e-3f, 65504.0f};
  SafetensorsWriter w(dir_, {{"t", {4}}}, "BF16", 1 << 20);
  w.write("t", v.data());
  w.finish();
  SafetensorsModel m(dir_);
  EXPECT_EQ(m.entry("t").dtype, "BF16");
  const auto r = m.read_all("t");
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(r[i], bf16_to_float(float_to_bf16(v[i])));
    EXPECT_NEAR(r[i], v[i], std::fabs(v[i]) / 128);
  }
}

TEST_F(Safetensors, F16AndBf16BytesDecode) {
  // F16: 1.0 = 0x3c00, -2 = 0xc000, 65504 = 0x7bff, smallest subnormal 2^-24 = 0x0001
  const uint16_t h[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
  const uint16_t bf[2] = {0x3f80, 0xbfc0};  // 1.0, -1.5
  std::string data(reinterpret_cast<const char*>(h), 8);
  data.append(reinterpret_cast<const char*>(bf), 4);
  const std::string p = raw("h.safetensors",
                            R"({"h":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}})",
                            data);
  SafetensorsFile f(p);
  float out[4];
  f.read(*f.find("h"), 0, 4, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 65504.0f);
  EXPECT_EQ(out[3], std::ldexp(1.0f, -24));
  f.read(*f.find("b"), 0, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -1.5f);
}

TEST_F(Safetensors, ShardsWithIndexPastTheSizeLimit) {
  std::vector<float> big(100, 1.5f), small(10, -1.0f);
  // 400 + 400 + 40 + 400 bytes with a 500-byte limit: [big0] [big1 small] [big2]
  SafetensorsWriter w(dir_, {{"big0", {10, 10}}, {"big1", {100}}, {"small", {10}}, {"big2", {4, 25}}}, "F32", 500);
  for (const char* n : {"big0", "big1"}) w.write(n, big.data());
  w.write("small", small.data());
  w.write("big2", big.data());
  w.finish();
  ASSERT_EQ(w.num_shards(), 3);
  EXPECT_EQ(w.files()[0], "model-00001-of-00003.safetensors");
  EXPECT_FALSE(fs::exists(dir_ + "/model.safetensors"));
  std::ifstream f(dir_ + "/model.safetensors.index.json");
  const auto idx = nlohmann::json::parse(f);
  EXPECT_EQ(idx["metadata"]["total_size"], 1240);
  EXPECT_EQ(idx["weight_map"]["small"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(idx["weight_map"]["big2"], "model-00003-of-00003.safetensors");
  SafetensorsModel m(dir_);
  EXPECT_EQ(m.names().size(), 4u);
  EXPECT_EQ(m.read_all("small"), small);
  EXPECT_EQ(m.read_all("big2"), big);
  EXPECT_EQ(m.source(), dir_ + "/model.safetensors.index.json");
}

TEST_F(Safetensors, IndexNamingATensorItsShardLacksIsAnError) {
  std::vector<float> v(4, 1.0f);
  SafetensorsWriter w(dir_, {{"a", {4}}}, "F32", 1 << 20);
  w.write("a", v.data());
  w.finish();
  std::ofstream(dir_ + "/model.safetensors.index.json") << R"({"weight_map":{"a":"model.safetensors","ghost":"model.safetensors"}})";
  try {
    SafetensorsModel m(dir_);
    FAIL() << "accepted";
  } catch (const mt::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'ghost'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.safetensors.index.json"), std::string::npos) << e.what();
  }
}

TEST_F(Safetensors, MalformedFilesAreClearErrors) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string eight(8, '\0');
  const std::string short_file = dir_ + "/short.safetensors";
  std::ofstream(short_file, std::ios::binary) << "abc";
  struct Case {
    std::string file, want;
  };
  const Case cases[] = {
      {short_file, "truncated header: the file has 3 bytes"},
      {raw("trunc.safetensors", ok, eight, 4096), "truncated header: its length is 4096"},
      {raw("json.safetensors", "{\"a\": [", ""), "not valid JSON"},
      {raw("past.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight),
       "tensor 'a': data_offsets [0, 16] reach past the end of the file"},
      {raw("size.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
       "tensor 'a': 8 bytes for shape [3] of F32 (12 bytes expected)"},
      {raw("overlap.safetensors",
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           eight),
       "overlaps"},
      {raw("dtype.safetensors", R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", eight),
       "tensor 'a': unknown dtype 'Q4'"},
      {raw("tail.safetensors", ok, eight + "xx"), "2 bytes after the last tensor"},
  };
  for (const auto& c : cases) {
    const std::string e = open_error(c.file);
    EXPECT_NE(e.find(c.want), std::string::npos) << c.file << ": " << e;
    EXPECT_NE(e.find(c.file), std::string::npos) << "names the file: " << e;
  }
}

TEST_F(Safetensors, UnsupportedDtypeIsRefusedByName) {
  const std::string p = raw("i64.safetensors", R"({"position_ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})",
                            std::string(8, '\0'));
  SafetensorsFile f(p);  // opens: only reading it is refused
  float out;
  try {
    f.read(*f.find("position_ids"), 0, 1, &out);
    FAIL() << "read an I64 tensor";
  } catch (const mt::core::Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("'position_ids' has dtype I64"), std::string::npos) << w;
    EXPECT_NE(w.find(p), std::string::npos) << w;
  }
}

TEST_F(Safetensors, MissingFilesAndTensorsAreNamed) {
  try {
    SafetensorsModel m(dir_);
    FAIL();
  } catch (const mt::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no model.safetensors or model.safetensors.index.json"), std::string::npos);
  }
  std::vector<float> v(2, 1.0f);
  SafetensorsWriter w(dir_, {{"a", {2}}}, "F32", 1 << 20);
  w.write("a", v.data());
  w.finish();
  SafetensorsModel m(dir_);
  try {
    m.entry("lm_head.weight");
    FAIL();
  } catch (const mt::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'lm_head.weight' is missing"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsSizes, ParseLikeMaxShardSize) {
  EXPECT_EQ(parse_size("5GB"), 5'000'000'000);
  EXPECT_EQ(parse_size("500MB"), 500'000'000);
  EXPECT_EQ(parse_size("10kb"), 10'000);
  EXPECT_EQ(parse_size("2GiB"), 2ll << 30);
  EXPECT_EQ(parse_size("12345"), 12345);
  EXPECT_THROW(parse_size("lots"), mt::core::Error);
  EXPECT_THROW(parse_size("5XB"), mt::core::Error);
  EXPECT_THROW(parse_size("-1"), mt::core::Error);
}

}  // namespace
