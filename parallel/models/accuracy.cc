// What: top-k accuracy over vocabulary-sliced logits (see accuracy.h).
#include "parallel/models/accuracy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "parallel/models/model.h"

namespace mt::parallel {

namespace {

// a ranks before b: the higher value, then the lower id
bool better(float av, int32_t ai, float bv, int32_t bi) { return av > bv || (av == bv && ai < bi); }

}  // namespace

void local_topk(const float* logits, int64_t N, int Vl, int v_start, int v_valid, int k, float* vals, int32_t* ids) {
  MT_CHECK(k >= 1 && v_valid <= Vl, "local_topk: k = {}, v_valid = {}, Vl = {}", k, v_valid, Vl);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < N; ++i) {
    float* v = vals + i * k;
    int32_t* d = ids + i * k;
    std::fill(v, v + k, ninf);
    std::fill(d, d + k, std::numeric_limits<int32_t>::max());
    const float* row = logits + i * Vl;
    for (int j = 0; j < v_valid; ++j) {
      const float x = std::isnan(row[j]) ? ninf : row[j];
      const int32_t id = v_start + j;
      if (!better(x, id, v[k - 1], d[k - 1])) continue;
      int p = k - 1;  // insertion into the sorted k
      while (p > 0 && better(x, id, v[p - 1], d[p - 1])) {
        v[p] = v[p - 1], d[p] = d[p - 1];
        --p;
      }
      v[p] = x, d[p] = id;
    }
  }
}

TopkCounts count_topk_hits(const float* vals, const int32_t* ids, int parts, int64_t N, int k, const int32_t* targets) {
  TopkCounts c;
  std::vector<int> at(static_cast<size_t>(parts));
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] < 0) continue;
    ++c.targets;
    // a k-way merge of the parts' sorted candidates, k steps
    std::fill(at.begin(), at.end(), 0);
    for (int r = 0; r < k; ++r) {
      int best = -1;
      for (int p = 0; p < parts; ++p) {
        if (at[static_cast<size_t>(p)] >= k) continue;
        const int64_t o = (static_cast<int64_t>(p) * N + i) * k + at[static_cast<size_t>(p)];
        if (best < 0) {
          best = p;
          continue;
        }
        const int64_t b = (static_cast<int64_t>(best) * N + i) * k + at[static_cast<size_t>(best)];
        if (better(vals[o], ids[o], vals[b], ids[b])) best = p;
      }
      const int64_t b = (static_cast<int64_t>(best) * N + i) * k + at[static_cast<size_t>(best)]++;
      if (ids[b] == targets[i]) {
        if (r == 0) ++c.top1;
        ++c.topk;
        break;
      }
    }
  }
  return c;
}

TopkCounts head_topk_counts(Model& m, int k) {
  const Model::HeadLogits h = m.head_logits();
  if (!h.data) return {};
  const std::vector<int32_t>& targets = m.last_targets();
  MT_CHECK(static_cast<int64_t>(targets.size()) == h.N, "head_topk_counts: the last forward had no targets");
  core::Device& dev = m.device();
  const int64_t local = h.N * h.Vl;
  m.tp().host_wait();
  // the logit slice as fp32 on the host: read in place on the CPU in fp32, else a copy
  std::vector<float> host;
  const float* rows = static_cast<const float*>(h.data);
  if (dev.kind() != core::DeviceKind::CPU || m.working_dtype() != core::DType::F32) {
    host.resize(static_cast<size_t>(local));
    if (m.working_dtype() == core::DType::F32) {
      dev.copy(host.data(), h.data, host.size() * sizeof(float));
    } else {
      core::Tensor f32 = core::Tensor::empty({local}, core::DType::F32, dev);
      m.ops().cast(f32.raw(), core::DType::F32, h.data, m.working_dtype(), local);
      dev.copy(host.data(), f32.raw(), host.size() * sizeof(float));
    }
    rows = host.data();
  }
  // this rank's candidates: (N, k) values then (N, k) ids (their bits in float slots: an
  // all-gather moves bytes unchanged)
  const int64_t nk = h.N * k;
  std::vector<float> mine(static_cast<size_t>(2 * nk));
  std::vector<int32_t> ids(static_cast<size_t>(nk));
  local_topk(rows, h.N, h.Vl, h.v_start, h.v_valid, k, mine.data(), ids.data());
  std::memcpy(mine.data() + nk, ids.data(), static_cast<size_t>(nk) * sizeof(int32_t));
  const int tp = m.tp().size();
  if (tp == 1) return count_topk_hits(mine.data(), ids.data(), 1, h.N, k, targets.data());
  // the exchange on the model's (device) tp communicator: k candidates per position and rank
  core::Tensor send = core::Tensor::empty({2 * nk}, core::DType::F32, dev);
  core::Tensor recv = core::Tensor::empty({tp * 2 * nk}, core::DType::F32, dev);
  dev.copy(send.raw(), mine.data(), mine.size() * sizeof(float));
  m.tp().gather_f32(send.f32(), recv.f32(), 2 * nk);
  std::vector<float> all(static_cast<size_t>(tp * 2 * nk));
  dev.copy(all.data(), recv.raw(), all.size() * sizeof(float));
  std::vector<float> vals(static_cast<size_t>(tp * nk));
  std::vector<int32_t> all_ids(static_cast<size_t>(tp * nk));
  for (int r = 0; r < tp; ++r) {
    const float* blk = all.data() + static_cast<int64_t>(r) * 2 * nk;
    std::copy(blk, blk + nk, vals.begin() + static_cast<int64_t>(r) * nk);
    std::memcpy(all_ids.data() + static_cast<int64_t>(r) * nk, blk + nk, static_cast<size_t>(nk) * sizeof(int32_t));
  }
  return count_topk_hits(vals.data(), all_ids.data(), tp, h.N, k, targets.data());
}

}  // namespace mt::parallel
