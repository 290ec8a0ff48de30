// What: column_sums<K>(f, N, C, ...): out_k[c] += sum over n of f(n, c)_k for K outputs at
// once, deterministic (see reduce.cu). Used by the bias and layernorm weight gradients.
// f is a device functor: void f(int64_t n, int c, int C, float (&v)[K]) const.
#pragma once

#include "kernels/cuda/common.cuh"

namespace mt::kernels::cuda {

constexpr int kRowsPerChunk = 256;  // rows summed by one block (into one partial per channel)
constexpr int kColTile = 32;        // channels per block (one warp's width: coalesced rows)
constexpr int kRowPhases = 8;       // threads along the rows in a block

inline int64_t column_chunks(int64_t N) { return ceil_div(N, kRowsPerChunk); }

template <int K>
struct ColumnOutputs {
  float* p[K];  // fp32 outputs (C) to add into; null entries are skipped
};

template <int K, typename F>
__global__ void column_partial_k(F f, int64_t N, int C, int64_t chunks, float* scratch) {
  __shared__ float sh[K][kRowPhases][kColTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.y * kColTile + tx;
  const int64_t chunk = blockIdx.x;
  const int64_t n0 = chunk * kRowsPerChunk;
  const int64_t n1 = n0 + kRowsPerChunk < N ? n0 + kRowsPerChunk : N;
  float acc[K];
  for (int k = 0; k < K; ++k) acc[k] = 0.0f;
  if (c < C) {
    for (int64_t n = n0 + ty; n < n1; n += kRowPhases) {  // each thread: its rows in order
      float v[K];
      f(n, c, C, v);
      for (int k = 0; k < K; ++k) acc[k] += v[k];
    }
  }
  for (int k = 0; k < K; ++k) sh[k][ty][tx] = acc[k];
  __syncthreads();
  if (ty == 0 && c < C) {
    for (int k = 0; k < K; ++k) {
      float s = 0.0f;
      for (int p = 0; p < kRowPhases; ++p) s += sh[k][p][tx];  // phases in order
      scratch[(k * chunks + chunk) * C + c] = s;
    }
  }
}

template <int K>
__global__ void column_finish_k(ColumnOutputs<K> outs, const float* scratch, int64_t chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int k = 0; k < K; ++k) {
    if (outs.p[k] == nullptr) continue;
    float s = 0.0f;
    for (int64_t ch = 0; ch < chunks; ++ch) s += scratch[(k * chunks + ch) * C + c];  // chunks in order
    outs.p[k][c] += s;
  }
}

// scratch: K * column_chunks(N) * C floats.
template <int K, typename F>
cudaError_t column_sums(F f, int64_t N, int C, float* scratch, ColumnOutputs<K> outs, cudaStream_t s) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  const int64_t chunks = column_chunks(N);
  const int64_t tiles = ceil_div(C, kColTile);
  if (tiles > 65535) return cudaErrorInvalidConfiguration;  // C > 2M channels
  const dim3 grid(static_cast<unsigned int>(chunks), static_cast<unsigned int>(tiles));
  const dim3 block(kColTile, kRowPhases);
  column_partial_k<K, F><<<grid, block, 0, s>>>(f, N, C, chunks, scratch);
  column_finish_k<K><<<static_cast<unsigned int>(ceil_div(C, 256)), 256, 0, s>>>(outs, scratch, chunks, C);
  return cudaGetLastError();
}

}  // namespace mt::kernels::cuda
