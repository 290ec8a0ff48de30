// What: helpers and double-precision references shared by the CPU kernel tests
// (kernels_test.cc, kernels_loss_optim_test.cc): random inputs, tolerant comparisons, central
// finite differences, and naive double implementations of matmul, layernorm, GELU, causal
// attention and the vocab-sliced cross-entropy.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace mt::kernel_test {

namespace k = mt::kernels::cpu;

using VecF = std::vector<float>;
using VecD = std::vector<double>;

// ---------------------------------------------------------------- helpers
inline VecF uniform(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  VecF v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

inline VecD to_double(const VecF& v) { return VecD(v.begin(), v.end()); }

// Element-wise |got - want| <= atol + rtol * |want|; reports the first few offenders.
inline void expect_close(const VecF& got, const VecD& want, double atol, double rtol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); i++) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tol = atol + rtol * std::fabs(want[i]);
    worst = std::max(worst, err / tol);
    if (!(err <= tol)) {  // also catches NaN
      if (bad < 5) {
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i]
                      << " (|err| " << err << " > tol " << tol << ")";
      }
      bad++;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size()
                    << " elements out of tolerance (worst err/tol " << worst << ")";
}

// after - before, i.e. what a backward kernel added to a pre-filled gradient buffer.
inline VecF added(const VecF& after, const VecF& before) {
  VecF d(after.size());
  for (size_t i = 0; i < d.size(); i++) d[i] = after[i] - before[i];
  return d;
}

// Central finite differences of loss() with respect to every element of x (perturbed in place).
inline VecD fd_grad(VecD& x, const std::function<double()>& loss, double eps = 1e-4) {
  VecD g(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    const double old = x[i];
    x[i] = old + eps;
    const double lp = loss();
    x[i] = old - eps;
    const double lm = loss();
    x[i] = old;
    g[i] = (lp - lm) / (2 * eps);
  }
  return g;
}

inline double dot_all(const VecD& a, const VecF& r) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * r[i];
  return s;
}

// Gradient tolerances: float kernel vs double finite differences, values of order 1.
constexpr double kGradAtol = 5e-5;
constexpr double kGradRtol = 5e-4;

// ---------------------------------------------------------------- double references
inline VecD matmul_ref(const VecD& inp, const VecD& w, const VecD* bias, int N, int C, int OC) {
  VecD out(static_cast<size_t>(N) * OC);
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      double s = bias ? (*bias)[o] : 0.0;
      for (int c = 0; c < C; c++) s += inp[n * C + c] * w[o * C + c];
      out[n * OC + o] = s;
    }
  return out;
}

inline VecD layernorm_ref(const VecD& x, const VecD& w, const VecD& b, int N, int C, VecD* mean = nullptr,
                   VecD* rstd = nullptr) {
  VecD out(x.size());
  if (mean) mean->assign(N, 0.0);
  if (rstd) rstd->assign(N, 0.0);
  for (int n = 0; n < N; n++) {
    double m = 0.0;
    for (int c = 0; c < C; c++) m += x[n * C + c];
    m /= C;
    double var = 0.0;
    for (int c = 0; c < C; c++) var += (x[n * C + c] - m) * (x[n * C + c] - m);
    var /= C;
    const double rs = 1.0 / std::sqrt(var + 1e-5);
    for (int c = 0; c < C; c++) out[n * C + c] = (x[n * C + c] - m) * rs * w[c] + b[c];
    if (mean) (*mean)[n] = m;
    if (rstd) (*rstd)[n] = rs;
  }
  return out;
}

inline double gelu_ref(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

// Causal attention in double: out (B,T,C), att (B,NH,T,T).
inline VecD mha_ref(const VecD& qkv, const int32_t* doc, int B, int T, int C, int NH, VecD* att_out) {
  const int HS = C / NH;
  VecD out(static_cast<size_t>(B) * T * C, 0.0);
  if (att_out) att_out->assign(static_cast<size_t>(B) * NH * T * T, 0.0);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++) {
        const double* q = &qkv[(b * T + t) * 3 * C + h * HS];
        std::vector<double> score(T, 0.0);
        std::vector<bool> allowed(T, false);
        double mx = -std::numeric_limits<double>::infinity();
        for (int s = 0; s <= t; s++) {
          allowed[s] = doc == nullptr || doc[b * T + s] == doc[b * T + t];
          if (!allowed[s]) continue;
          const double* kk = &qkv[(b * T + s) * 3 * C + C + h * HS];
          double d = 0.0;
          for (int i = 0; i < HS; i++) d += q[i] * kk[i];
          score[s] = d / std::sqrt(static_cast<double>(HS));
          mx = std::max(mx, score[s]);
        }
        double sum = 0.0;
        for (int s = 0; s <= t; s++)
          if (allowed[s]) sum += std::exp(score[s] - mx);
        for (int s = 0; s <= t; s++) {
          if (!allowed[s]) continue;
          const double a = std::exp(score[s] - mx) / sum;
          if (att_out) (*att_out)[((b * NH + h) * T + t) * T + s] = a;
          const double* v = &qkv[(b * T + s) * 3 * C + 2 * C + h * HS];
          for (int i = 0; i < HS; i++) out[(b * T + t) * C + h * HS + i] += a * v[i];
        }
      }
  return out;
}

// Grouped-query attention as Hugging Face computes it: k and v of each of the NKV heads repeated
// for the NH/NKV consecutive query heads of its group (repeat_kv), then multi-head attention.
// qkv: (B, T, (NH + 2 NKV) HS); NKV = 0 means NH.
inline VecD attention_ref(const VecD& qkv, const int32_t* doc, int B, int T, int C, int NH,
                          VecD* att_out = nullptr, int NKV = 0) {
  if (NKV == 0 || NKV == NH) return mha_ref(qkv, doc, B, T, C, NH, att_out);
  const int HS = C / NH, rep = NH / NKV, W = C + 2 * NKV * HS;
  VecD full(static_cast<size_t>(B) * T * 3 * C);
  for (int n = 0; n < B * T; n++)
    for (int h = 0; h < NH; h++)
      for (int i = 0; i < HS; i++) {
        const int g = h / rep;
        full[n * 3 * C + h * HS + i] = qkv[n * W + h * HS + i];
        full[n * 3 * C + C + h * HS + i] = qkv[n * W + C + g * HS + i];
        full[n * 3 * C + 2 * C + h * HS + i] = qkv[n * W + C + NKV * HS + g * HS + i];
      }
  return mha_ref(full, doc, B, T, C, NH, att_out);
}

// Per-token cross-entropy over the valid columns of (N, Vl) logits, in double.
inline VecD xent_ref(const VecD& logits, const std::vector<int32_t>& targets, int N, int Vl, int v_valid) {
  VecD losses(N);
  for (int n = 0; n < N; n++) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int v = 0; v < v_valid; v++) mx = std::max(mx, logits[n * Vl + v]);
    double sum = 0.0;
    for (int v = 0; v < v_valid; v++) sum += std::exp(logits[n * Vl + v] - mx);
    losses[n] = std::log(sum) + mx - logits[n * Vl + targets[n]];
  }
  return losses;
}

}  // namespace mt::kernel_test
