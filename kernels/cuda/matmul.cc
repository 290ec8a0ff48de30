// What: LtMatmul (see matmul.h): cuBLASLt products with cached descriptors and algorithms.
// Why: describing a product (descriptors, heuristic query) costs tens of microseconds; the
// model repeats a handful of shapes every step, so each distinct problem is planned once.
// Alignment: the flat parameter buffer hands out views at arbitrary element offsets, so
// pointers may be aligned to less than the 256 bytes cuBLASLt assumes by default; the actual
// alignment of every operand is passed as a preference and is part of the cache key (an
// algorithm chosen for 256-byte aligned operands must not see a 2-byte aligned one).
// Bias epilogue: the forward asks for CUBLASLT_EPILOGUE_BIAS; if no algorithm supports it
// for a shape, the plan falls back to a plain product and run() says so (the caller adds the
// bias with its own kernel).
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_ops_test.cc compares the matmuls with the CPU.
#include "kernels/cuda/matmul.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/error.h"

namespace mt::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt's recommendation for Hopper

void check_lt(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw core::Error(fmt::format("{} failed", call))
      .with_library(fmt::format("cuBLAS status {} ({}): {}", static_cast<int>(s), cublasLtGetStatusName(s),
                                cublasLtGetStatusString(s)))
      .with_where(file, line);
}
#define LT_CHECK(call) check_lt((call), #call, __FILE__, __LINE__)

cudaDataType cuda_type(Dt t) { return t == Dt::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// Largest power of two <= 256 dividing the address.
unsigned alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  unsigned r = 256;
  while (r > 1 && a % r != 0) r /= 2;
  return r;
}

}  // namespace

struct LtMatmul::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool fused_bias = false;
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

LtMatmul::LtMatmul(core::Device& dev) : dev_(dev) {
  cublasLtHandle_t h = nullptr;
  LT_CHECK(cublasLtCreate(&h));
  handle_ = h;
  // kWorkspaceBytes of device memory (a tensor of 4-byte elements is just the allocation)
  workspace_ = core::Tensor::empty({static_cast<int64_t>(kWorkspaceBytes / 4)}, core::DType::I32, dev);
}

LtMatmul::~LtMatmul() {
  plans_.clear();
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

LtMatmul::Plan& LtMatmul::plan(const Key& key, bool trans_a, bool trans_b, int m, int n, int k, int lda, int ldb,
                               int ldd, Dt ab, Dt d, const void* bias, unsigned align_a, unsigned align_b,
                               unsigned align_d) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  LT_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  LT_CHECK(cublasLtMatrixLayoutCreate(&p->a, cuda_type(ab), trans_a ? k : m, trans_a ? m : k, lda));
  LT_CHECK(cublasLtMatrixLayoutCreate(&p->b, cuda_type(ab), trans_b ? n : k, trans_b ? k : n, ldb));
  LT_CHECK(cublasLtMatrixLayoutCreate(&p->d, cuda_type(d), m, n, ldd));

  cublasLtMatmulPreference_t pref = nullptr;
  LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  struct PrefGuard {
    cublasLtMatmulPreference_t p;
    ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
  } guard{pref};
  const size_t ws = kWorkspaceBytes;
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const uint32_t al_a = align_a, al_b = align_b, al_d = align_d;
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)));

  auto query = [&]() {
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), p->desc, p->a,
                                                            p->b, p->d, p->d, pref, 1, &result, &count);
    if (s != CUBLAS_STATUS_SUCCESS || count == 0 || result.state != CUBLAS_STATUS_SUCCESS) return false;
    p->algo = result.algo;
    return true;
  };
  bool found = false;
  if (bias != nullptr) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    // The heuristic reads the bias pointer's alignment (the bias type defaults to D's type).
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    found = query();
    p->fused_bias = found;
    if (!found) {
      const cublasLtEpilogue_t none = CUBLASLT_EPILOGUE_DEFAULT;
      LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &none, sizeof(none)));
    }
  }
  if (!found) found = query();
  // GPU-UNVERIFIED: that cuBLASLt 13 on sm_90 offers an algorithm for bf16 operands whose
  // pointers are only 2-byte aligned (views at odd offsets of the flat parameter buffer when
  // n_embd is not a multiple of 128) or whose leading dimension is not a multiple of 8
  // elements (the odd shapes of tests/cuda/cuda_ops_test.cc: C = 3, 20), and the bias
  // epilogue with such a bias pointer. If it has none, this error names the product; the
  // GPT-2 sizes (n_embd % 128 == 0) give 256-byte aligned operands throughout.
  if (!found) {
    throw core::Error(fmt::format("cuBLASLt has no algorithm for a {}x{}x{} product (trans {}{}, {} inputs, {} output, "
                                  "alignments A {} B {} D {} bytes)",
                                  m, n, k, trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', ab == Dt::BF16 ? "bf16" : "fp32",
                                  d == Dt::BF16 ? "bf16" : "fp32", align_a, align_b, align_d))
        .with_hint("model dimensions that are multiples of 8 (n_embd, vocab padding) give aligned operands");
  }
  return *plans_.emplace(key, std::move(p)).first->second;
}

bool LtMatmul::run(bool trans_a, bool trans_b, int m, int n, int k, const void* A, int lda, const void* B, int ldb,
                   void* D, int ldd, Dt ab, Dt d, bool accumulate, const void* bias) {
  if (m <= 0 || n <= 0) return true;
  const unsigned al_a = alignment(A), al_b = alignment(B), al_d = alignment(D);
  const unsigned al_bias = bias ? alignment(bias) : 0;
  const Key key{trans_a, trans_b, m, n, k, lda, ldb, ldd, static_cast<int>(ab), static_cast<int>(d), bias != nullptr,
                static_cast<int>(al_a), static_cast<int>(al_b), static_cast<int>(al_d), static_cast<int>(al_bias)};
  Plan& p = plan(key, trans_a, trans_b, m, n, k, lda, ldb, ldd, ab, d, bias, al_a, al_b, al_d);
  if (p.fused_bias) {
    LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  LT_CHECK(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), p.desc, &alpha, A, p.a, B, p.b, &beta, D, p.d, D,
                          p.d, &p.algo, workspace_.raw(), kWorkspaceBytes, static_cast<cudaStream_t>(dev_.stream())));
  return bias == nullptr || p.fused_bias;
}

}  // namespace mt::kernels::cuda
