// What: the CUDA ops the Llama model adds, against the CPU reference kernels (kernels/cpu), in
// fp32 and bf16 working precision: grouped-query attention (NKV < NH kv heads, with and without
// doc_ids; the dk/dv of a kv head gather from all query heads of its group), learned positions
// at explicit per-token positions (many tokens sharing a row of the table), RMSNorm, SwiGLU and
// RoPE (in place on the q and k heads of a fused qkv row).
// Why: cuda_ops_test.cc covers the GPT-2 ops; this file keeps the Llama ones apart (same
// fixture and conventions: the CPU gets the inputs rounded as the GPU sees them, backward ops
// start from non-zero gradients to check that they accumulate). Without a usable GPU every
// test here is SKIPPED with the CUDA runtime's reason.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
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

class CudaLlamaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    MT_REQUIRE_GPU();
    dev_ = &mt::core::get_device("cuda:0");
    ops_ = make("own");
  }
  std::unique_ptr<mt::kernels::Ops> make(const std::string& attention) {
    mt::kernels::OpsOptions o;
    o.working = GetParam();
    o.attention = attention;
    return mt::kernels::make_ops(*dev_, o);
  }
  bool bf16() const { return GetParam() == DType::BF16; }
  Tensor W(const std::vector<float>& v) { return mt::test::upload(*dev_, v, GetParam()); }
  Tensor F(const std::vector<float>& v) { return mt::test::upload(*dev_, v, DType::F32); }
  Tensor I(const std::vector<int32_t>& v) { return mt::test::upload_i32(*dev_, v); }
  static const int32_t* ip(const Tensor& t) { return static_cast<const int32_t*>(t.raw()); }
  std::vector<float> get(const Tensor& t) { return mt::test::download(*dev_, t); }
  std::vector<float> seen(const std::vector<float>& v) const { return as_seen(v, bf16()); }
  double atol() const { return bf16() ? 2e-2 : 1e-5; }
  double rtol() const { return bf16() ? 1.6e-2 : 1e-5; }

  mt::core::Device* dev_ = nullptr;
  std::unique_ptr<mt::kernels::Ops> ops_;
};

INSTANTIATE_TEST_SUITE_P(Precision, CudaLlamaOps, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(mt::core::dtype_name(info.param)); });

// Positions restarting at 0 for each packed document: documents of `len` tokens, offset by b.
std::vector<int32_t> packed_positions(int B, int T, int len) {
  std::vector<int32_t> pos(static_cast<size_t>(B) * T);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) pos[b * T + t] = (t + b) % len;
  return pos;
}

struct AttShape {
  int B, T, C, NH, NKV;
};

TEST_P(CudaLlamaOps, GroupedQueryAttentionWithAndWithoutDocuments) {
  // HS = 12, 16, 8 (below a warp) and 40 (two channels per lane); groups of 2, 6, 4 and 3
  // query heads; NKV == NH once more for the multi-head path through the same code.
  for (const AttShape s : {AttShape{2, 37, 48, 4, 2}, AttShape{1, 45, 96, 6, 1}, AttShape{3, 70, 64, 8, 2},
                           AttShape{2, 33, 240, 6, 3}, AttShape{2, 21, 32, 2, 2}}) {
    for (bool docs : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH
                                        << " NKV=" << s.NKV << " doc_ids=" << docs);
      const int N = s.B * s.T, HS = s.C / s.NH, W3 = (s.NH + 2 * s.NKV) * HS;
      const auto qkv = seen(randn(static_cast<size_t>(N) * W3, 1, 0.7f));
      std::vector<int32_t> doc(N);
      for (int b = 0; b < s.B; ++b)
        for (int t = 0; t < s.T; ++t) doc[b * s.T + t] = (t * 3 + b) / 11;  // several documents per row
      Tensor tq = W(qkv), out = W(std::vector<float>(N * s.C)), td = I(doc);
      Tensor state = F(std::vector<float>(ops_->attention_state_elems(s.B, s.T, s.NH)));
      const int32_t* dptr = docs ? ip(td) : nullptr;
      ops_->attention_forward(out.raw(), state.f32(), tq.raw(), dptr, s.B, s.T, s.C, s.NH, s.NKV);
      std::vector<float> rout(N * s.C), ratt(static_cast<size_t>(s.B) * s.NH * s.T * s.T);
      cpu::attention_forward(rout.data(), ratt.data(), qkv.data(), docs ? doc.data() : nullptr, s.B, s.T, s.C, s.NH,
                             s.NKV);
      EXPECT_CLOSE(get(out), rout, atol(), rtol());

      const auto dout = seen(randn(N * s.C, 2)), dqkv0 = seen(randn(static_cast<size_t>(N) * W3, 3));
      Tensor tdo = W(dout), tdq = W(dqkv0), tdq2 = W(dqkv0);
      Tensor tout = W(seen(rout));  // the backward reads the forward output as stored (rounded)
      ops_->attention_backward(tdq.raw(), tdo.raw(), tq.raw(), tout.raw(), state.f32(), dptr, s.B, s.T, s.C, s.NH,
                               s.NKV);
      auto rdq = dqkv0;
      cpu::attention_backward(rdq.data(), dout.data(), qkv.data(), ratt.data(), s.B, s.T, s.C, s.NH, s.NKV);
      // dk/dv of a kv head sum NH/NKV heads' contributions: a little more rounding in bf16.
      EXPECT_CLOSE(get(tdq), rdq, atol() * 3, rtol() * 2);
      // No atomics: a second backward from the same start gives the same bits.
      ops_->attention_backward(tdq2.raw(), tdo.raw(), tq.raw(), tout.raw(), state.f32(), dptr, s.B, s.T, s.C, s.NH,
                               s.NKV);
      EXPECT_EQ(get(tdq2), get(tdq));
    }
  }
}

// With attention "auto"/"cudnn", grouped kv heads must take the own kernel (the cuDNN seam is
// multi-head only) and give the CPU's result, never a multi-head reading of the GQA layout.
TEST_P(CudaLlamaOps, GroupedQueryAttentionUnderTheCudnnOptions) {
  const AttShape s{2, 40, 64, 4, 1};
  const int N = s.B * s.T, HS = s.C / s.NH, W3 = (s.NH + 2 * s.NKV) * HS;
  const auto qkv = seen(randn(static_cast<size_t>(N) * W3, 4, 0.7f));
  std::vector<float> rout(N * s.C), ratt(static_cast<size_t>(s.B) * s.NH * s.T * s.T);
  cpu::attention_forward(rout.data(), ratt.data(), qkv.data(), nullptr, s.B, s.T, s.C, s.NH, s.NKV);
  for (const char* impl : {"auto", "cudnn"}) {
    SCOPED_TRACE(impl);
    auto ops = make(impl);
    Tensor tq = W(qkv), out = W(std::vector<float>(N * s.C));
    Tensor state = F(std::vector<float>(ops->attention_state_elems(s.B, s.T, s.NH)));
    ops->attention_forward(out.raw(), state.f32(), tq.raw(), nullptr, s.B, s.T, s.C, s.NH, s.NKV);
    EXPECT_CLOSE(get(out), rout, atol(), rtol());
  }
}

TEST_P(CudaLlamaOps, PositionEmbeddingAtExplicitPositions) {
  struct Shape {
    int B, T, C, len;
  };
  // 1200 tokens span two tiles of the scatter's token staging; C = 200 two channel blocks.
  for (const Shape s : {Shape{3, 11, 40, 4}, Shape{4, 300, 200, 37}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " C=" << s.C << " doc len=" << s.len);
    const int N = s.B * s.T, T_max = s.T + 5;
    const auto pos = packed_positions(s.B, s.T, s.len);
    const auto wpe = seen(randn(static_cast<size_t>(T_max) * s.C, 1)), x0 = seen(randn(N * s.C, 2));
    Tensor tp = W(wpe), tx = W(x0), tpos = I(pos);
    ops_->position_embedding_forward(tx.raw(), tp.raw(), ip(tpos), s.B, s.T, s.C);
    auto rx = x0;
    cpu::position_embedding_forward(rx.data(), wpe.data(), pos.data(), s.B, s.T, s.C);
    EXPECT_CLOSE(get(tx), rx, atol(), rtol());

    const auto dwpe0 = randn(static_cast<size_t>(T_max) * s.C, 3);
    Tensor tdw = F(dwpe0), tdo = W(x0);
    ops_->position_embedding_backward(tdw.f32(), tdo.raw(), ip(tpos), s.B, s.T, s.C);
    auto rdw = dwpe0;
    cpu::position_embedding_backward(rdw.data(), x0.data(), pos.data(), s.B, s.T, s.C);
    EXPECT_EQ(get(tdw), rdw);  // same additions in token order, fp32: bit-identical
  }
}

TEST_P(CudaLlamaOps, RmsNormForwardAndBackward) {
  struct Shape {
    int N, C;
    float eps;
  };
  // N = 300 spans two row chunks of the column reduction; C not a multiple of 32.
  for (const Shape s : {Shape{19, 52, 1e-5f}, Shape{300, 130, 1e-6f}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C);
    auto x = randn(s.N * s.C, 1, 2.0f);
    x = seen(x);
    const auto w = seen(randn(s.C, 2));
    Tensor tx = W(x), tw = W(w), out = W(std::vector<float>(s.N * s.C)), rstd = F(std::vector<float>(s.N));
    ops_->rmsnorm_forward(out.raw(), rstd.f32(), tx.raw(), tw.raw(), s.N, s.C, s.eps);
    std::vector<float> rout(s.N * s.C), rrstd(s.N);
    cpu::rmsnorm_forward(rout.data(), rrstd.data(), x.data(), w.data(), s.N, s.C, s.eps);
    EXPECT_CLOSE(get(out), rout, atol(), rtol());
    EXPECT_CLOSE(get(rstd), rrstd, 1e-6, 1e-5);

    const auto dout = seen(randn(s.N * s.C, 4)), dinp0 = seen(randn(s.N * s.C, 5)), dw0 = randn(s.C, 6);
    Tensor td = W(dout), tdi = W(dinp0), tdw = F(dw0), tr = F(rrstd);  // the CPU's statistics for both
    ops_->rmsnorm_backward(tdi.raw(), tdw.f32(), td.raw(), tx.raw(), tw.raw(), tr.f32(), s.N, s.C);
    auto rdi = dinp0, rdw = dw0;
    cpu::rmsnorm_backward(rdi.data(), rdw.data(), dout.data(), x.data(), w.data(), rrstd.data(), s.N, s.C);
    EXPECT_CLOSE(get(tdi), rdi, atol() * 2, rtol());
    EXPECT_CLOSE(get(tdw), rdw, 1e-4, 1e-4);
    // null gradients are skipped
    ops_->rmsnorm_backward(nullptr, nullptr, td.raw(), tx.raw(), tw.raw(), tr.f32(), s.N, s.C);
    EXPECT_CLOSE(get(tdw), rdw, 1e-4, 1e-4);
  }
}

TEST_P(CudaLlamaOps, SwiGluForwardAndBackward) {
  const int64_t N = 37;
  const int F_ = 45;
  auto inp = randn(N * 2 * F_, 1, 3.0f);
  inp[0] = -30.0f;  // saturated gates: exactly 0 / identity, never NaN
  inp[1] = 30.0f;
  inp[2] = -100.0f;  // exp(100) overflows to inf: the terms are exact zeros
  inp = seen(inp);
  Tensor ti = W(inp), out = W(std::vector<float>(N * F_));
  ops_->swiglu_forward(out.raw(), ti.raw(), N, F_);
  std::vector<float> rout(N * F_);
  cpu::swiglu_forward(rout.data(), inp.data(), N, F_);
  EXPECT_CLOSE(get(out), rout, atol(), rtol());

  const auto dout = seen(randn(N * F_, 2)), d0 = seen(randn(N * 2 * F_, 3));
  Tensor td = W(dout), tdi = W(d0);
  ops_->swiglu_backward(tdi.raw(), ti.raw(), td.raw(), N, F_);
  auto rdi = d0;
  cpu::swiglu_backward(rdi.data(), inp.data(), dout.data(), N, F_);
  EXPECT_CLOSE(get(tdi), rdi, atol() * 2, rtol());
}

TEST_P(CudaLlamaOps, RopeOnTheQAndKHeadsOfAFusedQkvRow) {
  const int B = 2, T = 29, NH = 4, NKV = 2, HS = 12, H = HS / 2, max_pos = 40;
  const int N = B * T, stride = (NH + 2 * NKV) * HS, n_heads = NH + NKV;
  // Hugging Face's tables: angle = pos * theta^(-2i/HS), in fp32.
  std::vector<float> cos(max_pos * H), sin(max_pos * H);
  for (int p = 0; p < max_pos; ++p)
    for (int i = 0; i < H; ++i) {
      const float inv_freq = 1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / HS);
      const float a = static_cast<float>(p) * inv_freq;
      cos[p * H + i] = std::cos(a);
      sin[p * H + i] = std::sin(a);
    }
  const auto pos = packed_positions(B, T, 17);
  const auto x = seen(randn(static_cast<size_t>(N) * stride, 1));
  Tensor tc = F(cos), ts = F(sin), tpos = I(pos);
  for (bool backward : {false, true}) {
    SCOPED_TRACE(backward ? "backward" : "forward");
    Tensor tx = W(x);
    auto rx = x;
    if (backward) {
      ops_->rope_backward(tx.raw(), tc.f32(), ts.f32(), ip(tpos), N, stride, n_heads, HS);
      cpu::rope_backward(rx.data(), cos.data(), sin.data(), pos.data(), N, stride, n_heads, HS);
    } else {
      ops_->rope_forward(tx.raw(), tc.f32(), ts.f32(), ip(tpos), N, stride, n_heads, HS);
      cpu::rope_forward(rx.data(), cos.data(), sin.data(), pos.data(), N, stride, n_heads, HS);
    }
    const auto got = get(tx);
    EXPECT_CLOSE(got, rx, atol(), rtol());
    // the v heads (channels past n_heads * HS) are untouched, bit for bit
    for (int n = 0; n < N; ++n)
      for (int c = n_heads * HS; c < stride; ++c) ASSERT_EQ(got[n * stride + c], x[n * stride + c]) << n << "," << c;
  }
  // backward undoes forward (the rotation is orthogonal)
  Tensor tx = W(x);
  ops_->rope_forward(tx.raw(), tc.f32(), ts.f32(), ip(tpos), N, stride, n_heads, HS);
  ops_->rope_backward(tx.raw(), tc.f32(), ts.f32(), ip(tpos), N, stride, n_heads, HS);
  EXPECT_CLOSE(get(tx), x, atol() * 2, rtol() * 2);
}

}  // namespace
