// What: the CUDA implementation of kernels::Ops: host code that queues the kernels of
// kernels/cuda/*.cu, the cuBLASLt products (matmul.h) and cuDNN's fused attention
// (attention_cudnn.h) on the device's compute stream, and turns every failure into an
// mt::core::Error naming the op.
// Why: the model calls Ops without knowing the device. Working buffers (activations, the
// parameter working copy) are fp32 or bf16 (OpsOptions::working); gradients, master weights,
// optimizer state and statistics are fp32 (mixed precision as in Megatron / llm.c).
// Attention: own kernel (grouped kv heads, doc_ids), or cuDNN's fused forward (bf16 only, no
// doc_ids, multi-head only: NKV == NH; grouped kv heads use the own kernel, logged once per
// shape at debug level) with the own backward; the first time cuDNN runs a shape its output is compared with the own kernel's,
// and any disagreement (or any cuDNN error) switches this process to the own kernel with a
// warning. That guard exists because the cuDNN graph could not be run where it was written.
// Scratch memory for the reductions comes from buffers that grow to the largest request
// (through the caching allocator, so only the first steps allocate).
//
// NOT RUN ON A GPU: compiled on a machine without one; tests/cuda/ run it where one exists.
#include "kernels/cuda/cuda_ops.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <set>
#include <tuple>
#include <vector>

#include "core/cuda_device.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/gemm_args.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/matmul.h"

namespace mt::kernels {

namespace {

using cuda::Dt;
using core::Tensor;

void check(cudaError_t e, const char* op) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  // cudaGetLastError also reports a fault of earlier, asynchronous work (sticky errors).
  throw core::Error(fmt::format("CUDA kernel {} failed", op))
      .with_library(core::cuda_error_string(e))
      .with_hint("an error of earlier queued work can surface at a later launch: rerun with CUDA_LAUNCH_BLOCKING=1 "
                 "to stop at the kernel that failed");
}

float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

class CudaOps final : public Ops {
 public:
  CudaOps(core::Device& dev, const OpsOptions& opt) : dev_(dev), wdt_(opt.working), mm_(dev) {
    MT_CHECK(dev.kind() == core::DeviceKind::CUDA, "CUDA kernels need a CUDA device, not '{}'", dev.name());
    if (wdt_ != core::DType::F32 && wdt_ != core::DType::BF16) {
      throw core::Error(fmt::format("precision {} is not supported by the CUDA kernels", core::dtype_name(wdt_)))
          .with_yaml("train.precision")
          .with_hint("use train.precision=bf16 or fp32");
    }
    dt_ = wdt_ == core::DType::BF16 ? Dt::BF16 : Dt::F32;
    MT_CHECK(opt.attention == "auto" || opt.attention == "cudnn" || opt.attention == "own",
             "unknown attention implementation '{}' (auto | cudnn | own)", opt.attention);
    if (opt.attention != "own") {
      std::string why;
      if (dt_ != Dt::BF16) {
        why = "cuDNN's fused attention takes bf16/fp16 inputs and train.precision is fp32";
      } else {
        cudnn_ = cuda::CudnnAttention::create(dev, &why);
      }
      if (!cudnn_) {
        if (opt.attention == "cudnn") {
          core::log::warn("train.attention=cudnn: {}; using the own attention kernel", why);
        } else {
          core::log::debug("attention: own kernel ({})", why);
        }
      }
    }
  }

  core::Device& device() const override { return dev_; }
  core::DType working_dtype() const override { return wdt_; }
  std::string describe() const override {
    return fmt::format("cuda kernels ({} activations and working weights, fp32 master weights/grads/optimizer; "
                       "matmuls cuBLASLt; attention {})",
                       core::dtype_name(wdt_), cudnn_ ? "cuDNN " + cudnn_->version() + " fused forward + own backward" : std::string("own"));
  }

  // ------------------------------------------------------------ linear
  void matmul_forward(void* out, const void* inp, const void* weight, const void* bias, int N, int C,
                      int OC) override {
    MT_CHECK(N >= 0 && C >= 0 && OC >= 0, "matmul_forward: negative shape N={} C={} OC={}", N, C, OC);
    if (N == 0 || OC == 0) return;
    if (C == 0) {  // empty inner dimension: only the bias remains
      dev_.memset_zero(out, static_cast<size_t>(N) * OC * esize());
      if (bias) add_bias(out, bias, N, OC);
      return;
    }
    // out^T (OC x N, col-major) = W (stored C x OC col-major)^T * inp^T (C x N col-major)
    const cuda::GemmArgs g = cuda::linear_forward_args(N, C, OC);
    const bool fused = mm_.run(g.trans_a, g.trans_b, g.m, g.n, g.k, weight, g.lda, inp, g.ldb, out, g.ldd, dt_, dt_,
                               false, bias);
    if (!fused) add_bias(out, bias, N, OC);
  }
  void matmul_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                       const void* weight, int N, int C, int OC) override {
    MT_CHECK(N >= 0 && C >= 0 && OC >= 0, "matmul_backward: negative shape N={} C={} OC={}", N, C, OC);
    if (N == 0 || OC == 0) return;
    if (C > 0) {
      // dinp^T (C x N) += W^T (C x OC, = W stored row-major (OC, C)) * dout^T (OC x N)
      if (dinp) {
        const cuda::GemmArgs g = cuda::linear_dinp_args(N, C, OC);
        mm_.run(g.trans_a, g.trans_b, g.m, g.n, g.k, weight, g.lda, dout, g.ldb, dinp, g.ldd, dt_, dt_, true, nullptr);
      }
      // dweight^T (C x OC) += inp^T (C x N) * dout (N x OC); fp32 output from working inputs
      if (dweight) {
        const cuda::GemmArgs g = cuda::linear_dweight_args(N, C, OC);
        mm_.run(g.trans_a, g.trans_b, g.m, g.n, g.k, inp, g.lda, dout, g.ldb, dweight, g.ldd, dt_, Dt::F32, true,
                nullptr);
      }
    }
    if (dbias) bias_backward(dbias, dout, N, OC);
  }
  void add_bias(void* out, const void* bias, int64_t N, int OC) override {
    check(cuda::add_bias(dt_, out, bias, N, OC, stream()), "add_bias");
  }
  void bias_backward(float* dbias, const void* dout, int64_t N, int OC) override {
    float* scratch = scratch_f(cuda::column_sum_scratch_floats(N, OC));
    check(cuda::bias_backward(dt_, dbias, dout, N, OC, scratch, stream()), "bias_backward");
  }

  // ------------------------------------------------------------ layernorm
  void layernorm_forward(void* out, float* mean, float* rstd, const void* inp, const void* weight,
                         const void* bias, int N, int C) override {
    MT_CHECK(N >= 0 && C > 0, "layernorm_forward: bad shape N={} C={}", N, C);
    check(cuda::layernorm_forward(dt_, out, mean, rstd, inp, weight, bias, N, C, stream()), "layernorm_forward");
  }
  void layernorm_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                          const void* weight, const float* mean, const float* rstd, int N, int C) override {
    MT_CHECK(N >= 0 && C > 0, "layernorm_backward: bad shape N={} C={}", N, C);
    float* scratch = (dweight || dbias) ? scratch_f(2 * cuda::column_sum_scratch_floats(N, C)) : nullptr;
    check(cuda::layernorm_backward(dt_, dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, scratch, stream()),
          "layernorm_backward");
  }

  // ------------------------------------------------------------ elementwise
  void gelu_forward(void* out, const void* inp, int64_t n) override {
    check(cuda::gelu_forward(dt_, out, inp, n, stream()), "gelu_forward");
  }
  void gelu_backward(void* dinp, const void* inp, const void* dout, int64_t n) override {
    check(cuda::gelu_backward(dt_, dinp, inp, dout, n, stream()), "gelu_backward");
  }
  void residual_forward(void* out, const void* a, const void* b, int64_t n) override {
    check(cuda::residual_forward(dt_, out, a, b, n, stream()), "residual_forward");
  }
  void residual_backward(void* da, void* db, const void* dout, int64_t n) override {
    check(cuda::residual_backward(dt_, da, db, dout, n, stream()), "residual_backward");
  }

  // ------------------------------------------------------------ attention
  int64_t attention_state_elems(int B, int T, int NH) const override {
    return static_cast<int64_t>(B) * NH * T;  // log-sum-exp per score row
  }
  void attention_forward(void* out, float* state, const void* qkv, const int32_t* doc_ids, int B, int T, int C,
                         int NH, int NKV) override {
    check_attention_shape(B, T, C, NH, NKV);
    if (doc_ids == nullptr && cudnn_) {
      if (NKV != NH) {
        const auto key = std::make_tuple(B, T, C, NH, NKV);
        if (gqa_logged_.insert(key).second) {
          core::log::debug("attention B={} T={} C={} NH={} NKV={}: own kernel (the cuDNN fused forward here takes "
                           "multi-head qkv only, NKV == NH; grouped kv heads are not wired to it)",
                           B, T, C, NH, NKV);
        }
      } else if (cudnn_forward(out, state, qkv, B, T, C, NH)) {
        return;
      }
    }
    check(cuda::attention_forward(dt_, out, state, qkv, doc_ids, B, T, C, NH, NKV, stream()), "attention_forward");
  }
  void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* out, const float* state,
                          const int32_t* doc_ids, int B, int T, int C, int NH, int NKV) override {
    check_attention_shape(B, T, C, NH, NKV);
    float* scratch = scratch_f(static_cast<int64_t>(B) * NH * T);
    check(cuda::attention_backward(dt_, dqkv, dout, qkv, out, state, doc_ids, B, T, C, NH, NKV, scratch, stream()),
          "attention_backward");
  }

  // ------------------------------------------------------------ KV-cached decoding
  void kv_cache_append(void* k_cache, void* v_cache, const void* qkv, int B, int n_new, int past, int max_len,
                       int NH, int NKV, int HS) override {
    check(cuda::kv_cache_append(dt_, k_cache, v_cache, qkv, B, n_new, past, max_len, NH, NKV, HS, stream()),
          "kv_cache_append");
  }
  void attention_decode(void* out, const void* qkv, const void* k_cache, const void* v_cache, int B, int n_new,
                        int past, int max_len, int NH, int NKV, int HS) override {
    check_attention_shape(B, n_new, NH * HS, NH, NKV);
    check(cuda::attention_decode(dt_, out, qkv, k_cache, v_cache, B, n_new, past, max_len, NH, NKV, HS, stream()),
          "attention_decode");
  }

  // ------------------------------------------------------------ Llama blocks
  void rmsnorm_forward(void* out, float* rstd, const void* inp, const void* weight, int N, int C,
                       float eps) override {
    MT_CHECK(N >= 0 && C > 0, "rmsnorm_forward: bad shape N={} C={}", N, C);
    check(cuda::rmsnorm_forward(dt_, out, rstd, inp, weight, N, C, eps, stream()), "rmsnorm_forward");
  }
  void rmsnorm_backward(void* dinp, float* dweight, const void* dout, const void* inp, const void* weight,
                        const float* rstd, int N, int C) override {
    MT_CHECK(N >= 0 && C > 0, "rmsnorm_backward: bad shape N={} C={}", N, C);
    float* scratch = dweight ? scratch_f(cuda::column_sum_scratch_floats(N, C)) : nullptr;
    check(cuda::rmsnorm_backward(dt_, dinp, dweight, dout, inp, weight, rstd, N, C, scratch, stream()),
          "rmsnorm_backward");
  }
  void swiglu_forward(void* out, const void* inp, int64_t N, int F) override {
    MT_CHECK(N >= 0 && F > 0, "swiglu_forward: bad shape N={} F={}", N, F);
    check(cuda::swiglu_forward(dt_, out, inp, N, F, stream()), "swiglu_forward");
  }
  void swiglu_backward(void* dinp, const void* inp, const void* dout, int64_t N, int F) override {
    MT_CHECK(N >= 0 && F > 0, "swiglu_backward: bad shape N={} F={}", N, F);
    check(cuda::swiglu_backward(dt_, dinp, inp, dout, N, F, stream()), "swiglu_backward");
  }
  void rope_forward(void* x, const float* cos, const float* sin, const int32_t* pos, int N, int stride, int n_heads,
                    int HS) override {
    check_rope_shape(N, stride, n_heads, HS);
    check(cuda::rope_forward(dt_, x, cos, sin, pos, N, stride, n_heads, HS, stream()), "rope_forward");
  }
  void rope_backward(void* dx, const float* cos, const float* sin, const int32_t* pos, int N, int stride, int n_heads,
                     int HS) override {
    check_rope_shape(N, stride, n_heads, HS);
    check(cuda::rope_backward(dt_, dx, cos, sin, pos, N, stride, n_heads, HS, stream()), "rope_backward");
  }

  // ------------------------------------------------------------ embeddings
  void token_embedding_forward(void* out, const int32_t* tokens, const void* wte, int N, int C, int v_start,
                               int v_count) override {
    check(cuda::token_embedding_forward(dt_, out, tokens, wte, N, C, v_start, v_count, stream()),
          "token_embedding_forward");
  }
  void token_embedding_backward(float* dwte, const void* dout, const int32_t* tokens, int N, int C, int v_start,
                                int v_count) override {
    check(cuda::token_embedding_backward(dt_, dwte, dout, tokens, N, C, v_start, v_count, stream()),
          "token_embedding_backward");
  }
  void position_embedding_forward(void* out, const void* wpe, const int32_t* pos, int B, int T, int C) override {
    check(cuda::position_embedding_forward(dt_, out, wpe, pos, B, T, C, stream()), "position_embedding_forward");
  }
  void position_embedding_backward(float* dwpe, const void* dout, const int32_t* pos, int B, int T, int C) override {
    check(cuda::position_embedding_backward(dt_, dwpe, dout, pos, B, T, C, stream()), "position_embedding_backward");
  }

  // ------------------------------------------------------------ cross-entropy
  void xent_row_max(float* rowmax, const void* logits, int N, int Vl, int v_valid) override {
    check(cuda::xent_row_max(dt_, rowmax, logits, N, Vl, v_valid, stream()), "xent_row_max");
  }
  void xent_sum_exp(float* sumexp, const void* logits, const float* rowmax, int N, int Vl, int v_valid) override {
    check(cuda::xent_sum_exp(dt_, sumexp, logits, rowmax, N, Vl, v_valid, stream()), "xent_sum_exp");
  }
  void xent_target_logit(float* target_logit, const void* logits, const int32_t* targets, int N, int Vl,
                         int v_start, int v_valid) override {
    check(cuda::xent_target_logit(dt_, target_logit, logits, targets, N, Vl, v_start, v_valid, stream()),
          "xent_target_logit");
  }
  void xent_loss(float* losses, const float* rowmax, const float* sumexp, const float* target_logit,
                 int N) override {
    check(cuda::xent_loss(losses, rowmax, sumexp, target_logit, N, stream()), "xent_loss");
  }
  void xent_backward(void* dlogits, const void* logits, const float* rowmax, const float* sumexp,
                     const int32_t* targets, const float* dloss, int N, int Vl, int v_start, int v_valid) override {
    check(cuda::xent_backward(dt_, dlogits, logits, rowmax, sumexp, targets, dloss, N, Vl, v_start, v_valid,
                              stream()),
          "xent_backward");
  }

  // ------------------------------------------------------------ knowledge distillation
  void kd_sums(float* sums, const void* s, const void* t, const float* smax, const float* tmax, int N, int Vl,
               int v_valid, float temperature) override {
    check(cuda::kd_sums(dt_, sums, s, t, smax, tmax, N, Vl, v_valid, temperature, stream()), "kd_sums");
  }
  void kd_loss(float* losses, float* kl, const float* ce, const float* sums, const float* smax, const float* tmax,
               int N, float alpha, float temperature) override {
    check(cuda::kd_loss(losses, kl, ce, sums, smax, tmax, N, alpha, temperature, stream()), "kd_loss");
  }
  void kd_backward(void* dlogits, const void* s, const void* t, const float* smax, const float* tmax,
                   const float* sums, const float* dloss, int N, int Vl, int v_valid, float alpha,
                   float temperature) override {
    check(cuda::kd_backward(dt_, dlogits, s, t, smax, tmax, sums, dloss, N, Vl, v_valid, alpha, temperature,
                            stream()),
          "kd_backward");
  }

  // ------------------------------------------------------------ optimizer and reductions
  void adamw_update(float* params, void* working, const float* grads, float* m, float* v, int64_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t t) override {
    MT_CHECK(t >= 1, "adamw_update: step t={} must be >= 1", t);
    // Bias corrections in double, once per call, as the CPU reference does.
    const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(t)));
    const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(t)));
    check(cuda::adamw_update(params, dt_, working, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2,
                             stream()),
          "adamw_update");
  }
  void sgd_update(float* params, void* working, const float* grads, float* momentum_buf, int64_t n, float lr,
                  float momentum, float weight_decay) override {
    check(cuda::sgd_update(params, dt_, working, grads, momentum_buf, n, lr, momentum, weight_decay, stream()),
          "sgd_update");
  }
  void sum_squares(double* out, const float* x, int64_t n) override {
    double* scratch = scratch_d(cuda::sum_squares_scratch_doubles(n));
    check(cuda::sum_squares(out, x, n, scratch, stream()), "sum_squares");
  }
  void scale(float* x, int64_t n, float s) override { check(cuda::scale(x, n, s, stream()), "scale"); }
  void add_f32(float* y, const float* x, int64_t n) override { check(cuda::add_f32(y, x, n, stream()), "add_f32"); }
  void cast(void* dst, core::DType dst_type, const void* src, core::DType src_type, int64_t n) override {
    if (n <= 0) return;
    if (dst_type == src_type) {
      if (dst != src) dev_.copy_async(dst, src, static_cast<size_t>(n) * core::dtype_size(dst_type));
      return;
    }
    auto dt = [](core::DType t) {
      if (t == core::DType::F32) return Dt::F32;
      if (t == core::DType::BF16) return Dt::BF16;
      MT_FAIL("cast: the CUDA kernels cast between fp32 and bf16 only, not {}", core::dtype_name(t));
    };
    check(cuda::cast(dt(dst_type), dst, dt(src_type), src, n, stream()), "cast");
  }

 private:
  cudaStream_t stream() const { return static_cast<cudaStream_t>(dev_.stream()); }
  size_t esize() const { return core::dtype_size(wdt_); }

  float* scratch_f(int64_t n) {
    if (!scratch_f_.defined() || scratch_f_.numel() < n) scratch_f_ = Tensor::empty({n}, core::DType::F32, dev_);
    return scratch_f_.f32();
  }
  double* scratch_d(int64_t n) {
    if (!scratch_d_.defined() || scratch_d_.numel() < n) scratch_d_ = Tensor::empty({n}, core::DType::F64, dev_);
    return static_cast<double*>(scratch_d_.raw());
  }

  static void check_attention_shape(int B, int T, int C, int NH, int NKV) {
    MT_CHECK(B >= 0 && T >= 0 && C > 0 && NH > 0 && NKV > 0 && C % NH == 0,
             "attention: bad shape B={} T={} C={} NH={} NKV={}", B, T, C, NH, NKV);
    MT_CHECK(NH % NKV == 0, "attention: NH={} query heads are not divisible by NKV={} kv heads", NH, NKV);
    if (C / NH > cuda::kMaxHeadSize) {
      throw core::Error(fmt::format("attention head size {} exceeds the CUDA kernel's limit of {}", C / NH,
                                    cuda::kMaxHeadSize))
          .with_hint("use more heads (model.n_head) for this width");
    }
  }

  static void check_rope_shape(int N, int stride, int n_heads, int HS) {
    MT_CHECK(N >= 0 && HS > 0 && HS % 2 == 0 && n_heads >= 0 && static_cast<int64_t>(n_heads) * HS <= stride,
             "rope: bad shape N={} stride={} n_heads={} HS={} (HS must be even)", N, stride, n_heads, HS);
  }

  // cuDNN's forward (multi-head: qkv (B, T, 3C)); on its first run for a shape, checked against the own kernel. True when
  // out and state hold a valid result (from cuDNN or, after a failed check, the own kernel).
  bool cudnn_forward(void* out, float* state, const void* qkv, int B, int T, int C, int NH) {
    std::string why;
    if (!cudnn_->forward(dt_, out, state, qkv, B, T, C, NH, &why)) {
      const std::string msg = fmt::format("B={} T={} C={} NH={}: {}", B, T, C, NH, why);
      if (warned_.insert(msg).second) core::log::warn("cuDNN attention cannot run {}; using the own kernel", msg);
      return false;
    }
    const auto key = std::make_tuple(B, T, C, NH);
    if (validated_.count(key)) return true;
    // Reference from the own kernel, compared on the host.
    const int64_t n_out = static_cast<int64_t>(B) * T * C, n_lse = static_cast<int64_t>(B) * NH * T;
    Tensor ref_out = Tensor::empty({n_out}, wdt_, dev_), ref_lse = Tensor::empty({n_lse}, core::DType::F32, dev_);
    check(cuda::attention_forward(dt_, ref_out.raw(), ref_lse.f32(), qkv, nullptr, B, T, C, NH, NH, stream()),
          "attention_forward");
    std::vector<float> a_lse(n_lse), b_lse(n_lse), a_out(n_out), b_out(n_out);
    read_working(a_out.data(), out, n_out);
    read_working(b_out.data(), ref_out.raw(), n_out);
    dev_.copy(a_lse.data(), state, n_lse * sizeof(float));
    dev_.copy(b_lse.data(), ref_lse.raw(), n_lse * sizeof(float));
    double err_out = 0, err_lse = 0;
    for (int64_t i = 0; i < n_out; ++i)
      err_out = std::max(err_out, std::fabs(a_out[i] - b_out[i]) / (1.0 + std::fabs(b_out[i])));
    for (int64_t i = 0; i < n_lse; ++i)
      err_lse = std::max(err_lse, std::fabs(a_lse[i] - b_lse[i]) / (1.0 + std::fabs(b_lse[i])));
    const bool finite = std::isfinite(err_out) && std::isfinite(err_lse);
    if (!finite || err_out > 5e-2 || err_lse > 1e-2) {
      core::log::warn("cuDNN attention disagrees with the own kernel at B={} T={} C={} NH={} (max rel. error: output "
                      "{:.3g}, log-sum-exp {:.3g}); using the own attention kernel from now on",
                      B, T, C, NH, err_out, err_lse);
      cudnn_.reset();
      dev_.copy_async(out, ref_out.raw(), ref_out.nbytes());
      dev_.copy_async(state, ref_lse.raw(), ref_lse.nbytes());
      dev_.synchronize();  // ref_* are freed on return; the copies must be done reading them
      return true;
    }
    core::log::debug("cuDNN attention at B={} T={} C={} NH={} matches the own kernel (output {:.2g}, lse {:.2g})", B,
                     T, C, NH, err_out, err_lse);
    validated_.insert(key);
    return true;
  }
  // n working-dtype values from the device into fp32 host memory.
  void read_working(float* dst, const void* src, int64_t n) {
    if (wdt_ == core::DType::F32) {
      dev_.copy(dst, src, n * sizeof(float));
      return;
    }
    std::vector<uint16_t> h(n);
    dev_.copy(h.data(), src, n * sizeof(uint16_t));
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(h[i]);
  }

  core::Device& dev_;
  core::DType wdt_;
  Dt dt_ = Dt::F32;
  cuda::LtMatmul mm_;
  std::unique_ptr<cuda::CudnnAttention> cudnn_;
  std::set<std::tuple<int, int, int, int>> validated_;
  std::set<std::tuple<int, int, int, int, int>> gqa_logged_;  // shapes whose cuDNN fallback was logged
  std::set<std::string> warned_;
  Tensor scratch_f_, scratch_d_;
};

}  // namespace

std::unique_ptr<Ops> make_cuda_ops(core::Device& device, const OpsOptions& options) {
  return std::make_unique<CudaOps>(device, options);
}

}  // namespace mt::kernels
