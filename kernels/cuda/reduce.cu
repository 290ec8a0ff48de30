// What: the deterministic reductions: the sum of squares (gradient norm) and column sums
// over tokens (bias gradients).
// Why: floating-point atomics would make gradients and the clipped norm differ from run to
// run. Here every sum is a fixed tree: the grid shape depends only on the problem size, each
// thread sums a fixed strided set in order, and partial results are combined in index order
// by a second kernel. Same input, same bits, on any GPU.
//   sum_squares: kSsqBlocks(n) blocks x 256 threads, double accumulation; block partials to
//                scratch; one block adds them.
//   column sums: the (N, OC) input is cut into chunks of kRowsPerChunk rows; block (x, y)
//                sums channels [32y, 32y+32) over chunk x with 32 x 8 threads (8 row phases,
//                combined in phase order); a finish kernel adds the chunk partials in chunk
//                order into the fp32 output (+=).
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_ops_test.cc checks them against the CPU.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/reduce.cuh"

namespace mt::kernels::cuda {

namespace {

constexpr int kSsqThreads = 256;
constexpr int64_t kSsqMaxBlocks = 1024;

int64_t ssq_blocks(int64_t n) {
  int64_t b = ceil_div(n, kSsqThreads * 16);  // ~16 elements per thread before the tree
  if (b < 1) b = 1;
  return b > kSsqMaxBlocks ? kSsqMaxBlocks : b;
}

// Fixed-shape tree over a block's shared array of kSsqThreads doubles; result in s[0].
__device__ void block_tree_sum(double* s) {
  for (int w = kSsqThreads / 2; w > 0; w >>= 1) {
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < w) s[threadIdx.x] += s[threadIdx.x + w];
  }
  __syncthreads();
}

__global__ void ssq_partial_k(double* partial, const float* x, int64_t n) {
  __shared__ double s[kSsqThreads];
  double acc = 0.0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kSsqThreads;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kSsqThreads) + threadIdx.x; i < n; i += stride) {
    const double v = x[i];
    acc += v * v;
  }
  s[threadIdx.x] = acc;
  block_tree_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

__global__ void ssq_finish_k(double* out, const double* partial, int64_t nblocks) {
  __shared__ double s[kSsqThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < nblocks; i += kSsqThreads) acc += partial[i];
  s[threadIdx.x] = acc;
  block_tree_sum(s);
  if (threadIdx.x == 0) *out = s[0];
}

template <typename T>
struct DoutColumn {  // v = dout[n, c]
  const T* x;
  __device__ void operator()(int64_t n, int c, int C, float (&v)[1]) const { v[0] = ld(x[n * C + c]); }
};

}  // namespace

int64_t sum_squares_scratch_doubles(int64_t n) { return ssq_blocks(n); }

cudaError_t sum_squares(double* out, const float* x, int64_t n, double* scratch, cudaStream_t s) {
  if (n <= 0) return cudaMemsetAsync(out, 0, sizeof(double), s);
  const int64_t blocks = ssq_blocks(n);
  ssq_partial_k<<<static_cast<unsigned int>(blocks), kSsqThreads, 0, s>>>(scratch, x, n);
  ssq_finish_k<<<1, kSsqThreads, 0, s>>>(out, scratch, blocks);
  return cudaGetLastError();
}

int64_t column_sum_scratch_floats(int64_t N, int OC) { return column_chunks(N) * static_cast<int64_t>(OC); }

cudaError_t bias_backward(Dt dt, float* dbias, const void* dout, int64_t N, int OC, float* scratch, cudaStream_t s) {
  if (dbias == nullptr || N <= 0 || OC <= 0) return cudaSuccess;
  ColumnOutputs<1> outs{{dbias}};
  cudaError_t e = cudaSuccess;
  MT_DISPATCH(dt, T, e = column_sums<1>(DoutColumn<T>{static_cast<const T*>(dout)}, N, OC, scratch, outs, s););
  return e;
}

}  // namespace mt::kernels::cuda
