// What: the elementwise ops of the transformer blocks: GELU (GPT-2's MLP nonlinearity),
// SwiGLU (Llama's gated MLP) and the residual add, forward and backward.
//   SwiGLU over a row [gate (F) | up (F)]: out = silu(gate) * up, silu(g) = g * sigmoid(g);
//     dgate = dout * up * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  dup = dout * silu(g)
//   GELU (tanh approximation, as GPT-2):
//     gelu(x) = 0.5 * x * (1 + tanh(u)),  u = sqrt(2/pi) * (x + 0.044715 * x^3)
//   residual: out = a + b;  da += dout, db += dout
// Why: reference semantics in the style of llm.c train_gpt2.c.
// Implementation note (GELU): we use the exact identity 0.5 * (1 + tanh(u)) = sigmoid(2u)
// = 1 / (1 + exp(-2u)), so
//     gelu(x)  = x * s,                          s = 1 / (1 + exp(-2u))
//     gelu'(x) = s + x * 2 s (1 - s) * du/dx,    du/dx = sqrt(2/pi) * (1 + 3 * 0.044715 * x^2)
// (since d/du 0.5 (1 + tanh u) = 0.5 sech^2 u = 2 s (1 - s)). It is the same function as the
// tanh form, but glibc's expf is ~6x faster than tanhf here, and 1 + tanh(u) cancels
// catastrophically for very negative x while x * s does not. Saturation is safe: for large
// |u| expf gives +inf or 0, so s is exactly 0 or 1 and the derivative 0 or 1, never NaN.
// Every element is independent, so the loops split over threads in any way and stay
// deterministic. Backward kernels accumulate (+=); a null gradient pointer skips it.
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;
// Elementwise loops below this many elements run on the calling thread only: an OpenMP
// fork/join costs a few microseconds, more than e.g. adding 16k floats.
constexpr int64_t kParallelMinElems = 1 << 15;

// s = sigmoid(2u) = 0.5 * (1 + tanh(u)) for the GELU argument u(x).
inline float gelu_gate(float x) {
  const float u = kGeluScale * (x + kGeluCubic * x * x * x);
  return 1.0f / (1.0f + std::exp(-2.0f * u));
}

}  // namespace

// ---------------------------------------------------------------------------- GELU
// out: (n) written;  inp: (n)
void gelu_forward(float* out, const float* inp, int64_t n) {
  MT_CHECK(n >= 0, "gelu_forward: negative size {}", n);
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; i++) {
    const float x = inp[i];
    out[i] = x * gelu_gate(x);
  }
}

// dinp: (n) +=  (null to skip);  inp: (n) the forward's input;  dout: (n)
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  MT_CHECK(n >= 0, "gelu_backward: negative size {}", n);
  if (dinp == nullptr) return;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; i++) {
    const float x = inp[i];
    const float s = gelu_gate(x);
    const float du_dx = kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
    const float local_grad = s + x * 2.0f * s * (1.0f - s) * du_dx;
    dinp[i] += local_grad * dout[i];
  }
}

// ---------------------------------------------------------------------------- SwiGLU
// out: (N, F) written;  inp: (N, 2F) per row [gate | up]
void swiglu_forward(float* out, const float* inp, int64_t N, int F) {
  MT_CHECK(N >= 0 && F > 0, "swiglu_forward: bad shape N={} F={}", N, F);
#pragma omp parallel for schedule(static) if (N * F >= kParallelMinElems)
  for (int64_t n = 0; n < N; n++) {
    const float* gate = inp + n * 2 * F;
    const float* up = gate + F;
    float* o = out + n * F;
    for (int i = 0; i < F; i++) {
      const float g = gate[i];
      o[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }
}

// dinp: (N, 2F) += (null to skip);  inp: (N, 2F) the forward's input;  dout: (N, F)
void swiglu_backward(float* dinp, const float* inp, const float* dout, int64_t N, int F) {
  MT_CHECK(N >= 0 && F > 0, "swiglu_backward: bad shape N={} F={}", N, F);
  if (dinp == nullptr) return;
#pragma omp parallel for schedule(static) if (N * F >= kParallelMinElems)
  for (int64_t n = 0; n < N; n++) {
    const float* gate = inp + n * 2 * F;
    const float* up = gate + F;
    const float* dy = dout + n * F;
    float* dgate = dinp + n * 2 * F;
    float* dup = dgate + F;
    for (int i = 0; i < F; i++) {
      const float g = gate[i];
      const float sg = 1.0f / (1.0f + std::exp(-g));
      dgate[i] += dy[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
      dup[i] += dy[i] * g * sg;
    }
  }
}

// ---------------------------------------------------------------------------- residual
// out: (n) = a + b  (out may alias a or b)
void residual_forward(float* out, const float* a, const float* b, int64_t n) {
  MT_CHECK(n >= 0, "residual_forward: negative size {}", n);
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// da: (n) += dout;  db: (n) += dout  (either may be null). The gradient of a sum flows
// unchanged to both inputs. One pass reading dout[i] once, so dout may alias da or db (a
// caller may pass the residual stream's gradient as both dout and da).
void residual_backward(float* da, float* db, const float* dout, int64_t n) {
  MT_CHECK(n >= 0, "residual_backward: negative size {}", n);
  if (da == nullptr && db == nullptr) return;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; i++) {
    const float d = dout[i];
    if (da != nullptr) da[i] += d;
    if (db != nullptr) db[i] += d;
  }
}

}  // namespace mt::kernels::cpu
