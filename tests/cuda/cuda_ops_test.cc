// Every CUDA op against the CPU reference kernels (kernels/cpu), forward and backward, in
// fp32 and bf16 working precision, on odd shapes (token counts, widths and head sizes that
// are not multiples of 32; a vocabulary slice with padding). The CPU gets the inputs rounded
// as the GPU sees them, so the tolerance covers only the GPU's own rounding and summation
// order. Backward ops start from non-zero gradients to check that they accumulate.
// Without a usable GPU every test here is SKIPPED with the CUDA runtime's reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"
#include "cuda/cuda_test_util.h"
#include "kernels/cpu/kernels.h"
#include "kernels/ops.h"

namespace {

namespace cpu = mt::kernels::cpu;
using mt::core::DType;
using mt::core::Tensor;
using mt::test::as_seen;
using mt::test::randn;

class CudaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    MT_REQUIRE_GPU();
    dev_ = &mt::core::get_device("cuda:0");
    mt::kernels::OpsOptions o;
    o.working = GetParam();
    o.attention = "own";
    ops_ = mt::kernels::make_ops(*dev_, o);
  }
  bool bf16() const { return GetParam() == DType::BF16; }
  // working-dtype and fp32 device buffers from host values; host values back
  Tensor W(const std::vector<float>& v) { return mt::test::upload(*dev_, v, GetParam()); }
  Tensor F(const std::vector<float>& v) { return mt::test::upload(*dev_, v, DType::F32); }
  Tensor I(const std::vector<int32_t>& v) { return mt::test::upload_i32(*dev_, v); }
  std::vector<float> get(const Tensor& t) { return mt::test::download(*dev_, t); }
  std::vector<float> seen(const std::vector<float>& v) const { return as_seen(v, bf16()); }
  // tolerances for values stored in the working dtype
  double atol() const { return bf16() ? 2e-2 : 1e-5; }
  double rtol() const { return bf16() ? 1.6e-2 : 1e-5; }

  mt::core::Device* dev_ = nullptr;
  std::unique_ptr<mt::kernels::Ops> ops_;
};

INSTANTIATE_TEST_SUITE_P(Precision, CudaOps, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(mt::core::dtype_name(info.param)); });

TEST_P(CudaOps, MatmulForwardAndBackward) {
  struct Shape {
    int N, C, OC;
  };
  for (const Shape s : {Shape{37, 20, 36}, Shape{64, 64, 96}, Shape{5, 3, 7}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " OC=" << s.OC);
    const auto inp = seen(randn(s.N * s.C, 1)), w = seen(randn(s.OC * s.C, 2, 0.3f)), b = seen(randn(s.OC, 3));
    for (bool with_bias : {true, false}) {
      Tensor out = W(std::vector<float>(s.N * s.OC, 7.0f));
      Tensor ti = W(inp), tw = W(w), tb = W(b);
      ops_->matmul_forward(out.raw(), ti.raw(), tw.raw(), with_bias ? tb.raw() : nullptr, s.N, s.C, s.OC);
      std::vector<float> ref(s.N * s.OC);
      cpu::matmul_forward(ref.data(), inp.data(), w.data(), with_bias ? b.data() : nullptr, s.N, s.C, s.OC);
      EXPECT_CLOSE(get(out), ref, atol() * 4, rtol());
    }
    // backward accumulates into non-zero gradients
    const auto dout = seen(randn(s.N * s.OC, 4)), dinp0 = seen(randn(s.N * s.C, 5));
    const auto dw0 = randn(s.OC * s.C, 6), db0 = randn(s.OC, 7);
    Tensor td = W(dout), tdi = W(dinp0), tdw = F(dw0), tdb = F(db0), ti = W(inp), tw = W(w);
    ops_->matmul_backward(tdi.raw(), tdw.f32(), tdb.f32(), td.raw(), ti.raw(), tw.raw(), s.N, s.C, s.OC);
    auto rdi = dinp0, rdw = dw0, rdb = db0;
    cpu::matmul_backward(rdi.data(), rdw.data(), rdb.data(), dout.data(), inp.data(), w.data(), s.N, s.C, s.OC);
    EXPECT_CLOSE(get(tdi), rdi, atol() * 4, rtol());
    EXPECT_CLOSE(get(tdw), rdw, 1e-4, 1e-4);  // fp32 output, products of the same inputs
    EXPECT_CLOSE(get(tdb), rdb, 1e-4, 1e-4);
  }
}

TEST_P(CudaOps, RowParallelBiasAndItsGradient) {
  const int N = 300, OC = 45;  // N spans two row chunks of the column reduction
  const auto x = seen(randn(N * OC, 1)), b = seen(randn(OC, 2)), db0 = randn(OC, 3);
  Tensor tx = W(x), tb = W(b), tdb = F(db0);
  ops_->add_bias(tx.raw(), tb.raw(), N, OC);
  auto rx = x;
  cpu::add_bias(rx.data(), b.data(), N, OC);
  EXPECT_CLOSE(get(tx), rx, atol(), rtol());
  Tensor td = W(x);
  ops_->bias_backward(tdb.f32(), td.raw(), N, OC);
  auto rdb = db0;
  cpu::bias_backward(rdb.data(), x.data(), N, OC);
  EXPECT_CLOSE(get(tdb), rdb, 1e-4, 1e-5);
}

TEST_P(CudaOps, LayerNormForwardAndBackward) {
  const int N = 19, C = 52;
  auto x = randn(N * C, 1);
  for (auto& v : x) v = v * 2.0f + 3.0f;  // |mean| >> 0, as in the residual stream
  x = seen(x);
  const auto w = seen(randn(C, 2)), b = seen(randn(C, 3));
  Tensor tx = W(x), tw = W(w), tb = W(b), out = W(std::vector<float>(N * C)), mean = F(std::vector<float>(N)),
         rstd = F(std::vector<float>(N));
  ops_->layernorm_forward(out.raw(), mean.f32(), rstd.f32(), tx.raw(), tw.raw(), tb.raw(), N, C);
  std::vector<float> rout(N * C), rmean(N), rrstd(N);
  cpu::layernorm_forward(rout.data(), rmean.data(), rrstd.data(), x.data(), w.data(), b.data(), N, C);
  EXPECT_CLOSE(get(out), rout, atol(), rtol());
  EXPECT_CLOSE(get(mean), rmean, 1e-5, 1e-5);
  EXPECT_CLOSE(get(rstd), rrstd, 1e-5, 1e-5);

  const auto dout = seen(randn(N * C, 4)), dinp0 = seen(randn(N * C, 5)), dw0 = randn(C, 6), db0 = randn(C, 7);
  Tensor td = W(dout), tdi = W(dinp0), tdw = F(dw0), tdb = F(db0);
  // the statistics the CPU computed, so both backwards see the same mean/rstd
  Tensor tm = F(rmean), tr = F(rrstd);
  ops_->layernorm_backward(tdi.raw(), tdw.f32(), tdb.f32(), td.raw(), tx.raw(), tw.raw(), tm.f32(), tr.f32(), N, C);
  auto rdi = dinp0, rdw = dw0, rdb = db0;
  cpu::layernorm_backward(rdi.data(), rdw.data(), rdb.data(), dout.data(), x.data(), w.data(), rmean.data(),
                          rrstd.data(), N, C);
  EXPECT_CLOSE(get(tdi), rdi, atol() * 2, rtol());
  EXPECT_CLOSE(get(tdw), rdw, 1e-4, 1e-4);
  EXPECT_CLOSE(get(tdb), rdb, 1e-4, 1e-4);
}

TEST_P(CudaOps, GeluAndResidual) {
  const int64_t n = 1001;
  auto x = randn(n, 1, 3.0f);
  x[0] = -30.0f;  // saturation: exactly 0 and 1 gates, never NaN
  x[1] = 30.0f;
  x = seen(x);
  Tensor tx = W(x), out = W(std::vector<float>(n));
  ops_->gelu_forward(out.raw(), tx.raw(), n);
  std::vector<float> rout(n);
  cpu::gelu_forward(rout.data(), x.data(), n);
  EXPECT_CLOSE(get(out), rout, atol(), rtol());
  const auto dout = seen(randn(n, 2)), d0 = seen(randn(n, 3));
  Tensor td = W(dout), tdi = W(d0);
  ops_->gelu_backward(tdi.raw(), tx.raw(), td.raw(), n);
  auto rdi = d0;
  cpu::gelu_backward(rdi.data(), x.data(), dout.data(), n);
  EXPECT_CLOSE(get(tdi), rdi, atol(), rtol());

  const auto a = seen(randn(n, 4)), b = seen(randn(n, 5));
  Tensor ta = W(a), tb = W(b), sum = W(std::vector<float>(n));
  ops_->residual_forward(sum.raw(), ta.raw(), tb.raw(), n);
  std::vector<float> rsum(n);
  cpu::residual_forward(rsum.data(), a.data(), b.data(), n);
  EXPECT_CLOSE(get(sum), rsum, atol(), rtol());
  // backward with dout aliasing da (the model passes the residual stream's gradient so)
  ops_->residual_backward(ta.raw(), tb.raw(), ta.raw(), n);
  auto ra = a, rb = b;
  cpu::residual_backward(ra.data(), rb.data(), ra.data(), n);
  EXPECT_CLOSE(get(ta), ra, atol(), rtol());
  EXPECT_CLOSE(get(tb), rb, atol(), rtol());
}

// Multi-head attention (NKV == NH); grouped kv heads are in cuda_llama_ops_test.cc.
TEST_P(CudaOps, CausalAttentionWithAndWithoutDocuments) {
  struct Shape {
    int B, T, C, NH;
  };
  for (const Shape s : {Shape{2, 37, 48, 3}, Shape{1, 70, 80, 1}, Shape{3, 5, 8, 2}}) {
    for (bool docs : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH
                                        << " doc_ids=" << docs);
      const int N = s.B * s.T;
      const auto qkv = seen(randn(N * 3 * s.C, 1, 0.7f));
      std::vector<int32_t> doc(N);
      for (int b = 0; b < s.B; ++b)
        for (int t = 0; t < s.T; ++t) doc[b * s.T + t] = (t * 3 + b) / 11;  // several documents per row
      Tensor tq = W(qkv), out = W(std::vector<float>(N * s.C)), td = I(doc);
      Tensor state = F(std::vector<float>(ops_->attention_state_elems(s.B, s.T, s.NH)));
      const int32_t* dptr = docs ? static_cast<const int32_t*>(td.raw()) : nullptr;
      ops_->attention_forward(out.raw(), state.f32(), tq.raw(), dptr, s.B, s.T, s.C, s.NH, s.NH);
      std::vector<float> rout(N * s.C), ratt(static_cast<size_t>(s.B) * s.NH * s.T * s.T);
      cpu::attention_forward(rout.data(), ratt.data(), qkv.data(), docs ? doc.data() : nullptr, s.B, s.T, s.C, s.NH,
                             s.NH);
      EXPECT_CLOSE(get(out), rout, atol(), rtol());

      const auto dout = seen(randn(N * s.C, 2)), dqkv0 = seen(randn(N * 3 * s.C, 3));
      Tensor tdo = W(dout), tdq = W(dqkv0);
      // the backward reads the forward output as stored (rounded); give the CPU's rounding
      Tensor tout = W(seen(rout));
      ops_->attention_backward(tdq.raw(), tdo.raw(), tq.raw(), tout.raw(), state.f32(), dptr, s.B, s.T, s.C, s.NH,
                               s.NH);
      auto rdq = dqkv0;
      cpu::attention_backward(rdq.data(), dout.data(), qkv.data(), ratt.data(), s.B, s.T, s.C, s.NH, s.NH);
      EXPECT_CLOSE(get(tdq), rdq, atol() * 2, rtol() * 2);
    }
  }
}

TEST_P(CudaOps, EmbeddingsOnAVocabularySlice) {
  const int N = 45, C = 40, v_start = 7, v_count = 20, V = 50;
  std::vector<int32_t> tok(N);
  for (int i = 0; i < N; ++i) tok[i] = (i * 13 + i / 5) % V;  // repeats, some outside the slice
  const auto wte = seen(randn(v_count * C, 1));
  Tensor tt = I(tok), tw = W(wte), out = W(std::vector<float>(N * C, 5.0f));
  ops_->token_embedding_forward(out.raw(), static_cast<const int32_t*>(tt.raw()), tw.raw(), N, C, v_start, v_count);
  std::vector<float> rout(N * C);
  cpu::token_embedding_forward(rout.data(), tok.data(), wte.data(), N, C, v_start, v_count);
  EXPECT_EQ(get(out), rout);  // a copy: exact

  const auto dout = seen(randn(N * C, 2)), dwte0 = randn(v_count * C, 3);
  Tensor td = W(dout), tdw = F(dwte0);
  ops_->token_embedding_backward(tdw.f32(), td.raw(), static_cast<const int32_t*>(tt.raw()), N, C, v_start, v_count);
  auto rdw = dwte0;
  cpu::token_embedding_backward(rdw.data(), dout.data(), tok.data(), N, C, v_start, v_count);
  EXPECT_EQ(get(tdw), rdw);  // same additions in the same (token) order: bit-identical

  const int B = 3, T = 11;
  const auto wpe = seen(randn(16 * C, 4)), x0 = seen(randn(B * T * C, 5));
  Tensor tp = W(wpe), tx = W(x0);
  ops_->position_embedding_forward(tx.raw(), tp.raw(), nullptr, B, T, C);
  auto rx = x0;
  cpu::position_embedding_forward(rx.data(), wpe.data(), nullptr, B, T, C);
  EXPECT_CLOSE(get(tx), rx, atol(), rtol());
  const auto dpos0 = randn(T * C, 6);
  Tensor tdp = F(dpos0), tdx = W(x0);
  ops_->position_embedding_backward(tdp.f32(), tdx.raw(), nullptr, B, T, C);
  auto rdp = dpos0;
  cpu::position_embedding_backward(rdp.data(), x0.data(), nullptr, B, T, C);
  EXPECT_EQ(get(tdp), rdp);  // batch order, fp32: bit-identical
}

TEST_P(CudaOps, VocabSlicedCrossEntropy) {
  const int N = 13, Vl = 70, v_valid = 61, v_start = 64;  // a slice with 9 padding columns
  auto logits = randn(N * Vl, 1, 2.0f);
  logits = seen(logits);
  std::vector<int32_t> tgt(N);
  for (int i = 0; i < N; ++i) tgt[i] = i % 3 == 0 ? v_start + (i * 7) % v_valid : (i * 17) % 200;
  tgt[5] = -1;  // no loss at this position
  Tensor tl = W(logits), tt = I(tgt), mx = F(std::vector<float>(N)), se = F(std::vector<float>(N)),
         tgl = F(std::vector<float>(N)), loss = F(std::vector<float>(N));
  const int32_t* tptr = static_cast<const int32_t*>(tt.raw());
  ops_->xent_row_max(mx.f32(), tl.raw(), N, Vl, v_valid);
  std::vector<float> rmx(N), rse(N), rtl(N), rloss(N);
  cpu::xent_row_max(rmx.data(), logits.data(), N, Vl, v_valid);
  EXPECT_EQ(get(mx), rmx);
  ops_->xent_sum_exp(se.f32(), tl.raw(), mx.f32(), N, Vl, v_valid);
  cpu::xent_sum_exp(rse.data(), logits.data(), rmx.data(), N, Vl, v_valid);
  EXPECT_CLOSE(get(se), rse, 1e-6, 1e-5);
  ops_->xent_target_logit(tgl.f32(), tl.raw(), tptr, N, Vl, v_start, v_valid);
  cpu::xent_target_logit(rtl.data(), logits.data(), tgt.data(), N, Vl, v_start, v_valid);
  EXPECT_EQ(get(tgl), rtl);
  ops_->xent_loss(loss.f32(), mx.f32(), se.f32(), tgl.f32(), N);
  cpu::xent_loss(rloss.data(), rmx.data(), rse.data(), rtl.data(), N);
  EXPECT_CLOSE(get(loss), rloss, 1e-5, 1e-5);

  std::vector<float> dloss(N);
  for (int i = 0; i < N; ++i) dloss[i] = tgt[i] >= 0 ? 1.0f / 12 : 0.0f;
  Tensor tdl = F(dloss), dz = W(std::vector<float>(N * Vl, 9.0f));  // overwritten, not accumulated
  Tensor tse = F(rse);
  ops_->xent_backward(dz.raw(), tl.raw(), mx.f32(), tse.f32(), tptr, tdl.f32(), N, Vl, v_start, v_valid);
  std::vector<float> rdz(N * Vl);
  cpu::xent_backward(rdz.data(), logits.data(), rmx.data(), rse.data(), tgt.data(), dloss.data(), N, Vl, v_start,
                     v_valid);
  EXPECT_CLOSE(get(dz), rdz, bf16() ? 1e-3 : 1e-7, rtol());
}

TEST_P(CudaOps, DistillationPieces) {
  const int N = 11, Vl = 70, v_valid = 61;  // 9 padding columns
  const float alpha = 0.7f, T = 2.0f;
  const auto s = seen(randn(N * Vl, 21, 2.0f)), t = seen(randn(N * Vl, 22, 3.0f));
  std::vector<float> smax(N), tmax(N), ce = randn(N, 23), dloss(N);
  for (auto& c : ce) c = std::fabs(c) + 1.0f;
  for (int i = 0; i < N; ++i) dloss[i] = 1.0f / (i + 3);
  cpu::xent_row_max(smax.data(), s.data(), N, Vl, v_valid);
  cpu::xent_row_max(tmax.data(), t.data(), N, Vl, v_valid);
  Tensor ts = W(s), tt = W(t), tsm = F(smax), ttm = F(tmax), sums = F(std::vector<float>(3 * N));
  ops_->kd_sums(sums.f32(), ts.raw(), tt.raw(), tsm.f32(), ttm.f32(), N, Vl, v_valid, T);
  std::vector<float> rsums(3 * N);
  cpu::kd_sums(rsums.data(), s.data(), t.data(), smax.data(), tmax.data(), N, Vl, v_valid, T);
  EXPECT_CLOSE(get(sums), rsums, 1e-4, 1e-5);
  Tensor tce = F(ce), loss = F(std::vector<float>(N)), kl = F(std::vector<float>(N)), trs = F(rsums);
  ops_->kd_loss(loss.f32(), kl.f32(), tce.f32(), trs.f32(), tsm.f32(), ttm.f32(), N, alpha, T);
  std::vector<float> rloss(N), rkl(N);
  cpu::kd_loss(rloss.data(), rkl.data(), ce.data(), rsums.data(), smax.data(), tmax.data(), N, alpha, T);
  EXPECT_CLOSE(get(loss), rloss, 1e-5, 1e-5);
  EXPECT_CLOSE(get(kl), rkl, 1e-5, 1e-5);
  const auto dz0 = seen(randn(N * Vl, 24, 0.1f));  // (xent_backward's output)
  Tensor dz = W(dz0), tdl = F(dloss);
  ops_->kd_backward(dz.raw(), ts.raw(), tt.raw(), tsm.f32(), ttm.f32(), trs.f32(), tdl.f32(), N, Vl, v_valid, alpha,
                    T);
  auto rdz = dz0;
  cpu::kd_backward(rdz.data(), s.data(), t.data(), smax.data(), tmax.data(), rsums.data(), dloss.data(), N, Vl,
                   v_valid, alpha, T);
  EXPECT_CLOSE(get(dz), rdz, bf16() ? 1e-3 : 1e-6, rtol());
}

TEST_P(CudaOps, FusedOptimizersWriteTheWorkingCopy) {
  const int64_t n = 3000;
  const auto p0 = randn(n, 1), g = randn(n, 2, 0.1f);
  for (const char* opt : {"adamw", "sgd"}) {
    SCOPED_TRACE(opt);
    Tensor tp = F(p0), tg = F(g), tm = F(std::vector<float>(n)), tv = F(std::vector<float>(n)),
           work = W(std::vector<float>(n));
    auto rp = p0;
    std::vector<float> rm(n), rv(n);
    for (int t = 1; t <= 3; ++t) {
      if (std::string(opt) == "adamw") {
        ops_->adamw_update(tp.f32(), work.raw(), tg.f32(), tm.f32(), tv.f32(), n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
        cpu::adamw_update(rp.data(), g.data(), rm.data(), rv.data(), n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
      } else {
        ops_->sgd_update(tp.f32(), work.raw(), tg.f32(), tm.f32(), n, 1e-2f, 0.9f, 0.1f);
        cpu::sgd_update(rp.data(), g.data(), rm.data(), n, 1e-2f, 0.9f, 0.1f);
      }
    }
    const auto gp = get(tp);
    EXPECT_CLOSE(gp, rp, 1e-6, 1e-6);
    EXPECT_CLOSE(get(tm), rm, 1e-7, 1e-6);
    EXPECT_EQ(get(work), as_seen(gp, bf16()));  // the working copy is the master, rounded
  }
}

TEST_P(CudaOps, SumOfSquaresIsDeterministicAndScaleAndCast) {
  const int64_t n = 1000003;
  const auto x = randn(n, 1);
  Tensor tx = F(x);
  Tensor out = Tensor::zeros({2}, DType::F64, *dev_);
  double* o = static_cast<double*>(out.raw());
  ops_->sum_squares(o, tx.f32(), n);
  ops_->sum_squares(o + 1, tx.f32(), n);
  double h[2];
  dev_->copy(h, o, sizeof(h));
  EXPECT_EQ(h[0], h[1]);  // same bits every call
  EXPECT_NEAR(h[0], cpu::sum_squares(x.data(), n), 1e-9 * h[0]);

  ops_->scale(tx.f32(), n, 0.5f);
  auto rx = x;
  cpu::scale_inplace(rx.data(), n, 0.5f);
  EXPECT_EQ(get(tx), rx);

  Tensor b = Tensor::empty({n}, DType::BF16, *dev_), back = Tensor::empty({n}, DType::F32, *dev_);
  ops_->cast(b.raw(), DType::BF16, tx.raw(), DType::F32, n);
  ops_->cast(back.raw(), DType::F32, b.raw(), DType::BF16, n);
  EXPECT_EQ(get(back), as_seen(rx, true));
}

}  // namespace
