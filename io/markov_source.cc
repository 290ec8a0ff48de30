// What: MarkovSource: tables, stationary distribution, entropies, sampling.
// A context c encodes the last k tokens as c = x_{t-k} * V^{k-1} + ... + x_{t-1}; the next
// context after token y is (c * V + y) mod V^k.
#include "io/markov_source.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"

namespace mt::io {

namespace {
constexpr uint64_t kStreamTable = 0x7461626c65ull;    // "table"
constexpr uint64_t kStreamSample = 0x73616d706c65ull; // "sample"

double entropy_of(const double* p, int64_t n) {
  double h = 0;
  for (int64_t i = 0; i < n; ++i)
    if (p[i] > 0) h -= p[i] * std::log(p[i]);
  return h;
}
}  // namespace

MarkovSource::MarkovSource(int vocab, int order, double sharpness, uint64_t seed)
    : V_(vocab), k_(order), seed_(seed) {
  MT_CHECK(vocab >= 2 && order >= 1, "Markov source needs vocab >= 2 and order >= 1");
  n_ctx_ = 1;
  for (int i = 0; i < k_; ++i) n_ctx_ *= V_;
  probs_.resize(n_ctx_ * V_);
  cdf_.resize(n_ctx_ * V_);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n_ctx_; ++c) {
    double* p = &probs_[c * V_];
    double mx = -1e300;
    for (int j = 0; j < V_; ++j) {
      p[j] = sharpness * core::normal01(seed_, kStreamTable, static_cast<uint64_t>(c * V_ + j));
      mx = std::max(mx, p[j]);
    }
    double s = 0;
    for (int j = 0; j < V_; ++j) s += (p[j] = std::exp(p[j] - mx));
    double acc = 0;
    for (int j = 0; j < V_; ++j) {
      p[j] /= s;
      acc += p[j];
      cdf_[c * V_ + j] = acc;
    }
    cdf_[c * V_ + V_ - 1] = 1.0;
  }
  // Stationary distribution over contexts by power iteration (the chain is irreducible and
  // aperiodic: every transition has positive probability).
  std::vector<double> pi(n_ctx_, 1.0 / n_ctx_), next(n_ctx_);
  for (int it = 0; it < 100000; ++it) {
    std::fill(next.begin(), next.end(), 0.0);
    for (int64_t c = 0; c < n_ctx_; ++c) {
      const int64_t base = (c * V_) % n_ctx_;
      for (int y = 0; y < V_; ++y) next[base + y] += pi[c] * probs_[c * V_ + y];
    }
    double diff = 0;
    for (int64_t c = 0; c < n_ctx_; ++c) diff += std::fabs(next[c] - pi[c]);
    pi.swap(next);
    if (diff < 1e-14) break;
  }
  stat_cdf_.resize(n_ctx_);
  double acc = 0;
  rate_ = 0;
  for (int64_t c = 0; c < n_ctx_; ++c) {
    acc += pi[c];
    stat_cdf_[c] = acc;
    rate_ += pi[c] * entropy_of(&probs_[c * V_], V_);
  }
  for (auto& v : stat_cdf_) v /= acc;
  // Joint entropies of the first m tokens of a stationary window, m = 1..k, from marginals
  // of pi over its leading tokens: H(X_j | X_<j) = H(X_0..X_j) - H(X_0..X_{j-1}).
  std::vector<double> joint_h(k_ + 1, 0.0);
  for (int m = 1; m <= k_; ++m) {
    int64_t n_m = 1;
    for (int i = 0; i < m; ++i) n_m *= V_;
    const int64_t div = n_ctx_ / n_m;  // leading m tokens of context c = c / V^(k-m)
    std::vector<double> marg(n_m, 0.0);
    for (int64_t c = 0; c < n_ctx_; ++c) marg[c / div] += pi[c];
    joint_h[m] = entropy_of(marg.data(), n_m);
  }
  prefix_h_.resize(k_);
  for (int j = 0; j < k_; ++j) prefix_h_[j] = joint_h[j + 1] - joint_h[j];
}

std::optional<double> MarkovSource::entropy_floor(int T) const {
  // Targets are tokens 1..T of a window starting in the stationary distribution; the target
  // at position j is predicted from tokens 0..j-1, so it costs H(X_j | X_<j): prefix_h_[j] for
  // j < k, the entropy rate after that.
  double total = 0;
  for (int j = 1; j <= T; ++j) total += j < k_ ? prefix_h_[j] : rate_;
  return total / T;
}

void MarkovSource::sample(Split split, uint64_t index, int T, int32_t* out) const {
  // One Philox stream per (split, sample); position p draws uniform index p.
  const uint64_t stream = kStreamSample ^ (static_cast<uint64_t>(split) << 62) ^ index;
  const uint64_t key = seed_ * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(split) + 1;
  double u = core::uniform01_f64(key, stream, 0);
  int64_t ctx = std::lower_bound(stat_cdf_.begin(), stat_cdf_.end(), u) - stat_cdf_.begin();
  ctx = std::min(ctx, n_ctx_ - 1);
  // write the initial window's tokens, most significant first
  int64_t c = ctx;
  for (int i = k_ - 1; i >= 0; --i) {
    if (i <= T) out[i] = static_cast<int32_t>(c % V_);
    c /= V_;
  }
  for (int p = k_; p <= T; ++p) {
    u = core::uniform01_f64(key, stream, static_cast<uint64_t>(p));
    const double* cdf = &cdf_[ctx * V_];
    int y = static_cast<int>(std::lower_bound(cdf, cdf + V_, u) - cdf);
    y = std::min(y, V_ - 1);
    out[p] = y;
    ctx = (ctx * V_ + y) % n_ctx_;
  }
}

std::string MarkovSource::describe() const {
  return fmt::format("synthetic Markov language: vocab {}, order {}, entropy rate {:.4f} nats/token", V_,
                     k_, rate_);
}

}  // namespace mt::io
