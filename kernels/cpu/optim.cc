// What: the optimizer updates and the reductions the trainer needs around them.
//   AdamW (Loshchilov & Hutter, decoupled weight decay), step t >= 1:
//     m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//     mhat = m / (1 - b1^t);   vhat = v / (1 - b2^t)
//     p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
//   SGD with momentum (PyTorch convention, no dampening, no Nesterov):
//     buf = momentum * buf + (g + wd * p);   p -= lr * buf
//   sum_squares: sum x^2 in double (for the global gradient norm used by clipping)
//   scale_inplace: x *= s (gradient clipping, loss scaling)
// Why: reference semantics for every backend; the updates are elementwise over a flat
// (possibly ZeRO-sharded) slice of the parameters, so callers pass any contiguous range.
// Determinism: the updates are elementwise (any thread split gives the same bits). The sum of
// squares is a reduction over elements: it is cut into fixed blocks of kBlock elements, each
// block summed in double with a fixed lane order, and the block partials are added in index
// order. The block boundaries depend only on n, never on the thread count.
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {

constexpr int64_t kParallelMinElems = 1 << 15;
constexpr int64_t kBlock = 4096;  // sum_squares block: elements per partial sum
constexpr int kLanes = 8;         // partial sums inside a block (double, two AVX2 registers)

// sum of x[i]^2 over one block, in double, lanes combined in a fixed pairwise order.
inline double block_sum_squares(const float* x, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; j++) {
      const double v = x[i + j];
      acc[j] += v * v;
    }
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; j++) acc[j] += acc[j + w];
  double s = acc[0];
  for (; i < n; i++) {
    const double v = x[i];
    s += v * v;
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------- AdamW
// params, grads, m, v: (n). m and v start at zero; t is the 1-based step (bias correction).
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t t) {
  MT_CHECK(n >= 0, "adamw_update: negative size {}", n);
  MT_CHECK(t >= 1, "adamw_update: step t={} must be >= 1 (bias correction divides by 1 - beta^t)",
           t);
  // Bias corrections once per call, in double (beta2^t is close to 1 early on).
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(t)));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(t)));
  const float one_minus_b1 = 1.0f - beta1;
  const float one_minus_b2 = 1.0f - beta2;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; i++) {
    const float g = grads[i];
    const float mi = beta1 * m[i] + one_minus_b1 * g;
    const float vi = beta2 * v[i] + one_minus_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / bc1;
    const float vhat = vi / bc2;
    params[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + weight_decay * params[i]);
  }
}

// ---------------------------------------------------------------------------- SGD
// params, grads, momentum_buf: (n). The buffer starts at zero, so the first step uses
// buf = g + wd * p, as PyTorch does. momentum = 0 gives plain SGD with weight decay.
void sgd_update(float* params, const float* grads, float* momentum_buf, int64_t n, float lr,
                float momentum, float weight_decay) {
  MT_CHECK(n >= 0, "sgd_update: negative size {}", n);
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; i++) {
    const float p = params[i];
    const float d = grads[i] + weight_decay * p;
    const float buf = momentum * momentum_buf[i] + d;
    momentum_buf[i] = buf;
    params[i] = p - lr * buf;
  }
}

// ---------------------------------------------------------------------------- reductions
// x: (n). Returns sum_i x[i]^2 in double, bitwise identical for any thread count.
double sum_squares(const float* x, int64_t n) {
  MT_CHECK(n >= 0, "sum_squares: negative size {}", n);
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  if (nblocks <= 1) return block_sum_squares(x, n);
  std::vector<double> partial(static_cast<size_t>(nblocks));
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t b = 0; b < nblocks; b++) {
    const int64_t lo = b * kBlock;
    const int64_t len = n - lo < kBlock ? n - lo : kBlock;
    partial[static_cast<size_t>(b)] = block_sum_squares(x + lo, len);
  }
  double total = 0.0;
  for (int64_t b = 0; b < nblocks; b++) total += partial[static_cast<size_t>(b)];
  return total;
}

// y: (n) += x: (n)
void add_inplace(float* y, const float* x, int64_t n) {
  MT_CHECK(n >= 0, "add_inplace: negative size {}", n);
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

// x: (n) *= s
void scale_inplace(float* x, int64_t n, float s) {
  MT_CHECK(n >= 0, "scale_inplace: negative size {}", n);
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; i++) x[i] *= s;
}

}  // namespace mt::kernels::cpu
