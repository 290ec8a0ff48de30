// What: the next token from a vector of logits: greedy (temperature 0: argmax, ties to the
// lowest id) or sampled from softmax(logits / temperature) restricted to the top-k tokens and
// then to the nucleus (top-p: the most probable tokens whose probabilities sum to p), as
// Hugging Face's TopK and TopP logits warpers do in that order.
// Why: generation on a tensor-parallel group must pick the same token on every rank without
// communicating. Every rank holds the same gathered logits (Model::decode), and a draw is a
// pure function of (seed, draw index) through the counter-based RNG (core/rng.h), so each
// rank computes the same token.
#pragma once

#include <cstdint>
#include <vector>

namespace mt::launch {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy
  int top_k = 0;             // keep the k most probable tokens (0 = all)
  double top_p = 1.0;        // then the smallest most-probable set with probability >= top_p (1 = all)
  uint64_t seed = 0;
};

// Throws core::Error naming the flag (--temperature, --top-k, --top-p) of a bad value.
void check_sampling(const SamplingOptions& o);

// The largest logit's id (the lowest id among equal ones). logits: (V).
int32_t argmax_token(const float* logits, int V);

// The probability of every token under `o` (after temperature, top-k, top-p; sums to 1;
// temperature 0 puts 1 on argmax_token). logits: (V). What sample_token draws from.
std::vector<double> sampling_distribution(const float* logits, int V, const SamplingOptions& o);

// The token of draw number `draw` (e.g. the generated token's index): argmax_token at
// temperature 0, else a draw from sampling_distribution with uniform01_f64(seed, stream,
// draw). Throws on non-finite logits.
int32_t sample_token(const float* logits, int V, const SamplingOptions& o, uint64_t draw);

}  // namespace mt::launch
