// What: softmax cross-entropy over the vocabulary, computed in pieces so that the vocabulary
// can be split over tensor-parallel ranks (vocab-parallel cross-entropy, as in Megatron-LM).
// For one token n with logits z over the full vocabulary and target y:
//   loss_n = log(sum_v exp(z_v - M)) + M - z_y,          M = max_v z_v
//   dloss_n/dz_v = softmax(z)_v - [v == y]
// A rank holds the logit columns [v_start, v_start + Vl) of which the first v_valid are real
// tokens (the rest pads the vocabulary to a multiple of the TP size). The pieces:
//   1) xent_row_max      local max M_r         -> caller: all-reduce(max)  -> M
//   2) xent_sum_exp      local sum exp(z - M)  -> caller: all-reduce(sum)  -> S
//   3) xent_target_logit z_y if owned, else 0  -> caller: all-reduce(sum)  -> z_y
//   4) xent_loss         log(S) + M - z_y
//   backward: xent_backward writes (softmax - onehot) * dloss on the local columns
// With one rank owning everything, no all-reduce is needed: softmax_cross_entropy_forward.
// Why: reference semantics for every backend; the max shift keeps exp() from overflowing.
// Padding columns never enter the max or the sum and get exactly zero gradient, so padding
// the vocabulary changes neither the loss nor the training.
// Parallelism and determinism: every piece is independent per row n and split over rows;
// within a row the reduction order is fixed (kLanes partial results combined in a fixed order).
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {

constexpr int kLanes = 8;
// Rows are long (Vl up to ~50k); parallelise as soon as there is more than a little work.
constexpr int64_t kParallelMinElems = 1 << 14;

void check_shapes(const char* fn, int N, int Vl, int v_valid) {
  MT_CHECK(N >= 0 && Vl >= 0 && v_valid >= 0 && v_valid <= Vl,
           "{}: bad shape N={} Vl={} v_valid={}", fn, N, Vl, v_valid);
}

// max over x[0..n), -inf for n == 0. Eight independent running maxima (instruction-level
// parallelism); max is exact, so the lane split does not change the result.
inline float lane_max(const float* x, int n) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float acc[kLanes];
  for (int j = 0; j < kLanes; j++) acc[j] = neg_inf;
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; j++) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
  for (; i < n; i++) acc[0] = x[i] > acc[0] ? x[i] : acc[0];
  float m = acc[0];
  for (int j = 1; j < kLanes; j++) m = acc[j] > m ? acc[j] : m;
  return m;
}

// sum over x[0..n) of exp(x - shift), accumulated in double in kLanes lanes combined in
// index order (a fixed order, and no precision lost over ~50k terms).
inline double lane_sum_exp(const float* x, float shift, int n) {
  double acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; j++) acc[j] += static_cast<double>(std::exp(x[i + j] - shift));
  for (; i < n; i++) acc[0] += static_cast<double>(std::exp(x[i] - shift));
  double s = 0.0;
  for (int j = 0; j < kLanes; j++) s += acc[j];
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------- 1) row max
// rowmax: (N) written;  logits: (N, Vl)
void xent_row_max(float* rowmax, const float* logits, int N, int Vl, int v_valid) {
  check_shapes("xent_row_max", N, Vl, v_valid);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * v_valid >= kParallelMinElems)
  for (int n = 0; n < N; n++) {
    rowmax[n] = lane_max(logits + static_cast<int64_t>(n) * Vl, v_valid);
  }
}

// ---------------------------------------------------------------------------- 2) sum of exp
// sumexp: (N) written;  logits: (N, Vl);  rowmax: (N) the GLOBAL row max
void xent_sum_exp(float* sumexp, const float* logits, const float* rowmax, int N, int Vl,
                  int v_valid) {
  check_shapes("xent_sum_exp", N, Vl, v_valid);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * v_valid >= kParallelMinElems)
  for (int n = 0; n < N; n++) {
    sumexp[n] = static_cast<float>(
        lane_sum_exp(logits + static_cast<int64_t>(n) * Vl, rowmax[n], v_valid));
  }
}

// ---------------------------------------------------------------------------- 3) target logit
// target_logit: (N) written;  logits: (N, Vl);  targets: (N) global token ids
void xent_target_logit(float* target_logit, const float* logits, const int32_t* targets, int N,
                       int Vl, int v_start, int v_valid) {
  check_shapes("xent_target_logit", N, Vl, v_valid);
  for (int n = 0; n < N; n++) {  // O(N): not worth a parallel region
    const int64_t r = static_cast<int64_t>(targets[n]) - v_start;
    target_logit[n] = (r >= 0 && r < v_valid) ? logits[static_cast<int64_t>(n) * Vl + r] : 0.0f;
  }
}

// ---------------------------------------------------------------------------- 4) loss
// losses: (N) written = log(sumexp) + rowmax - target_logit, all three GLOBAL values.
// `losses` may alias `target_logit` (each element is read before it is written).
void xent_loss(float* losses, const float* rowmax, const float* sumexp, const float* target_logit,
               int N) {
  MT_CHECK(N >= 0, "xent_loss: negative N={}", N);
  for (int n = 0; n < N; n++) {
    const double tl = target_logit[n];
    losses[n] = static_cast<float>(std::log(static_cast<double>(sumexp[n])) +
                                   static_cast<double>(rowmax[n]) - tl);
  }
}

// ---------------------------------------------------------------------------- backward
// dlogits: (N, Vl) written (overwrites): (softmax - onehot(target)) * dloss[n] on the valid
//          columns, exactly 0 on the padding columns
// logits:  (N, Vl);  rowmax, sumexp: (N) GLOBAL values from the forward
// targets: (N) global token ids;  dloss: (N) weight of each token's loss (e.g. 1/N for a mean;
//          null is treated as all ones)
void xent_backward(float* dlogits, const float* logits, const float* rowmax, const float* sumexp,
                   const int32_t* targets, const float* dloss, int N, int Vl, int v_start,
                   int v_valid) {
  check_shapes("xent_backward", N, Vl, v_valid);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * Vl >= kParallelMinElems)
  for (int n = 0; n < N; n++) {
    const float* z = logits + static_cast<int64_t>(n) * Vl;
    float* dz = dlogits + static_cast<int64_t>(n) * Vl;
    const float m = rowmax[n];
    const float inv_sum = 1.0f / sumexp[n];
    const float d = dloss != nullptr ? dloss[n] : 1.0f;
    for (int v = 0; v < v_valid; v++) dz[v] = std::exp(z[v] - m) * inv_sum * d;
    for (int v = v_valid; v < Vl; v++) dz[v] = 0.0f;
    const int64_t r = static_cast<int64_t>(targets[n]) - v_start;
    if (r >= 0 && r < v_valid) dz[r] = (std::exp(z[r] - m) * inv_sum - 1.0f) * d;
  }
}

// ---------------------------------------------------------------------------- single rank
// losses: (N) written;  rowmax, sumexp: (N) written (saved for xent_backward);
// logits: (N, Vl) the full vocabulary (v_start = 0) of which v_valid columns are real;
// targets: (N)
void softmax_cross_entropy_forward(float* losses, float* rowmax, float* sumexp, const float* logits,
                                   const int32_t* targets, int N, int Vl, int v_valid) {
  check_shapes("softmax_cross_entropy_forward", N, Vl, v_valid);
  xent_row_max(rowmax, logits, N, Vl, v_valid);
  xent_sum_exp(sumexp, logits, rowmax, N, Vl, v_valid);
  xent_target_logit(losses, logits, targets, N, Vl, /*v_start=*/0, v_valid);  // losses as scratch
  xent_loss(losses, rowmax, sumexp, losses, N);
}

}  // namespace mt::kernels::cpu
