// Tests of io/text: the Hugging Face byte-level BPE tokenizer against ids the Python
// `tokenizers` library produced (tests/fixtures/hf/bpe-gpt2style: the shared fixture;
// tests/fixtures/hf/tokenizer-cases: made by tests/fixtures/hf/make_tokenizer_cases.py:
// a prefix-space GPT-2, a Llama-3 style Split + ByteLevel with a template and added tokens,
// every Split behavior), the two merge algorithms against each other, and the errors for
// what is not supported.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/text/bpe_tokenizer.h"
#include "io/text/tokenizer.h"

using namespace mt;
namespace fs = std::filesystem;

namespace {

const std::string kHf = std::string(MT_SOURCE_DIR) + "/tests/fixtures/hf/";
const std::string kGpt2 = kHf + "bpe-gpt2style";

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;
};

std::vector<Case> read_cases(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<Case> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    out.push_back({j.at("text"), j.at("ids").get<std::vector<int32_t>>(), j.value("decoded", j.at("text").get<std::string>())});
  }
  return out;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// Writes `j` as DIR/tokenizer.json in a fresh temporary directory and returns the file.
std::string write_tokenizer(const nlohmann::json& j, const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("mt_tok_" + name + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  std::ofstream(d / "tokenizer.json") << j.dump();
  return (d / "tokenizer.json").string();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const core::Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_cases(const io::Tokenizer& tok, const std::vector<Case>& cases, const std::string& what) {
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    EXPECT_EQ(tok.encode(c.text), c.ids) << what << ": encode(" << nlohmann::json(c.text).dump() << ")";
    EXPECT_EQ(tok.decode(c.ids), c.decoded) << what << ": decode of " << nlohmann::json(c.text).dump();
  }
}

}  // namespace

TEST(Tokenizer, SharedFixtureSamples) {
  const auto tok = io::load_tokenizer(kGpt2);  // a directory holding tokenizer.json
  const auto cases = read_cases(kGpt2 + "/samples.jsonl");
  EXPECT_EQ(cases.size(), 8u);
  expect_cases(*tok, cases, "bpe-gpt2style");
  for (const auto& c : cases) EXPECT_EQ(tok->decode(c.ids), c.text);  // decoding gives the text back
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->eos_id(), 0);  // <|endoftext|>
  EXPECT_EQ(tok->token_id("<|endoftext|>"), 0);
  EXPECT_EQ(tok->token_id("no such token"), std::nullopt);
  EXPECT_NE(tok->describe().find(kGpt2 + "/tokenizer.json"), std::string::npos);
  // the file itself works as well as its directory
  EXPECT_EQ(io::load_tokenizer(kGpt2 + "/tokenizer.json")->encode(cases[3].text), cases[3].ids);
}

class TokenizerCases : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerCases, MatchTheLibrary) {
  const std::string dir = kHf + "tokenizer-cases/" + GetParam();
  const auto tok = io::load_tokenizer(dir);
  expect_cases(*tok, read_cases(dir + "/cases.jsonl"), GetParam());
}

INSTANTIATE_TEST_SUITE_P(Hf, TokenizerCases,
                         ::testing::Values("gpt2-prefix", "llama3", "split-merged-previous", "split-merged-next",
                                           "split-removed-invert", "split-contiguous-string"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

TEST(Tokenizer, Llama3SpecialTokens) {
  const auto tok = io::load_tokenizer(kHf + "tokenizer-cases/llama3");
  EXPECT_EQ(tok->vocab_size(), 703);  // 700 trained + 2 special + <mask>: not a multiple of 64
  EXPECT_EQ(tok->token_id("<|begin_of_text|>"), 700);
  EXPECT_EQ(tok->eos_id(), 701);  // <|end_of_text|>
  const auto ids = tok->encode("hi");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 700);  // the template's <|begin_of_text|>
}

TEST(Tokenizer, MergesAsStrings) {
  // older files write merges as "a b" strings: the same tokenizer, the same ids
  auto j = read_json(kGpt2 + "/tokenizer.json");
  auto& merges = j["model"]["merges"];
  ASSERT_TRUE(merges[0].is_array());
  for (auto& m : merges) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const auto tok = io::load_tokenizer(write_tokenizer(j, "strmerges"));
  expect_cases(*tok, read_cases(kGpt2 + "/samples.jsonl"), "string merges");
}

TEST(Tokenizer, HeapAndLinearMergesAgree) {
  const auto j = read_json(kHf + "tokenizer-cases/llama3/tokenizer.json");
  io::BpeTokenizer tok(j, "llama3");
  std::mt19937 rng(7);
  const std::string alphabet = "the licensed software or any part ofwhich\n \t";
  for (int trial = 0; trial < 400; ++trial) {
    std::string s(2 + rng() % 150, ' ');
    for (auto& c : s) c = trial % 2 ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng() % 256);
    std::vector<int32_t> a, b;
    tok.merge_piece(s, a, false);
    tok.merge_piece(s, b, true);
    ASSERT_EQ(a, b) << "trial " << trial;
    std::string raw = tok.decode(a);
    ASSERT_EQ(raw, s);  // any bytes survive merging
  }
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  const auto tok = io::load_tokenizer(kHf + "tokenizer-cases/llama3");
  const auto cases = read_cases(kHf + "tokenizer-cases/llama3/cases.jsonl");
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep)
        for (const auto& c : cases) bad[t] += tok->encode(c.text) != c.ids;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(bad[t], 0) << "thread " << t;
}

TEST(Tokenizer, ByteTokenizer) {
  const auto tok = io::load_tokenizer("byte");
  EXPECT_EQ(tok->describe(), "byte");
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_EQ(tok->encode("hé"), (std::vector<int32_t>{104, 0xc3, 0xa9}));
  EXPECT_EQ(tok->decode({104, 0xc3, 0xa9}), "hé");
  EXPECT_EQ(tok->eos_id(), std::nullopt);
}

TEST(Tokenizer, InvalidUtf8IsRefused) {
  const auto tok = io::load_tokenizer(kGpt2);
  for (const std::string bad : {"ab\xff", "\xc3", "x\xed\xa0\x80y" /* surrogate */, "\xc0\xaf" /* overlong */}) {
    const std::string msg = error_of([&] { tok->encode(bad); });
    EXPECT_NE(msg.find("not valid UTF-8"), std::string::npos) << msg;
  }
}

TEST(Tokenizer, UnsupportedIsAnErrorNamingFileAndType) {
  const auto base = read_json(kGpt2 + "/tokenizer.json");
  struct Bad {
    std::string name, expect;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Bad> bads = {
      {"wordpiece", "unsupported tokenizer model type 'WordPiece'",
       [](auto& j) { j["model"] = {{"type", "WordPiece"}, {"vocab", {{"a", 0}}}}; }},
      {"unigram", "unsupported tokenizer model type 'Unigram'", [](auto& j) { j["model"]["type"] = "Unigram"; }},
      {"nfc", "unsupported normalizer type 'NFC'", [](auto& j) { j["normalizer"] = {{"type", "NFC"}}; }},
      {"metaspace", "unsupported pre_tokenizer type 'Metaspace'",
       [](auto& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}}; }},
      {"nobytelevel", "needs a ByteLevel pre-tokenizer",
       [](auto& j) { j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Removed"}}; }},
      {"decoder", "unsupported decoder type 'WordPiece'", [](auto& j) { j["decoder"] = {{"type", "WordPiece"}}; }},
      {"post", "unsupported post_processor type 'BertProcessing'",
       [](auto& j) { j["post_processor"] = {{"type", "BertProcessing"}}; }},
      {"fallback", "byte_fallback", [](auto& j) { j["model"]["byte_fallback"] = true; }},
      {"dropout", "dropout", [](auto& j) { j["model"]["dropout"] = 0.1; }},
      {"badregex", "cannot compile the regex",
       [](auto& j) { j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}}, {{"type", "ByteLevel"}, {"use_regex", false}}}}}; }},
      {"badmerge", "not in the vocabulary", [](auto& j) { j["model"]["merges"][0] = {"Ġ", "nope"}; }},
  };
  for (const auto& b : bads) {
    auto j = base;
    b.edit(j);
    const std::string path = write_tokenizer(j, b.name);
    const std::string msg = error_of([&] { io::load_tokenizer(path); });
    EXPECT_NE(msg.find(b.expect), std::string::npos) << b.name << ": " << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << b.name << " does not name the file: " << msg;
  }
  // malformed JSON and a missing file: named
  const fs::path d = fs::path(write_tokenizer(base, "malformed")).parent_path();
  std::ofstream(d / "tokenizer.json") << "{\"model\": {\"type\": \"BPE\",";
  std::string msg = error_of([&] { io::load_tokenizer(d.string()); });
  EXPECT_NE(msg.find("malformed tokenizer JSON"), std::string::npos) << msg;
  EXPECT_NE(msg.find((d / "tokenizer.json").string()), std::string::npos) << msg;
  msg = error_of([&] { io::load_tokenizer("/nonexistent/tok.json"); });
  EXPECT_NE(msg.find("/nonexistent/tok.json"), std::string::npos) << msg;
}
