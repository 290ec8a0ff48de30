// What: Optimizer and learning_rate (see optimizer.h).
#include "parallel/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::parallel {

double learning_rate(const core::OptimConfig& o, int64_t step, int64_t total_steps) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) return o.lr * (step + 1) / o.warmup_steps;
  if (o.schedule == "constant") return o.lr;
  const double min_lr = o.lr * o.min_lr_ratio;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - o.warmup_steps);
  const double progress = std::clamp(static_cast<double>(step - o.warmup_steps) / decay_steps, 0.0, 1.0);
  return min_lr + 0.5 * (o.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

Optimizer::Optimizer(const core::OptimConfig& cfg, const std::vector<ParamInfo>& params,
                     const std::vector<std::pair<int64_t, int64_t>>& ranges)
    : cfg_(cfg) {
  int64_t state = 0;
  for (const auto& [begin, end] : ranges) {
    MT_CHECK(begin >= 0 && begin <= end, "bad optimizer range [{}, {})", begin, end);
    for (const auto& p : params) {
      const int64_t b = std::max(begin, p.offset), e = std::min(end, p.offset + p.numel);
      if (b >= e) continue;
      auto& segs = segments_;
      if (!segs.empty() && segs.back().end == b && segs.back().decay == p.weight_decay) {
        segs.back().end = e;  // merge neighbours with the same decay
      } else {
        segs.push_back({b, e, state, p.weight_decay});
      }
      state += e - b;
    }
  }
  m_.assign(state, 0.0f);
  if (cfg.name == "adamw") v_.assign(state, 0.0f);
}

void Optimizer::step(float* params, const float* grads, float lr, int64_t t) {
  namespace k = mt::kernels::cpu;
  for (const auto& s : segments_) {
    const int64_t n = s.end - s.begin;
    const float wd = s.decay ? static_cast<float>(cfg_.weight_decay) : 0.0f;
    float* m = m_.data() + s.state;
    if (cfg_.name == "adamw") {
      k::adamw_update(params + s.begin, grads + s.begin, m, v_.data() + s.state, n, lr,
                      static_cast<float>(cfg_.beta1), static_cast<float>(cfg_.beta2),
                      static_cast<float>(cfg_.eps), wd, t);
    } else {
      k::sgd_update(params + s.begin, grads + s.begin, m, n, lr, static_cast<float>(cfg_.momentum), wd);
    }
  }
}

}  // namespace mt::parallel
