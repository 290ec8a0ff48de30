// The cuBLASLt arguments of the linear layer (kernels/cuda/gemm_args.h), checked without a
// GPU: a naive column-major GEMM with exactly LtMatmul::run's semantics (A stored k x m when
// transposed, leading dimensions, D += when accumulating, the bias epilogue adding a length-m
// vector along the rows of D) fed the row-major buffers as CudaOps passes them, against the CPU
// reference linear layer, on odd shapes. A wrong transpose, leading dimension or bias side
// fails here instead of on the first GPU run.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/gemm_args.h"

namespace {

using mt::kernels::cuda::GemmArgs;

// D (m x n, ldd) = op(A) op(B) [+ D] [+ bias along m], column-major, in double.
void lt_reference(const GemmArgs& g, const float* A, size_t a_len, const float* B, size_t b_len, float* D,
                  size_t d_len, bool accumulate, const float* bias) {
  const int a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
  const int b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
  // cuBLASLt's layout rules: ld >= rows, and the matrix fits its buffer
  ASSERT_GE(g.lda, a_rows);
  ASSERT_GE(g.ldb, b_rows);
  ASSERT_GE(g.ldd, g.m);
  ASSERT_LE(static_cast<size_t>(g.lda) * (a_cols - 1) + a_rows, a_len);
  ASSERT_LE(static_cast<size_t>(g.ldb) * (b_cols - 1) + b_rows, b_len);
  ASSERT_LE(static_cast<size_t>(g.ldd) * (g.n - 1) + g.m, d_len);
  for (int j = 0; j < g.n; ++j) {
    for (int i = 0; i < g.m; ++i) {
      double s = 0;
      for (int p = 0; p < g.k; ++p) {
        const float a = g.trans_a ? A[p + static_cast<size_t>(i) * g.lda] : A[i + static_cast<size_t>(p) * g.lda];
        const float b = g.trans_b ? B[j + static_cast<size_t>(p) * g.ldb] : B[p + static_cast<size_t>(j) * g.ldb];
        s += static_cast<double>(a) * b;
      }
      float& d = D[i + static_cast<size_t>(j) * g.ldd];
      d = static_cast<float>(s + (accumulate ? d : 0.0) + (bias ? bias[i] : 0.0f));
    }
  }
}

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(a[i], b[i], 1e-4 * (1.0 + std::fabs(b[i]))) << what << " element " << i;
}

TEST(GemmArgs, LinearLayerProductsMatchTheCpuReference) {
  struct Shape {
    int N, C, OC;
  };
  for (const Shape s : {Shape{37, 20, 36}, Shape{5, 3, 7}, Shape{1, 9, 2}, Shape{64, 64, 96}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " OC=" << s.OC);
    const size_t NC = static_cast<size_t>(s.N) * s.C, NO = static_cast<size_t>(s.N) * s.OC,
                 OCC = static_cast<size_t>(s.OC) * s.C;
    const auto inp = randn(NC, 1), w = randn(OCC, 2), bias = randn(s.OC, 3), dout = randn(NO, 4);
    const auto dinp0 = randn(NC, 5), dw0 = randn(OCC, 6);

    // forward with the bias epilogue: A = weight, B = inp, D = out
    std::vector<float> out(NO, 7.0f), ref(NO);
    lt_reference(mt::kernels::cuda::linear_forward_args(s.N, s.C, s.OC), w.data(), w.size(), inp.data(),
                 inp.size(), out.data(), out.size(), false, bias.data());
    mt::kernels::cpu::matmul_forward(ref.data(), inp.data(), w.data(), bias.data(), s.N, s.C, s.OC);
    expect_close(out, ref, "out");

    // backward, accumulating: dinp (A = weight, B = dout), dweight (A = inp, B = dout)
    auto dinp = dinp0, dw = dw0, rdinp = dinp0, rdw = dw0;
    lt_reference(mt::kernels::cuda::linear_dinp_args(s.N, s.C, s.OC), w.data(), w.size(), dout.data(), dout.size(),
                 dinp.data(), dinp.size(), true, nullptr);
    lt_reference(mt::kernels::cuda::linear_dweight_args(s.N, s.C, s.OC), inp.data(), inp.size(), dout.data(),
                 dout.size(), dw.data(), dw.size(), true, nullptr);
    mt::kernels::cpu::matmul_backward(rdinp.data(), rdw.data(), nullptr, dout.data(), inp.data(), w.data(), s.N, s.C,
                                      s.OC);
    expect_close(dinp, rdinp, "dinp");
    expect_close(dw, rdw, "dweight");
  }
}

}  // namespace
