// What: split_layers and stage_layers (see stages.h).
#include "parallel/pipeline/stages.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace mt::parallel {

namespace {

// The cost rule (training FLOPs, 6 per weight element per token, up to the common factor of
// tokens): a block costs 6 x the elements of its 2-D weights plus attention's 12 x n_embd x
// seq_len (scores and mixing, the same for every block); the head costs 6 x its 2-D weight
// (the spec with layer == n_layer and a 2-D shape, else the embedding it is tied to, the spec
// with tied_head) and counts on the last stage; the embedding is a lookup and counts 0 on the
// first. Biases and norms are ignored.
struct Costs {
  std::vector<double> block;
  double head = 0;
};

Costs model_costs(const Architecture& arch) {
  const auto& m = arch.config();
  Costs c;
  c.block.assign(static_cast<size_t>(m.n_layer), 12.0 * m.n_embd * m.seq_len);
  double tied = 0;
  bool has_head = false;
  for (const auto& s : arch.param_specs()) {
    const double n = static_cast<double>(core::shape_numel(s.full_shape));
    if (s.full_shape.size() != 2) continue;
    if (s.layer >= 0 && s.layer < m.n_layer) c.block[static_cast<size_t>(s.layer)] += 6.0 * n;
    else if (s.layer == m.n_layer) c.head += 6.0 * n, has_head = true;
    if (s.tied_head) tied = 6.0 * n;
  }
  if (!has_head) c.head = tied;
  return c;
}

// Contiguous split of the blocks into pp stages (>= 1 block each), the head added to the last
// stage: first the least possible largest stage cost B (exact dynamic programme over (stages,
// blocks), O(pp n^2)), then, among the splits whose every stage costs <= B, the one with the
// least sum of squared stage costs (the most even), by the same programme.
std::vector<int> balanced_counts(const Costs& c, int pp) {
  const int n = static_cast<int>(c.block.size());
  const size_t N = static_cast<size_t>(n) + 1, P = static_cast<size_t>(pp) + 1;
  std::vector<double> pre(N, 0);
  for (size_t i = 0; i < c.block.size(); ++i) pre[i + 1] = pre[i] + c.block[i];
  auto seg = [&](int a, int b) { return pre[static_cast<size_t>(b)] - pre[static_cast<size_t>(a)] + (b == n ? c.head : 0.0); };
  const double inf = std::numeric_limits<double>::infinity();
  // best[s][i]: the objective over the first i blocks in s stages; cut[s][i]: where stage s starts
  auto solve = [&](bool minmax, double bound, std::vector<std::vector<int>>* cut) {
    std::vector<std::vector<double>> best(P, std::vector<double>(N, inf));
    best[0][0] = 0;
    for (int s = 1; s <= pp; ++s)
      for (int i = s; i <= n - (pp - s); ++i)
        for (int j = s - 1; j < i; ++j) {  // stage s holds blocks [j, i)
          const double x = seg(j, i), prev = best[static_cast<size_t>(s) - 1][static_cast<size_t>(j)];
          if (prev == inf || (!minmax && x > bound)) continue;
          const double v = minmax ? std::max(prev, x) : prev + x * x;
          if (v < best[static_cast<size_t>(s)][static_cast<size_t>(i)]) {
            best[static_cast<size_t>(s)][static_cast<size_t>(i)] = v;
            if (cut) (*cut)[static_cast<size_t>(s)][static_cast<size_t>(i)] = j;
          }
        }
    return best[static_cast<size_t>(pp)][static_cast<size_t>(n)];
  };
  const double bound = solve(true, 0, nullptr);
  std::vector<std::vector<int>> cut(P, std::vector<int>(N, 0));
  solve(false, bound * (1 + 1e-12), &cut);
  std::vector<int> counts(static_cast<size_t>(pp));
  for (int s = pp, i = n; s >= 1; --s) {
    const int j = cut[static_cast<size_t>(s)][static_cast<size_t>(i)];
    counts[static_cast<size_t>(s) - 1] = i - j;
    i = j;
  }
  return counts;
}

core::Error stage_error(const std::string& msg, const char* key, const std::string& hint) {
  return core::Error(msg).with_yaml(key).with_hint(hint);
}

}  // namespace

std::vector<std::pair<int, int>> split_layers(const Architecture& arch, int pp, int virtual_stages,
                                              const std::vector<int>& pp_layers) {
  const int n = arch.config().n_layer;
  if (pp < 1) throw stage_error(fmt::format("parallel.pp = {} must be at least 1", pp), "parallel.pp", "set parallel.pp=1 or more");
  if (virtual_stages < 1) {
    throw stage_error(fmt::format("parallel.pp_virtual = {} must be at least 1", virtual_stages), "parallel.pp_virtual",
                      "set parallel.pp_virtual=1, or 2 or more with parallel.pp_schedule=interleaved");
  }
  const int stages = pp * virtual_stages;
  if (stages > n) {
    throw stage_error(fmt::format("parallel.pp = {}{} gives {} pipeline stages but model.n_layer = {}: every stage "
                                  "needs at least one block", pp,
                                  virtual_stages > 1 ? fmt::format(" x parallel.pp_virtual = {}", virtual_stages) : "",
                                  stages, n),
                      virtual_stages > 1 ? "parallel.pp_virtual" : "parallel.pp",
                      fmt::format("use parallel.pp <= {} (x parallel.pp_virtual <= model.n_layer)", n));
  }
  std::vector<int> counts;
  if (!pp_layers.empty()) {
    if (virtual_stages != 1) {
      throw stage_error(fmt::format("parallel.pp_layers is set but parallel.pp_virtual = {}: interleaved stages are "
                                    "equal splits", virtual_stages),
                        "parallel.pp_layers", "set parallel.pp_layers=[] with parallel.pp_schedule=interleaved");
    }
    std::string list;
    for (int c : pp_layers) list += (list.empty() ? "" : ", ") + std::to_string(c);
    if (static_cast<int>(pp_layers.size()) != pp) {
      throw stage_error(fmt::format("parallel.pp_layers = [{}] has {} entries but parallel.pp = {}", list,
                                    pp_layers.size(), pp),
                        "parallel.pp_layers", "give one block count per stage, or parallel.pp_layers=[] to balance by cost");
    }
    if (*std::min_element(pp_layers.begin(), pp_layers.end()) < 1) {
      throw stage_error(fmt::format("parallel.pp_layers = [{}]: every stage needs at least one block", list),
                        "parallel.pp_layers", "give each stage 1 or more blocks");
    }
    const long long sum = std::accumulate(pp_layers.begin(), pp_layers.end(), 0LL);
    if (sum != n) {
      throw stage_error(fmt::format("parallel.pp_layers = [{}] sums to {} but model.n_layer = {}", list, sum, n),
                        "parallel.pp_layers", fmt::format("the block counts must add up to model.n_layer = {}", n));
    }
    counts = pp_layers;
  } else if (virtual_stages > 1) {
    if (n % stages != 0) {
      throw stage_error(fmt::format("parallel.pp_schedule interleaved splits model.n_layer = {} into parallel.pp x "
                                    "parallel.pp_virtual = {} x {} = {} equal virtual stages, but {} is not a "
                                    "multiple of {}", n, pp, virtual_stages, stages, n, stages),
                        "parallel.pp_virtual",
                        fmt::format("choose parallel.pp_virtual (and parallel.pp) so that pp x pp_virtual divides "
                                    "model.n_layer = {}", n));
    }
    counts.assign(static_cast<size_t>(stages), n / stages);
  } else {
    counts = balanced_counts(model_costs(arch), pp);
  }
  std::vector<std::pair<int, int>> v;
  int begin = 0;
  for (int c : counts) {
    v.emplace_back(begin, begin + c);
    begin += c;
  }
  return v;
}

StageLayers stage_layers(const std::vector<std::pair<int, int>>& vstages, int pp, int stage) {
  MT_CHECK(pp >= 1 && stage >= 0 && stage < pp && !vstages.empty() && vstages.size() % static_cast<size_t>(pp) == 0,
           "stage {} of {} with {} virtual stages", stage, pp, vstages.size());
  StageLayers st;
  if (pp == 1 && vstages.size() == 1) return st;  // the whole model
  for (size_t v = static_cast<size_t>(stage); v < vstages.size(); v += static_cast<size_t>(pp))
    st.chunks.push_back(vstages[v]);
  st.embed = stage == 0;
  st.head = stage == pp - 1;
  return st;
}

}  // namespace mt::parallel
