// What: the sampler (see sampler.h). Probabilities in double: p_i = exp((z_i - max z) / T),
// tokens ordered by logit (descending, ties by id), the top-k prefix kept, then the shortest
// prefix whose probability (renormalised over the top-k) reaches top_p, then renormalised.
// A draw walks that prefix's cumulative sum with u in [0, 1).
#include "launch/infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "core/error.h"
#include "core/rng.h"

namespace mt::launch {

namespace {
// The RNG stream of generation draws (core/rng.h: (seed, stream, index)).
const uint64_t kSampleStream = core::hash_string("generate.sample");

// The kept tokens in draw order and their (unnormalised) probabilities.
struct Nucleus {
  std::vector<int32_t> ids;
  std::vector<double> p;
  double total = 0;
};

Nucleus nucleus(const float* logits, int V, const SamplingOptions& o) {
  MT_CHECK(V >= 1, "sampling from {} logits", V);
  for (int v = 0; v < V; ++v) {
    if (!std::isfinite(logits[v])) {
      throw core::Error(fmt::format("logit of token {} is {}: the model produced non-finite values", v, logits[v]));
    }
  }
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  const auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const int k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  if (k < V) {
    std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
    order.resize(static_cast<size_t>(k));
  } else {
    std::sort(order.begin(), order.end(), before);
  }
  Nucleus n;
  const double mx = logits[order[0]];
  std::vector<double> p(order.size());
  double sum = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    p[i] = std::exp((static_cast<double>(logits[order[i]]) - mx) / o.temperature);
    sum += p[i];
  }
  // the shortest prefix whose share of the top-k mass reaches top_p (at least one token)
  double cum = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i > 0 && cum >= o.top_p * sum) break;
    n.ids.push_back(order[i]);
    n.p.push_back(p[i]);
    cum += p[i];
  }
  n.total = cum;
  return n;
}
}  // namespace

void check_sampling(const SamplingOptions& o) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw core::Error(fmt::format("--temperature {} must be >= 0 (0 = greedy)", o.temperature));
  if (o.top_k < 0) throw core::Error(fmt::format("--top-k {} must be >= 0 (0 = no limit)", o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) throw core::Error(fmt::format("--top-p {} must be in (0, 1]", o.top_p));
}

int32_t argmax_token(const float* logits, int V) {
  MT_CHECK(V >= 1, "argmax of {} logits", V);
  int32_t best = 0;
  for (int v = 1; v < V; ++v)
    if (logits[v] > logits[best]) best = v;  // strict: ties keep the lowest id
  return best;
}

std::vector<double> sampling_distribution(const float* logits, int V, const SamplingOptions& o) {
  check_sampling(o);
  std::vector<double> dist(static_cast<size_t>(V), 0.0);
  if (o.temperature == 0) {
    dist[static_cast<size_t>(argmax_token(logits, V))] = 1.0;
    return dist;
  }
  const Nucleus n = nucleus(logits, V, o);
  for (size_t i = 0; i < n.ids.size(); ++i) dist[static_cast<size_t>(n.ids[i])] = n.p[i] / n.total;
  return dist;
}

int32_t sample_token(const float* logits, int V, const SamplingOptions& o, uint64_t draw) {
  if (o.temperature == 0) {
    for (int v = 0; v < V; ++v)
      if (std::isnan(logits[v])) throw core::Error(fmt::format("logit of token {} is NaN", v));
    return argmax_token(logits, V);
  }
  const Nucleus n = nucleus(logits, V, o);
  const double u = core::uniform01_f64(o.seed, kSampleStream, draw) * n.total;
  double cum = 0;
  for (size_t i = 0; i < n.ids.size(); ++i) {
    cum += n.p[i];
    if (u < cum) return n.ids[i];
  }
  return n.ids.back();  // u rounded up to the total
}

}  // namespace mt::launch
