// What: the pieces of `meshtrain generate` that need no checkpoint:
//  - sampler: greedy is the argmax with ties to the lowest id; top-k = 1 and a tiny top-p
//    equal greedy at any temperature; a seed reproduces its draws and another seed differs;
//    over many draws of a fixed logits vector the frequencies match softmax(logits / T) (and
//    its top-k / top-p truncation, computed here independently) within 4 standard errors;
//    bad flags are errors naming the flag;
//  - generate_tokens on a random Llama: greedy output is deterministic and equals the argmax
//    continuation computed by full recomputation (the training-path forward's logits through
//    decode of the whole prefix on a fresh cache); it stops at max-new-tokens, at the eos
//    token, and at model.seq_len;
//  - Utf8Streamer: multi-byte characters split over tokens are held back until complete;
//  - choose_tokenizer: flag, then hint, then byte for <= 256 ids, else an error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "launch/infer/generate.h"
#include "launch/infer/sampler.h"
#include "parallel/models/registry.h"

using mt::launch::SamplingOptions;

namespace {

SamplingOptions opts(double temperature, int top_k = 0, double top_p = 1.0, uint64_t seed = 1) {
  SamplingOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.seed = seed;
  return o;
}

const std::vector<float> kLogits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 0.0f, 1.5f, -3.0f};

std::vector<double> frequencies(const SamplingOptions& o, int draws) {
  std::vector<double> f(kLogits.size(), 0.0);
  for (int i = 0; i < draws; ++i)
    f[static_cast<size_t>(mt::launch::sample_token(kLogits.data(), 8, o, static_cast<uint64_t>(i)))] += 1.0 / draws;
  return f;
}

// softmax(logits / T) over `keep` (ids), 0 elsewhere: the reference distribution.
std::vector<double> softmax_over(double T, const std::vector<int>& keep) {
  std::vector<double> p(kLogits.size(), 0.0);
  double s = 0;
  for (int i : keep) s += p[i] = std::exp(kLogits[i] / T);
  for (double& x : p) x /= s;
  return p;
}

void expect_matches(const std::vector<double>& freq, const std::vector<double>& p, int draws, const char* what) {
  for (size_t i = 0; i < p.size(); ++i) {
    const double se = std::sqrt(std::max(p[i] * (1 - p[i]), 1e-12) / draws);
    EXPECT_NEAR(freq[i], p[i], 4 * se + 1e-9) << what << " token " << i;
  }
}

}  // namespace

TEST(Sampler, GreedyIsArgmaxLowestIdOnTies) {
  // ids 1 and 3 tie at 2.0: the lowest wins, whatever the seed or draw
  for (uint64_t d = 0; d < 20; ++d) EXPECT_EQ(mt::launch::sample_token(kLogits.data(), 8, opts(0, 0, 1, d), d), 1);
  const std::vector<float> z = {-1.0f, -1.0f, -1.0f};
  EXPECT_EQ(mt::launch::argmax_token(z.data(), 3), 0);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  for (double T : {0.5, 1.0, 3.0}) {
    for (uint64_t d = 0; d < 50; ++d) {
      EXPECT_EQ(mt::launch::sample_token(kLogits.data(), 8, opts(T, 1), d), 1) << "top-k 1, T " << T;
      EXPECT_EQ(mt::launch::sample_token(kLogits.data(), 8, opts(T, 0, 1e-6), d), 1) << "top-p 1e-6, T " << T;
    }
  }
}

TEST(Sampler, SeedReproducible) {
  std::vector<int32_t> a, b, c;
  for (uint64_t d = 0; d < 200; ++d) {
    a.push_back(mt::launch::sample_token(kLogits.data(), 8, opts(1.0, 0, 1.0, 7), d));
    b.push_back(mt::launch::sample_token(kLogits.data(), 8, opts(1.0, 0, 1.0, 7), d));
    c.push_back(mt::launch::sample_token(kLogits.data(), 8, opts(1.0, 0, 1.0, 8), d));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Sampler, FrequenciesMatchSoftmax) {
  const int n = 40000;
  expect_matches(frequencies(opts(1.0), n), softmax_over(1.0, {0, 1, 2, 3, 4, 5, 6, 7}), n, "T 1");
  expect_matches(frequencies(opts(0.7), n), softmax_over(0.7, {0, 1, 2, 3, 4, 5, 6, 7}), n, "T 0.7");
  // top-k 3: ids 1, 3 (2.0) and 6 (1.5)
  expect_matches(frequencies(opts(1.0, 3), n), softmax_over(1.0, {1, 3, 6}), n, "top-k 3");
  // top-p 0.6 at T 1: p = .247 .247 .150 .091 ... for ids 1, 3, 6, 4: 1 and 3 sum to .494 < .6,
  // adding 6 reaches .644 >= .6: the nucleus is {1, 3, 6}
  const auto full = softmax_over(1.0, {0, 1, 2, 3, 4, 5, 6, 7});
  ASSERT_LT(full[1] + full[3], 0.6);
  ASSERT_GE(full[1] + full[3] + full[6], 0.6);
  expect_matches(frequencies(opts(1.0, 0, 0.6), n), softmax_over(1.0, {1, 3, 6}), n, "top-p 0.6");
  const auto dist = mt::launch::sampling_distribution(kLogits.data(), 8, opts(1.0, 0, 0.6));
  const auto ref = softmax_over(1.0, {1, 3, 6});
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(dist[i], ref[i], 1e-12);
}

TEST(Sampler, BadOptions) {
  const auto what = [](const SamplingOptions& o) {
    try {
      mt::launch::check_sampling(o);
    } catch (const mt::core::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(what(opts(-1)).find("--temperature"), std::string::npos);
  EXPECT_NE(what(opts(1, -2)).find("--top-k"), std::string::npos);
  EXPECT_NE(what(opts(1, 0, 0.0)).find("--top-p"), std::string::npos);
  EXPECT_NE(what(opts(1, 0, 1.5)).find("--top-p"), std::string::npos);
  EXPECT_EQ(what(opts(0, 5, 0.9)), "");
  std::vector<float> bad = {0.0f, NAN};
  EXPECT_THROW(mt::launch::sample_token(bad.data(), 2, opts(1.0), 0), mt::core::Error);
}

namespace {
mt::core::ModelConfig tiny_llama() {
  mt::core::ModelConfig m;
  m.arch = "llama";
  m.n_layer = 2;
  m.n_head = 4;
  m.n_kv_head = 2;
  m.n_embd = 32;
  m.ffn_dim = 40;
  m.vocab_size = 37;
  m.seq_len = 24;
  m.init_std = 0.3;
  return m;
}
}  // namespace

TEST(Generate, GreedyEqualsRecomputedArgmax) {
  auto m = mt::parallel::make_model(tiny_llama(), {});
  m->init_weights(3);
  const std::vector<int32_t> prompt = {5, 9, 1, 30};
  std::vector<int32_t> seen;
  const auto r = mt::launch::generate_tokens(*m, prompt, 10, opts(0), std::nullopt, [&](int32_t t) { seen.push_back(t); });
  EXPECT_EQ(r.stop, "max-new-tokens");
  ASSERT_EQ(r.tokens.size(), 10u);
  EXPECT_EQ(seen, r.tokens);
  EXPECT_EQ(r.decode_steps, 9);
  // the reference: for each token, the whole prefix on a fresh cache, argmax of its last logits
  std::vector<int32_t> seq = prompt;
  std::vector<float> logits(37);
  for (int i = 0; i < 10; ++i) {
    m->begin_decode(1, static_cast<int>(seq.size()));
    m->decode(seq.data(), 1, static_cast<int>(seq.size()), logits.data());
    seq.push_back(mt::launch::argmax_token(logits.data(), 37));
  }
  EXPECT_EQ(std::vector<int32_t>(seq.begin() + 4, seq.end()), r.tokens);
  // deterministic
  EXPECT_EQ(mt::launch::generate_tokens(*m, prompt, 10, opts(0), std::nullopt).tokens, r.tokens);
  // sampled: the same seed gives the same tokens
  const auto s1 = mt::launch::generate_tokens(*m, prompt, 12, opts(1.0, 0, 1.0, 4), std::nullopt);
  const auto s2 = mt::launch::generate_tokens(*m, prompt, 12, opts(1.0, 0, 1.0, 4), std::nullopt);
  EXPECT_EQ(s1.tokens, s2.tokens);
}

TEST(Generate, Stops) {
  auto m = mt::parallel::make_model(tiny_llama(), {});
  m->init_weights(3);
  const std::vector<int32_t> prompt = {5, 9, 1, 30};
  const auto r = mt::launch::generate_tokens(*m, prompt, 10, opts(0), std::nullopt);
  // eos = the third greedy token: two tokens, then stop (eos not included)
  const auto e = mt::launch::generate_tokens(*m, prompt, 10, opts(0), r.tokens[2]);
  const auto first = std::find(r.tokens.begin(), r.tokens.end(), r.tokens[2]) - r.tokens.begin();
  EXPECT_EQ(e.stop, "eos");
  EXPECT_EQ(e.tokens, std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + first));
  // model.seq_len 24: at most 20 new tokens after 4
  const auto s = mt::launch::generate_tokens(*m, prompt, 100, opts(0), std::nullopt);
  EXPECT_EQ(s.stop, "model.seq_len");
  EXPECT_EQ(s.tokens.size(), 20u);
  EXPECT_EQ(std::vector<int32_t>(s.tokens.begin(), s.tokens.begin() + 10), r.tokens);
  // a prompt that fills model.seq_len
  EXPECT_THROW(mt::launch::generate_tokens(*m, std::vector<int32_t>(24, 1), 5, opts(0), std::nullopt),
               mt::core::Error);
}

TEST(Utf8Streamer, HoldsBackIncompleteCharacters) {
  mt::launch::Utf8Streamer s;
  const std::string text = "a\xC3\xA9" "b\xE2\x82\xAC\xF0\x9F\x98\x80";  // a é b € 😀
  std::string out, all;
  // feed one byte more each time, as byte-level tokens could
  for (size_t n = 1; n <= text.size(); ++n) {
    out = s.feed(text.substr(0, n));
    all += out;
    // what was printed is always whole characters: a prefix of text ending at a boundary
    EXPECT_EQ(text.compare(0, all.size(), all), 0);
    const bool boundary = all.size() == text.size() || (static_cast<unsigned char>(text[all.size()]) & 0xC0) != 0x80;
    EXPECT_TRUE(boundary) << n;
  }
  all += s.finish();
  EXPECT_EQ(all, text);
  // an incomplete tail at the end still comes out at finish()
  mt::launch::Utf8Streamer t;
  EXPECT_EQ(t.feed("x\xE2\x82"), "x");
  EXPECT_EQ(t.finish(), "\xE2\x82");
}

TEST(Generate, ChooseTokenizer) {
  EXPECT_EQ(mt::launch::choose_tokenizer("tok.json", "hint.json", 50000), "tok.json");
  EXPECT_EQ(mt::launch::choose_tokenizer("", "hint.json", 50000), "hint.json");
  EXPECT_EQ(mt::launch::choose_tokenizer("", "", 256), "byte");
  try {
    mt::launch::choose_tokenizer("", "", 257);
    ADD_FAILURE() << "no error";
  } catch (const mt::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tokenizer"), std::string::npos) << e.what();
  }
}
