// What: LtMatmul, the model's matrix products through cuBLASLt (kernels/cuda/matmul.cc).
// Why: cuBLASLt picks tensor-core kernels for bf16 inputs with fp32 accumulation, can fuse
// the bias add (epilogue), and writes fp32 outputs from bf16 inputs (the weight gradients
// accumulate in fp32). One object per CudaOps: the handle, a workspace, and a cache of
// descriptors and chosen algorithms per problem (shapes, types, pointer alignments).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "core/device.h"
#include "core/tensor.h"
#include "kernels/cuda/launch.h"

namespace mt::kernels::cuda {

class LtMatmul {
 public:
  explicit LtMatmul(core::Device& dev);
  ~LtMatmul();
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;

  // Column-major (BLAS) product on the device stream:
  //   D (m x n, leading dim ldd) = op(A) (m x k) * op(B) (k x n) [+ D if accumulate] [+ bias (m)]
  // op(X) = X^T when the trans flag is set; A is stored (k x m) if trans_a else (m x k), with
  // leading dimension lda, B likewise. A and B have type ab; D has type d (F32 or the same as
  // ab); bias (optional, type d) is broadcast along the columns. Compute in fp32.
  // Returns false if the bias could not be fused (no algorithm with the epilogue): then D
  // holds the product without it and the caller adds the bias.
  bool run(bool trans_a, bool trans_b, int m, int n, int k, const void* A, int lda, const void* B, int ldb, void* D,
           int ldd, Dt ab, Dt d, bool accumulate, const void* bias);

 private:
  struct Plan;
  // trans_a, trans_b, m, n, k, lda, ldb, ldd, ab, d, has bias, alignments of A, B, D and the bias
  using Key = std::tuple<bool, bool, int, int, int, int, int, int, int, int, bool, int, int, int, int>;
  Plan& plan(const Key& key, bool trans_a, bool trans_b, int m, int n, int k, int lda, int ldb, int ldd, Dt ab, Dt d,
             const void* bias, unsigned align_a, unsigned align_b, unsigned align_d);

  core::Device& dev_;
  void* handle_ = nullptr;  // cublasLtHandle_t
  core::Tensor workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace mt::kernels::cuda
