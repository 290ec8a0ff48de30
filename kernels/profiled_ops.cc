// What: profile_ops(), the timing decorator of Ops, and OpProfile's event pool and table (see
// profiled_ops.h). The decorator is one override per Ops method, each the same three lines:
// time the call with a pair of events, forward it unchanged.
#include "kernels/profiled_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "core/error.h"

namespace mt::kernels {

size_t OpProfile::begin(const char* name) {
  if (used_ == slots_.size()) {
    Slot s;
    s.start = device_.create_timing_event();
    s.stop = device_.create_timing_event();
    slots_.push_back(std::move(s));
  }
  Slot& s = slots_[used_];
  s.name = name;
  s.start->record();
  return used_++;
}

void OpProfile::end(size_t slot) { slots_[slot].stop->record(); }

void OpProfile::collect(bool keep) {
  device_.synchronize();
  if (keep) {
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < totals_.size(); ++i) index[totals_[i].name] = i;
    for (size_t i = 0; i < used_; ++i) {
      const Slot& s = slots_[i];
      auto it = index.find(s.name);
      if (it == index.end()) {
        it = index.emplace(s.name, totals_.size()).first;
        totals_.push_back(OpTime{s.name, 0, 0.0});
      }
      totals_[it->second].calls += 1;
      totals_[it->second].ms += s.stop->elapsed_ms_since(*s.start);
    }
  }
  used_ = 0;
}

void OpProfile::reset() { totals_.clear(); }

std::vector<OpTime> OpProfile::totals() const {
  std::vector<OpTime> out = totals_;
  std::stable_sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.ms > b.ms; });
  return out;
}

double OpProfile::total_ms() const {
  double ms = 0;
  for (const OpTime& t : totals_) ms += t.ms;
  return ms;
}

std::string format_op_profile(const std::vector<OpTime>& ops, int steps, double step_ms) {
  MT_CHECK(steps > 0, "format_op_profile: steps must be positive");
  double total = 0;
  for (const OpTime& t : ops) total += t.ms;
  std::string out = fmt::format("  {:<28} {:>9} {:>11} {:>8}{}\n", "op", "calls/step", "ms/step", "% ops",
                                step_ms > 0 ? "   % step" : "");
  for (const OpTime& t : ops) {
    const double ms = t.ms / steps;
    out += fmt::format("  {:<28} {:>9.0f} {:>11.3f} {:>7.1f}%", t.name, static_cast<double>(t.calls) / steps, ms,
                       total > 0 ? 100.0 * t.ms / total : 0.0);
    if (step_ms > 0) out += fmt::format(" {:>8.1f}%", 100.0 * ms / step_ms);
    out += "\n";
  }
  out += fmt::format("  {:<28} {:>9} {:>11.3f} {:>7.1f}%", "all kernels", "", total / steps, 100.0);
  if (step_ms > 0) out += fmt::format(" {:>8.1f}%", 100.0 * total / steps / step_ms);
  out += "\n";
  return out;
}

namespace {

// Records the start event on construction and the stop event on destruction.
class Timed {
 public:
  Timed(OpProfile& p, const char* name) : p_(p), slot_(p.begin(name)) {}
  ~Timed() { p_.end(slot_); }
  Timed(const Timed&) = delete;
  Timed& operator=(const Timed&) = delete;

 private:
  OpProfile& p_;
  size_t slot_;
};

class ProfiledOps final : public Ops {
 public:
  ProfiledOps(std::unique_ptr<Ops> inner, OpProfile* profile) : inner_(std::move(inner)), profile_(profile) {}

  core::Device& device() const override { return inner_->device(); }
  core::DType working_dtype() const override { return inner_->working_dtype(); }
  std::string describe() const override { return inner_->describe(); }
  void matmul_forward(void* out, const void* inp, const void* weight, const void* bias, int N, int C, int OC) override {
    Timed timed(*profile_, "matmul_forward");
    inner_->matmul_forward(out, inp, weight, bias, N, C, OC);
  }
  void matmul_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp, const void* weight,
                       int N, int C, int OC) override {
    Timed timed(*profile_, "matmul_backward");
    inner_->matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
  }
  void add_bias(void* out, const void* bias, int64_t N, int OC) override {
    Timed timed(*profile_, "add_bias");
    inner_->add_bias(out, bias, N, OC);
  }
  void bias_backward(float* dbias, const void* dout, int64_t N, int OC) override {
    Timed timed(*profile_, "bias_backward");
    inner_->bias_backward(dbias, dout, N, OC);
  }
  void layernorm_forward(void* out, float* mean, float* rstd, const void* inp, const void* weight, const void* bias,
                         int N, int C) override {
    Timed timed(*profile_, "layernorm_forward");
    inner_->layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
  }
  void layernorm_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* inp,
                          const void* weight, const float* mean, const float* rstd, int N, int C) override {
    Timed timed(*profile_, "layernorm_backward");
    inner_->layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
  }
  void gelu_forward(void* out, const void* inp, int64_t n) override {
    Timed timed(*profile_, "gelu_forward");
    inner_->gelu_forward(out, inp, n);
  }
  void gelu_backward(void* dinp, const void* inp, const void* dout, int64_t n) override {
    Timed timed(*profile_, "gelu_backward");
    inner_->gelu_backward(dinp, inp, dout, n);
  }
  void residual_forward(void* out, const void* a, const void* b, int64_t n) override {
    Timed timed(*profile_, "residual_forward");
    inner_->residual_forward(out, a, b, n);
  }
  void residual_backward(void* da, void* db, const void* dout, int64_t n) override {
    Timed timed(*profile_, "residual_backward");
    inner_->residual_backward(da, db, dout, n);
  }
  int64_t attention_state_elems(int B, int T, int NH) const override { return inner_->attention_state_elems(B, T, NH); }
  void attention_forward(void* out, float* state, const void* qkv, const int32_t* doc_ids, int B, int T, int C, int NH,
                         int NKV) override {
    Timed timed(*profile_, "attention_forward");
    inner_->attention_forward(out, state, qkv, doc_ids, B, T, C, NH, NKV);
  }
  void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* out, const float* state,
                          const int32_t* doc_ids, int B, int T, int C, int NH, int NKV) override {
    Timed timed(*profile_, "attention_backward");
    inner_->attention_backward(dqkv, dout, qkv, out, state, doc_ids, B, T, C, NH, NKV);
  }
  void kv_cache_append(void* k_cache, void* v_cache, const void* qkv, int B, int n_new, int past, int max_len, int NH,
                       int NKV, int HS) override {
    Timed timed(*profile_, "kv_cache_append");
    inner_->kv_cache_append(k_cache, v_cache, qkv, B, n_new, past, max_len, NH, NKV, HS);
  }
  void attention_decode(void* out, const void* qkv, const void* k_cache, const void* v_cache, int B, int n_new,
                        int past, int max_len, int NH, int NKV, int HS) override {
    Timed timed(*profile_, "attention_decode");
    inner_->attention_decode(out, qkv, k_cache, v_cache, B, n_new, past, max_len, NH, NKV, HS);
  }
  void rmsnorm_forward(void* out, float* rstd, const void* inp, const void* weight, int N, int C, float eps) override {
    Timed timed(*profile_, "rmsnorm_forward");
    inner_->rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
  }
  void rmsnorm_backward(void* dinp, float* dweight, const void* dout, const void* inp, const void* weight,
                        const float* rstd, int N, int C) override {
    Timed timed(*profile_, "rmsnorm_backward");
    inner_->rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
  }
  void swiglu_forward(void* out, const void* inp, int64_t N, int F) override {
    Timed timed(*profile_, "swiglu_forward");
    inner_->swiglu_forward(out, inp, N, F);
  }
  void swiglu_backward(void* dinp, const void* inp, const void* dout, int64_t N, int F) override {
    Timed timed(*profile_, "swiglu_backward");
    inner_->swiglu_backward(dinp, inp, dout, N, F);
  }
  void rope_forward(void* x, const float* cos, const float* sin, const int32_t* pos, int N, int stride, int n_heads,
                    int HS) override {
    Timed timed(*profile_, "rope_forward");
    inner_->rope_forward(x, cos, sin, pos, N, stride, n_heads, HS);
  }
  void rope_backward(void* dx, const float* cos, const float* sin, const int32_t* pos, int N, int stride, int n_heads,
                     int HS) override {
    Timed timed(*profile_, "rope_backward");
    inner_->rope_backward(dx, cos, sin, pos, N, stride, n_heads, HS);
  }
  void token_embedding_forward(void* out, const int32_t* tokens, const void* wte, int N, int C, int v_start,
                               int v_count) override {
    Timed timed(*profile_, "token_embedding_forward");
    inner_->token_embedding_forward(out, tokens, wte, N, C, v_start, v_count);
  }
  void token_embedding_backward(float* dwte, const void* dout, const int32_t* tokens, int N, int C, int v_start,
                                int v_count) override {
    Timed timed(*profile_, "token_embedding_backward");
    inner_->token_embedding_backward(dwte, dout, tokens, N, C, v_start, v_count);
  }
  void position_embedding_forward(void* out, const void* wpe, const int32_t* pos, int B, int T, int C) override {
    Timed timed(*profile_, "position_embedding_forward");
    inner_->position_embedding_forward(out, wpe, pos, B, T, C);
  }
  void position_embedding_backward(float* dwpe, const void* dout, const int32_t* pos, int B, int T, int C) override {
    Timed timed(*profile_, "position_embedding_backward");
    inner_->position_embedding_backward(dwpe, dout, pos, B, T, C);
  }
  void xent_row_max(float* rowmax, const void* logits, int N, int Vl, int v_valid) override {
    Timed timed(*profile_, "xent_row_max");
    inner_->xent_row_max(rowmax, logits, N, Vl, v_valid);
  }
  void xent_sum_exp(float* sumexp, const void* logits, const float* rowmax, int N, int Vl, int v_valid) override {
    Timed timed(*profile_, "xent_sum_exp");
    inner_->xent_sum_exp(sumexp, logits, rowmax, N, Vl, v_valid);
  }
  void xent_target_logit(float* target_logit, const void* logits, const int32_t* targets, int N, int Vl, int v_start,
                         int v_valid) override {
    Timed timed(*profile_, "xent_target_logit");
    inner_->xent_target_logit(target_logit, logits, targets, N, Vl, v_start, v_valid);
  }
  void xent_loss(float* losses, const float* rowmax, const float* sumexp, const float* target_logit, int N) override {
    Timed timed(*profile_, "xent_loss");
    inner_->xent_loss(losses, rowmax, sumexp, target_logit, N);
  }
  void xent_backward(void* dlogits, const void* logits, const float* rowmax, const float* sumexp,
                     const int32_t* targets, const float* dloss, int N, int Vl, int v_start, int v_valid) override {
    Timed timed(*profile_, "xent_backward");
    inner_->xent_backward(dlogits, logits, rowmax, sumexp, targets, dloss, N, Vl, v_start, v_valid);
  }
  void kd_sums(float* sums, const void* s, const void* t, const float* smax, const float* tmax, int N, int Vl,
               int v_valid, float temperature) override {
    Timed timed(*profile_, "kd_sums");
    inner_->kd_sums(sums, s, t, smax, tmax, N, Vl, v_valid, temperature);
  }
  void kd_loss(float* losses, float* kl, const float* ce, const float* sums, const float* smax, const float* tmax,
               int N, float alpha, float temperature) override {
    Timed timed(*profile_, "kd_loss");
    inner_->kd_loss(losses, kl, ce, sums, smax, tmax, N, alpha, temperature);
  }
  void kd_backward(void* dlogits, const void* s, const void* t, const float* smax, const float* tmax,
                   const float* sums, const float* dloss, int N, int Vl, int v_valid, float alpha,
                   float temperature) override {
    Timed timed(*profile_, "kd_backward");
    inner_->kd_backward(dlogits, s, t, smax, tmax, sums, dloss, N, Vl, v_valid, alpha, temperature);
  }
  void adamw_update(float* params, void* working, const float* grads, float* m, float* v, int64_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t t) override {
    Timed timed(*profile_, "adamw_update");
    inner_->adamw_update(params, working, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t);
  }
  void sgd_update(float* params, void* working, const float* grads, float* momentum_buf, int64_t n, float lr,
                  float momentum, float weight_decay) override {
    Timed timed(*profile_, "sgd_update");
    inner_->sgd_update(params, working, grads, momentum_buf, n, lr, momentum, weight_decay);
  }
  void sum_squares(double* out, const float* x, int64_t n) override {
    Timed timed(*profile_, "sum_squares");
    inner_->sum_squares(out, x, n);
  }
  void scale(float* x, int64_t n, float s) override {
    Timed timed(*profile_, "scale");
    inner_->scale(x, n, s);
  }
  void add_f32(float* y, const float* x, int64_t n) override {
    Timed timed(*profile_, "add_f32");
    inner_->add_f32(y, x, n);
  }
  void cast(void* dst, core::DType dst_type, const void* src, core::DType src_type, int64_t n) override {
    Timed timed(*profile_, "cast");
    inner_->cast(dst, dst_type, src, src_type, n);
  }

 private:
  std::unique_ptr<Ops> inner_;
  OpProfile* profile_;
};

}  // namespace

std::unique_ptr<Ops> profile_ops(std::unique_ptr<Ops> inner, OpProfile* profile) {
  MT_CHECK(inner && profile, "profile_ops: null ops or profile");
  return std::make_unique<ProfiledOps>(std::move(inner), profile);
}

}  // namespace mt::kernels
