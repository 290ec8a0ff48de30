// What: Optimizer and learning_rate (see optimizer.h).
#include "parallel/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace mt::parallel {

double learning_rate(const core::OptimConfig& o, int64_t step, int64_t total_steps) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) return o.lr * (step + 1) / o.warmup_steps;
  if (o.schedule == "constant") return o.lr;
  const double min_lr = o.lr * o.min_lr_ratio;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - o.warmup_steps);
  const double progress = std::clamp(static_cast<double>(step - o.warmup_steps) / decay_steps, 0.0, 1.0);
  return min_lr + 0.5 * (o.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

std::vector<std::pair<int64_t, int64_t>> state_segments(const std::vector<ParamInfo>& params,
                                                        const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  std::vector<std::pair<int64_t, int64_t>> v;
  for (const auto& [begin, end] : ranges) {
    for (const auto& p : params) {
      const int64_t b = std::max(begin, p.offset), e = std::min(end, p.offset + p.numel);
      if (b < e) v.push_back({b, e});
    }
  }
  return v;
}

Optimizer::Optimizer(const core::OptimConfig& cfg, const std::vector<ParamInfo>& params,
                     const std::vector<std::pair<int64_t, int64_t>>& ranges, kernels::Ops* ops)
    : cfg_(cfg), ops_(ops ? ops : &kernels::cpu_ops()) {
  ranges_ = ranges;
  int64_t state = 0;
  for (size_t k = 0; k < ranges.size(); ++k) {
    const auto [begin, end] = ranges[k];
    MT_CHECK(begin >= 0 && begin <= end, "bad optimizer range [{}, {})", begin, end);
    for (const auto& p : params) {
      const int64_t b = std::max(begin, p.offset), e = std::min(end, p.offset + p.numel);
      if (b >= e) continue;
      auto& segs = segments_;
      if (!segs.empty() && segs.back().end == b && segs.back().decay == p.weight_decay &&
          segs.back().range == static_cast<int>(k)) {
        segs.back().end = e;  // merge neighbours with the same decay
      } else {
        segs.push_back({b, e, state, p.weight_decay, static_cast<int>(k)});
      }
      state += e - b;
    }
  }
  num_state_ = state;
  core::Device& dev = ops_->device();
  core::MemoryScope scope(core::MemCat::Optimizer);
  m_ = core::Tensor::zeros({state}, core::DType::F32, dev);
  if (cfg.name == "adamw") v_ = core::Tensor::zeros({state}, core::DType::F32, dev);
}

void Optimizer::step(float* params, void* working, const float* grads, float lr, int64_t t) {
  const int64_t wsize = static_cast<int64_t>(core::dtype_size(ops_->working_dtype()));
  std::vector<RangeData> data;
  for (const auto& [b, e] : ranges_)
    data.push_back({params + b, working ? static_cast<char*>(working) + b * wsize : nullptr, const_cast<float*>(grads) + b});
  step(data, lr, t);
}

void Optimizer::step(const std::vector<RangeData>& data, float lr, int64_t t) {
  MT_CHECK(data.size() == ranges_.size(), "optimizer step: {} ranges of data for {} owned ranges", data.size(),
           ranges_.size());
  const int64_t wsize = static_cast<int64_t>(core::dtype_size(ops_->working_dtype()));
  for (const auto& s : segments_) {
    const int64_t n = s.end - s.begin;
    const float wd = s.decay ? static_cast<float>(cfg_.weight_decay) : 0.0f;
    float* m = m_.f32() + s.state;
    const RangeData& d = data[static_cast<size_t>(s.range)];
    const int64_t at = s.begin - ranges_[static_cast<size_t>(s.range)].first;  // within the range
    void* w = d.working ? static_cast<char*>(d.working) + at * wsize : nullptr;
    if (cfg_.name == "adamw") {
      ops_->adamw_update(d.params + at, w, d.grads + at, m, v_.f32() + s.state, n, lr,
                         static_cast<float>(cfg_.beta1), static_cast<float>(cfg_.beta2),
                         static_cast<float>(cfg_.eps), wd, t);
    } else {
      ops_->sgd_update(d.params + at, w, d.grads + at, m, n, lr, static_cast<float>(cfg_.momentum), wd);
    }
  }
}

std::vector<float> Optimizer::state_m_host() const {
  std::vector<float> h(static_cast<size_t>(num_state_));
  ops_->device().copy(h.data(), m_.raw(), h.size() * sizeof(float));
  return h;
}

std::vector<float> Optimizer::state_v_host() const {
  if (!has_v()) return {};
  std::vector<float> h(static_cast<size_t>(num_state_));
  ops_->device().copy(h.data(), v_.raw(), h.size() * sizeof(float));
  return h;
}

void Optimizer::load_state(const std::vector<float>& m, const std::vector<float>& v) {
  MT_CHECK(static_cast<int64_t>(m.size()) == num_state_ && (!has_v() || static_cast<int64_t>(v.size()) == num_state_),
           "optimizer state of {} / {} elements does not match this rank's {}", m.size(), v.size(), num_state_);
  ops_->device().copy(m_.raw(), m.data(), m.size() * sizeof(float));
  if (has_v()) ops_->device().copy(v_.raw(), v.data(), v.size() * sizeof(float));
}

}  // namespace mt::parallel
