// What: the CPU implementation of kernels::Ops: every call forwards to the reference kernel
// of the same name in kernels/cpu (kernels.h), on host memory, in fp32.
// Why: the model, optimizer and trainer call Ops so they run unchanged on CUDA; on the CPU
// this layer adds one virtual call per op and changes no arithmetic, so results stay
// bitwise identical to calling kernels::cpu directly (the e2e tests check exact resume and
// thread-count independence).
#include <cstring>

#include "core/error.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/kernels.h"
#include "kernels/ops.h"

namespace mt::kernels {

namespace {

inline float* F(void* p) { return static_cast<float*>(p); }
inline const float* F(const void* p) { return static_cast<const float*>(p); }

class CpuOps final : public Ops {
 public:
  core::Device& device() const override { return core::cpu_device(); }
  core::DType working_dtype() const override { return core::DType::F32; }
  std::string describe() const override { return "cpu reference kernels (fp32, OpenBLAS sgemm)"; }

  void matmul_forward(void* out, const void* inp, const void* weight, const void* bias, int N, int C,
                      int OC) override {
    cpu::matmul_forward(F(out), F(inp), F(weight), F(bias), N, C, OC);
  }
  void matmul_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                       const void* weight, int N, int C, int OC) override {
    cpu::matmul_backward(F(dinp), dweight, dbias, F(dout), F(inp), F(weight), N, C, OC);
  }
  void add_bias(void* out, const void* bias, int64_t N, int OC) override { cpu::add_bias(F(out), F(bias), N, OC); }
  void bias_backward(float* dbias, const void* dout, int64_t N, int OC) override {
    cpu::bias_backward(dbias, F(dout), N, OC);
  }

  void layernorm_forward(void* out, float* mean, float* rstd, const void* inp, const void* weight,
                         const void* bias, int N, int C) override {
    cpu::layernorm_forward(F(out), mean, rstd, F(inp), F(weight), F(bias), N, C);
  }
  void layernorm_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                          const void* weight, const float* mean, const float* rstd, int N, int C) override {
    cpu::layernorm_backward(F(dinp), dweight, dbias, F(dout), F(inp), F(weight), mean, rstd, N, C);
  }

  void gelu_forward(void* out, const void* inp, int64_t n) override { cpu::gelu_forward(F(out), F(inp), n); }
  void gelu_backward(void* dinp, const void* inp, const void* dout, int64_t n) override {
    cpu::gelu_backward(F(dinp), F(inp), F(dout), n);
  }
  void residual_forward(void* out, const void* a, const void* b, int64_t n) override {
    cpu::residual_forward(F(out), F(a), F(b), n);
  }
  void residual_backward(void* da, void* db, const void* dout, int64_t n) override {
    cpu::residual_backward(F(da), F(db), F(dout), n);
  }

  int64_t attention_state_elems(int B, int T, int NH) const override {
    return static_cast<int64_t>(B) * NH * T * T;  // the probabilities
  }
  void attention_forward(void* out, float* state, const void* qkv, const int32_t* doc_ids, int B, int T, int C,
                         int NH, int NKV) override {
    cpu::attention_forward(F(out), state, F(qkv), doc_ids, B, T, C, NH, NKV);
  }
  void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* /*out*/, const float* state,
                          const int32_t* /*doc_ids: masked entries of state are 0*/, int B, int T, int C, int NH,
                          int NKV) override {
    cpu::attention_backward(F(dqkv), F(dout), F(qkv), state, B, T, C, NH, NKV);
  }

  void kv_cache_append(void* k_cache, void* v_cache, const void* qkv, int B, int n_new, int past, int max_len,
                       int NH, int NKV, int HS) override {
    cpu::kv_cache_append(F(k_cache), F(v_cache), F(qkv), B, n_new, past, max_len, NH, NKV, HS);
  }
  void attention_decode(void* out, const void* qkv, const void* k_cache, const void* v_cache, int B, int n_new,
                        int past, int max_len, int NH, int NKV, int HS) override {
    cpu::attention_decode(F(out), F(qkv), F(k_cache), F(v_cache), B, n_new, past, max_len, NH, NKV, HS);
  }

  void rmsnorm_forward(void* out, float* rstd, const void* inp, const void* weight, int N, int C,
                       float eps) override {
    cpu::rmsnorm_forward(F(out), rstd, F(inp), F(weight), N, C, eps);
  }
  void rmsnorm_backward(void* dinp, float* dweight, const void* dout, const void* inp, const void* weight,
                        const float* rstd, int N, int C) override {
    cpu::rmsnorm_backward(F(dinp), dweight, F(dout), F(inp), F(weight), rstd, N, C);
  }
  void swiglu_forward(void* out, const void* inp, int64_t N, int Fw) override {
    cpu::swiglu_forward(F(out), F(inp), N, Fw);
  }
  void swiglu_backward(void* dinp, const void* inp, const void* dout, int64_t N, int Fw) override {
    cpu::swiglu_backward(F(dinp), F(inp), F(dout), N, Fw);
  }
  void rope_forward(void* x, const float* cos, const float* sin, const int32_t* pos, int N, int stride, int n_heads,
                    int HS) override {
    cpu::rope_forward(F(x), cos, sin, pos, N, stride, n_heads, HS);
  }
  void rope_backward(void* dx, const float* cos, const float* sin, const int32_t* pos, int N, int stride,
                     int n_heads, int HS) override {
    cpu::rope_backward(F(dx), cos, sin, pos, N, stride, n_heads, HS);
  }

  void token_embedding_forward(void* out, const int32_t* tokens, const void* wte, int N, int C, int v_start,
                               int v_count) override {
    cpu::token_embedding_forward(F(out), tokens, F(wte), N, C, v_start, v_count);
  }
  void token_embedding_backward(float* dwte, const void* dout, const int32_t* tokens, int N, int C, int v_start,
                                int v_count) override {
    cpu::token_embedding_backward(dwte, F(dout), tokens, N, C, v_start, v_count);
  }
  void position_embedding_forward(void* out, const void* wpe, const int32_t* pos, int B, int T, int C) override {
    cpu::position_embedding_forward(F(out), F(wpe), pos, B, T, C);
  }
  void position_embedding_backward(float* dwpe, const void* dout, const int32_t* pos, int B, int T,
                                   int C) override {
    cpu::position_embedding_backward(dwpe, F(dout), pos, B, T, C);
  }

  void xent_row_max(float* rowmax, const void* logits, int N, int Vl, int v_valid) override {
    cpu::xent_row_max(rowmax, F(logits), N, Vl, v_valid);
  }
  void xent_sum_exp(float* sumexp, const void* logits, const float* rowmax, int N, int Vl, int v_valid) override {
    cpu::xent_sum_exp(sumexp, F(logits), rowmax, N, Vl, v_valid);
  }
  void xent_target_logit(float* target_logit, const void* logits, const int32_t* targets, int N, int Vl,
                         int v_start, int v_valid) override {
    cpu::xent_target_logit(target_logit, F(logits), targets, N, Vl, v_start, v_valid);
  }
  void xent_loss(float* losses, const float* rowmax, const float* sumexp, const float* target_logit,
                 int N) override {
    cpu::xent_loss(losses, rowmax, sumexp, target_logit, N);
  }
  void xent_backward(void* dlogits, const void* logits, const float* rowmax, const float* sumexp,
                     const int32_t* targets, const float* dloss, int N, int Vl, int v_start, int v_valid) override {
    cpu::xent_backward(F(dlogits), F(logits), rowmax, sumexp, targets, dloss, N, Vl, v_start, v_valid);
  }

  void kd_sums(float* sums, const void* s, const void* t, const float* smax, const float* tmax, int N, int Vl,
               int v_valid, float temperature) override {
    cpu::kd_sums(sums, F(s), F(t), smax, tmax, N, Vl, v_valid, temperature);
  }
  void kd_loss(float* losses, float* kl, const float* ce, const float* sums, const float* smax, const float* tmax,
               int N, float alpha, float temperature) override {
    cpu::kd_loss(losses, kl, ce, sums, smax, tmax, N, alpha, temperature);
  }
  void kd_backward(void* dlogits, const void* s, const void* t, const float* smax, const float* tmax,
                   const float* sums, const float* dloss, int N, int Vl, int v_valid, float alpha,
                   float temperature) override {
    cpu::kd_backward(F(dlogits), F(s), F(t), smax, tmax, sums, dloss, N, Vl, v_valid, alpha, temperature);
  }

  void adamw_update(float* params, void* working, const float* grads, float* m, float* v, int64_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t t) override {
    MT_CHECK(working == nullptr || working == params, "the CPU has no separate working copy of the parameters");
    cpu::adamw_update(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t);
  }
  void sgd_update(float* params, void* working, const float* grads, float* momentum_buf, int64_t n, float lr,
                  float momentum, float weight_decay) override {
    MT_CHECK(working == nullptr || working == params, "the CPU has no separate working copy of the parameters");
    cpu::sgd_update(params, grads, momentum_buf, n, lr, momentum, weight_decay);
  }
  void sum_squares(double* out, const float* x, int64_t n) override { *out = cpu::sum_squares(x, n); }
  void scale(float* x, int64_t n, float s) override { cpu::scale_inplace(x, n, s); }
  void add_f32(float* y, const float* x, int64_t n) override { cpu::add_inplace(y, x, n); }
  void cast(void* dst, core::DType dst_type, const void* src, core::DType src_type, int64_t n) override {
    MT_CHECK(dst_type == src_type, "the CPU kernels cast only between equal types ({} -> {} requested)",
             core::dtype_name(src_type), core::dtype_name(dst_type));
    if (dst != src && n > 0) std::memmove(dst, src, static_cast<size_t>(n) * core::dtype_size(dst_type));
  }
};

}  // namespace

Ops& cpu_ops() {
  static CpuOps ops;
  return ops;
}

std::unique_ptr<Ops> make_cpu_ops() { return std::make_unique<CpuOps>(); }

}  // namespace mt::kernels
