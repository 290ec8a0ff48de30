// What: the knowledge-distillation loss over vocabulary-sliced logits (train.distill), in
// pieces like the vocab-parallel cross-entropy (cross_entropy.cc), so each tensor-parallel
// rank works on its columns [v_start, v_start + Vl) of the student logits s and the teacher
// logits t (same vocabulary slice). For one token n, temperature T, mixing weight a:
//   p = softmax(t / T), q = softmax(s / T)
//   KL_n = sum_v p_v (log p_v - log q_v)
//        = (1/T) sum_v p_v (t_v - s_v) - (M_t/T + log S_t) + (M_s/T + log S_s)
//   with M_s, M_t the GLOBAL row maxima and S_x = sum_v exp((x_v - M_x) / T)
//   loss_n = (1 - a) CE_n + a T^2 KL_n
//   dloss_n/ds_v = (1 - a) (softmax(s)_v - [v == y]) + a T (q_v - p_v)
// The pieces:
//   1) xent_row_max on s and on t      -> caller: all-reduce(max)
//   2) kd_sums: local S_s, S_t and sum_v exp((t_v - M_t)/T) (t_v - s_v)   -> caller: all-reduce(sum)
//   3) kd_loss: KL_n, and loss_n from the cross-entropy losses CE_n
//   backward: kd_backward rescales xent_backward's (softmax - onehot) dloss_n and adds the KL term
// Why: the teacher's distribution carries more than the one-hot target (Hinton et al. 2015);
// the T^2 keeps the soft term's gradient scale independent of T. Padding columns stay out of
// every sum and keep a zero gradient. Sums accumulate in double in a fixed order per row.
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {
constexpr int64_t kParallelMinElems = 1 << 14;
}  // namespace

void kd_sums(float* sums, const float* s, const float* t, const float* smax, const float* tmax, int N, int Vl,
             int v_valid, float temperature) {
  MT_CHECK(N >= 0 && v_valid >= 0 && v_valid <= Vl && temperature > 0, "kd_sums: bad arguments N={} Vl={} v_valid={} T={}",
           N, Vl, v_valid, temperature);
  const double inv_t = 1.0 / static_cast<double>(temperature);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * v_valid >= kParallelMinElems)
  for (int n = 0; n < N; n++) {
    const float* sr = s + static_cast<int64_t>(n) * Vl;
    const float* tr = t + static_cast<int64_t>(n) * Vl;
    double ss = 0, st = 0, cross = 0;
    for (int v = 0; v < v_valid; v++) {
      ss += std::exp((static_cast<double>(sr[v]) - smax[n]) * inv_t);
      const double e = std::exp((static_cast<double>(tr[v]) - tmax[n]) * inv_t);
      st += e;
      cross += e * (static_cast<double>(tr[v]) - sr[v]);
    }
    sums[n] = static_cast<float>(ss);
    sums[N + n] = static_cast<float>(st);
    sums[2 * static_cast<int64_t>(N) + n] = static_cast<float>(cross);
  }
}

void kd_loss(float* losses, float* kl, const float* ce, const float* sums, const float* smax, const float* tmax,
             int N, float alpha, float temperature) {
  MT_CHECK(N >= 0 && temperature > 0, "kd_loss: bad arguments N={} T={}", N, temperature);
  const double T = temperature, a = alpha;
  for (int n = 0; n < N; n++) {
    const double ss = sums[n], st = sums[N + n], cross = sums[2 * static_cast<int64_t>(N) + n];
    const double k = cross / (st * T) - (tmax[n] / T + std::log(st)) + (smax[n] / T + std::log(ss));
    kl[n] = static_cast<float>(k);
    losses[n] = static_cast<float>((1.0 - a) * ce[n] + a * T * T * k);
  }
}

void kd_backward(float* dlogits, const float* s, const float* t, const float* smax, const float* tmax,
                 const float* sums, const float* dloss, int N, int Vl, int v_valid, float alpha, float temperature) {
  MT_CHECK(N >= 0 && v_valid >= 0 && v_valid <= Vl && temperature > 0, "kd_backward: bad arguments");
  const float inv_t = 1.0f / temperature, ce_w = 1.0f - alpha, kd_w = alpha * temperature;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * Vl >= kParallelMinElems)
  for (int n = 0; n < N; n++) {
    const float* sr = s + static_cast<int64_t>(n) * Vl;
    const float* tr = t + static_cast<int64_t>(n) * Vl;
    float* dz = dlogits + static_cast<int64_t>(n) * Vl;
    const float inv_ss = 1.0f / sums[n], inv_st = 1.0f / sums[N + n];
    const float d = dloss != nullptr ? dloss[n] : 1.0f;
    for (int v = 0; v < v_valid; v++) {
      const float q = std::exp((sr[v] - smax[n]) * inv_t) * inv_ss;
      const float p = std::exp((tr[v] - tmax[n]) * inv_t) * inv_st;
      dz[v] = ce_w * dz[v] + kd_w * (q - p) * d;
    }
  }
}

}  // namespace mt::kernels::cpu
