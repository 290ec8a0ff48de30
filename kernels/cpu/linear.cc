// What: the linear layer (matmul + optional bias), forward and backward, on the CPU.
//   forward : out (N, OC) = inp (N, C) @ weight^T + bias, weight (OC, C), bias (OC)
//   backward: dinp (N, C) += dout @ weight; dweight (OC, C) += dout^T @ inp; dbias += sum_n dout
// Why: the matmuls are the bulk of the model's FLOPs, so they go to BLAS (OpenBLAS sgemm),
// which runs near peak; everything else here is a readable loop (llm.c train_gpt2.c style).
// Layout: every array is row-major float; the weight is stored (OC, C) like PyTorch's
// nn.Linear, so the forward is a "NT" gemm (inp times weight transposed).
// Determinism and threading (measured): OpenBLAS's own threading gives results that differ
// in the last bits between 1 and 2 threads (e.g. N=512, C=64, OC=192), and its spinning
// thread pool fights OpenMP's. So BLAS runs single-threaded (launch/ sets
// openblas_set_num_threads(1)) and gemm_blocked() below splits each product's output into at
// most kGemmBlocks blocks along its larger dimension, one single-threaded sgemm per block,
// OpenMP over blocks. The blocks depend only on the shape, never on the thread count, so the
// results are bitwise identical for any number of threads; splitting the larger side means
// only the smaller operand is packed again per block. The bias gradient, a reduction over
// tokens, is split over output channels: each dbias[o] is summed over n = 0..N-1 in order by
// exactly one thread.
// One token (N = 1, decoding) goes to sgemv instead, in the same fixed blocks.
// Accumulation: the backward adds (+=) into its gradients (gemm beta = 1); callers zero the
// gradients once per step so micro-batches accumulate. Any gradient pointer may be null.
#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu/kernels.h"

namespace mt::kernels::cpu {

namespace {

// Width of the channel blocks the bias gradient is split into. Each block is owned by one
// thread, which walks all N rows and adds a contiguous run of `kChannelBlock` floats per row,
// so the inner loop is contiguous (vectorised) while the token reduction stays in order.
constexpr int kChannelBlock = 64;

// Element count at or above which the loops here go parallel (below, the fork/join cost of
// an OpenMP region is larger than the work).
constexpr int64_t kParallelMinElems = 1 << 15;

// C (M x N) = op(A) (M x K) @ op(B) (K x N) + beta * C, row-major, split into fixed blocks.
constexpr int kGemmBlocks = 8;
constexpr int64_t kGemmSplitMinFlops = int64_t{1} << 20;  // smaller products: one call
void gemm_blocked(bool trans_a, bool trans_b, int M, int N, int K, const float* A, int lda,
                  const float* B, int ldb, float beta, float* C, int ldc) {
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  const bool split_rows = M >= N;
  const int dim = split_rows ? M : N;
  int block = dim;
  if (static_cast<int64_t>(M) * N * K >= kGemmSplitMinFlops) {
    block = ((dim + kGemmBlocks - 1) / kGemmBlocks + 15) / 16 * 16;
  }
  const int nblocks = (dim + block - 1) / block;
#pragma omp parallel for schedule(static) if (nblocks > 1)
  for (int b = 0; b < nblocks; b++) {
    const int s0 = b * block;
    const int len = std::min(block, dim - s0);
    if (split_rows) {  // rows s0.. of op(A) and C
      const float* Ab = trans_a ? A + s0 : A + static_cast<int64_t>(s0) * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, len, N, K, 1.0f, Ab, lda, B, ldb, beta,
                  C + static_cast<int64_t>(s0) * ldc, ldc);
    } else {  // columns s0.. of op(B) and C
      const float* Bb = trans_b ? B + static_cast<int64_t>(s0) * ldb : B + s0;
      cblas_sgemm(CblasRowMajor, ta, tb, M, len, K, 1.0f, A, lda, Bb, ldb, beta, C + s0, ldc);
    }
  }
}

void check_shapes(const char* fn, int N, int C, int OC) {
  MT_CHECK(N >= 0 && C >= 0 && OC >= 0, "{}: negative shape N={} C={} OC={}", fn, N, C, OC);
}

}  // namespace

// ---------------------------------------------------------------------------- forward
// out:    (N, OC)  written (not accumulated)
// inp:    (N, C)
// weight: (OC, C)
// bias:   (OC) or null
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int N, int C, int OC) {
  check_shapes("matmul_forward", N, C, OC);
  if (N == 0 || OC == 0) return;
  const int64_t total = static_cast<int64_t>(N) * OC;

  // Seed the output with the bias (or zero), then let the gemm add inp @ weight^T on top
  // (beta = 1). This costs one extra pass over `out`, the same as adding the bias after.
  if (bias != nullptr) {
#pragma omp parallel for schedule(static) if (total >= kParallelMinElems)
    for (int n = 0; n < N; n++) {
      float* out_n = out + static_cast<int64_t>(n) * OC;
      for (int o = 0; o < OC; o++) out_n[o] = bias[o];
    }
  }
  if (C == 0) {  // empty inner dimension: the product is zero, only the bias remains
    if (bias == nullptr) std::memset(out, 0, sizeof(float) * total);
    return;
  }
  const float beta = bias != nullptr ? 1.0f : 0.0f;
  if (N == 1) {
    // One token (KV-cached decoding): a matrix-vector product, memory bound. sgemv reads the
    // weight once where sgemm would first pack (copy) it; fixed blocks of output rows as
    // gemm_blocked's, so the result does not depend on the thread count.
    const bool split = static_cast<int64_t>(OC) * C >= kGemmSplitMinFlops;
    const int block = split ? ((OC + kGemmBlocks - 1) / kGemmBlocks + 15) / 16 * 16 : OC;
    const int nblocks = (OC + block - 1) / block;
#pragma omp parallel for schedule(static) if (nblocks > 1)
    for (int b = 0; b < nblocks; b++) {
      const int o0 = b * block, len = std::min(block, OC - o0);
      cblas_sgemv(CblasRowMajor, CblasNoTrans, len, C, 1.0f, weight + static_cast<int64_t>(o0) * C, C, inp, 1, beta,
                  out + o0, 1);
    }
    return;
  }
  // out (N x OC) = inp (N x C) * weight^T (C x OC)
  gemm_blocked(false, true, N, OC, C, inp, C, weight, C, beta, out, OC);
}

// ---------------------------------------------------------------------------- backward
// dinp:    (N, C)  += dout @ weight            (null to skip)
// dweight: (OC, C) += dout^T @ inp             (null to skip)
// dbias:   (OC)    += sum over n of dout[n, :] (null to skip)
// dout:    (N, OC)
// inp:     (N, C)
// weight:  (OC, C)
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC) {
  check_shapes("matmul_backward", N, C, OC);
  if (N == 0 || OC == 0) return;  // nothing flows back: all gradients get += 0

  if (C > 0) {
    if (dinp != nullptr) {
      // dinp (N x C) += dout (N x OC) * weight (OC x C)
      gemm_blocked(false, false, N, C, OC, dout, OC, weight, C, 1.0f, dinp, C);
    }
    if (dweight != nullptr) {
      // dweight (OC x C) += dout^T (OC x N) * inp (N x C)
      gemm_blocked(true, false, OC, C, N, dout, OC, inp, C, 1.0f, dweight, C);
    }
  }

  if (dbias != nullptr) {
    // dbias[o] += sum_n dout[n, o]. Split over blocks of output channels; within a block the
    // rows are visited in order n = 0..N-1, and the partial sum is kept in double so that
    // long token reductions (N = B*T in the thousands) lose no precision.
    const int nblocks = (OC + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * OC >= kParallelMinElems)
    for (int blk = 0; blk < nblocks; blk++) {
      const int o0 = blk * kChannelBlock;
      const int width = std::min(kChannelBlock, OC - o0);
      double acc[kChannelBlock] = {};
      for (int n = 0; n < N; n++) {
        const float* dout_n = dout + static_cast<int64_t>(n) * OC + o0;
        for (int j = 0; j < width; j++) acc[j] += dout_n[j];
      }
      for (int j = 0; j < width; j++) dbias[o0 + j] += static_cast<float>(acc[j]);
    }
  }
}

// ---------------------------------------------------------------------------- row-parallel bias
// out: (N, OC) += bias: (OC). Elementwise: any thread split gives the same bits.
void add_bias(float* out, const float* bias, int64_t N, int OC) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) out[n * OC + o] += bias[o];
}

// dbias: (OC) += sum_n dout: (N, OC). Each channel is summed in float over n = 0..N-1 in
// order by one thread (thread-count independent). Unlike matmul_backward's bias gradient
// this accumulates in float: it is the model's row-parallel bias path, kept bit for bit.
void bias_backward(float* dbias, const float* dout, int64_t N, int OC) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < OC; ++o) {
    float s = 0.0f;
    for (int64_t n = 0; n < N; ++n) s += dout[n * OC + o];
    dbias[o] += s;
  }
}

}  // namespace mt::kernels::cpu
