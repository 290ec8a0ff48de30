// What: a synthetic language with a known answer: a seeded random Markov source of order k
// over the model's vocabulary. Each context (the previous k tokens) has a next-token
// distribution softmax(sharpness * z), z ~ N(0, 1). The generator computes the stationary
// distribution of contexts exactly (power iteration) and from it the entropy rate and the
// exact conditional entropies of the first k tokens, so the best achievable loss of a
// sequence model on seq_len tokens is known: the "entropy floor" reported beside eval loss.
// Why: anyone can see how close training got to the optimum, with no dataset download.
#pragma once

#include <vector>

#include "io/data_source.h"

namespace mt::io {

class MarkovSource final : public DataSource {
 public:
  MarkovSource(int vocab, int order, double sharpness, uint64_t seed);

  int vocab_size() const override { return V_; }
  void sample(Split split, uint64_t index, int seq_len, int32_t* out) const override;
  std::optional<double> entropy_floor(int seq_len) const override;
  std::string describe() const override;

  double entropy_rate() const { return rate_; }        // H(X_t | previous k tokens), nats
  // H(X_j | X_0..X_{j-1}) for j = 0..order-1 (j = 0: entropy of one token), nats
  const std::vector<double>& prefix_entropies() const { return prefix_h_; }
  double transition_prob(int64_t context, int next) const { return probs_[context * V_ + next]; }
  int64_t num_contexts() const { return n_ctx_; }

 private:
  int V_, k_;
  uint64_t seed_;
  int64_t n_ctx_;
  std::vector<double> probs_;     // (n_ctx, V) next-token probabilities
  std::vector<double> cdf_;       // (n_ctx, V) cumulative
  std::vector<double> stat_cdf_;  // (n_ctx) cumulative stationary context distribution
  double rate_ = 0;
  std::vector<double> prefix_h_;
};

}  // namespace mt::io
