// What: the column-major (BLAS / cuBLASLt) arguments of the linear layer's three products,
// for row-major meshtrain tensors: out (N, OC) = inp (N, C) @ W^T with W (OC, C), and its
// backward dinp (N, C) += dout @ W, dweight (OC, C) += dout^T @ inp.
// Why: a row-major (R, K) array is the column-major (K x R) matrix with leading dimension K,
// i.e. its transpose; every product is therefore computed transposed (D^T = op(B)^T op(A)^T
// swapped into D^T = op(A') op(B')), which is easy to get wrong and impossible to see on a
// machine without a GPU. Kept apart from matmul.cc (plain C++, no CUDA headers) so the CPU
// build checks these exact numbers against the CPU reference with a naive column-major GEMM
// (tests/unit/gemm_args_test.cc). LtMatmul::run takes them as they are.
//
// Convention (LtMatmul::run): D (m x n, ld ldd) = op(A) (m x k) * op(B) (k x n); A is stored
// (k x m) if trans_a else (m x k), leading dimension lda; B likewise with ldb.
#pragma once

namespace mt::kernels::cuda {

struct GemmArgs {
  bool trans_a, trans_b;
  int m, n, k;
  int lda, ldb, ldd;
};

// out^T (OC x N) = W (stored C x OC col-major, transposed) * inp^T (C x N). A = weight, B = inp,
// D = out. The bias (OC) runs along m: cuBLASLt's CUBLASLT_EPILOGUE_BIAS adds a length-m vector.
inline GemmArgs linear_forward_args(int N, int C, int OC) { return {true, false, OC, N, C, C, C, OC}; }

// dinp^T (C x N) += W^T (stored C x OC col-major, as is) * dout^T (OC x N). A = weight,
// B = dout, D = dinp.
inline GemmArgs linear_dinp_args(int N, int C, int OC) { return {false, false, C, N, OC, C, OC, C}; }

// dweight^T (C x OC) += inp^T (C x N) * dout (dout^T stored OC x N, transposed). A = inp,
// B = dout, D = dweight.
inline GemmArgs linear_dweight_args(int N, int C, int OC) { return {false, true, C, OC, N, C, OC, C}; }

}  // namespace mt::kernels::cuda
