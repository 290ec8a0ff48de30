// What: token embedding over a (vocab-parallel) slice of the table and the position
// embedding, forward and backward (kernels/cpu/embedding.cc for the semantics).
// Why / determinism: the token backward is a scatter-add (the same row can appear at many
// positions). Instead of atomics, thread (c, g) owns channel c of every table row r with
// r % kGroups == g and walks the positions n = 0..N-1 in order, adding the rows it owns: each
// dwte element receives its contributions in token order, exactly like the CPU reference
// (so fp32 runs agree bit for bit). The token ids are staged through shared memory in tiles;
// a thread reads every id but does work only for its 1/kGroups of them. The position
// backward without explicit positions gives each (t, c) to one thread, summing over b in
// order; with explicit positions pos (B, T) (packed documents restart at 0, so many tokens
// share a row) it is the same scatter-add as the token backward, with pos as the ids and the
// whole table as the slice: each dwpe element sums its tokens in token order, as the CPU
// reference does (bit-identical in fp32, no atomics).
//
// NOT RUN ON A GPU: compiled only; tests/cuda/cuda_ops_test.cc checks it against the CPU.
#include <climits>

#include "kernels/cuda/common.cuh"

namespace mt::kernels::cuda {

namespace {

constexpr int kGroups = 32;        // row groups of the token backward (grid.y)
constexpr int kEmbThreads = 128;   // channels per block of the token backward
constexpr int kTokenTile = 1024;   // token ids per shared-memory tile

template <typename T>
__global__ void token_embedding_forward_k(T* out, const int32_t* tokens, const T* wte, int N, int C, int v_start,
                                          int v_count) {
  const int64_t total = static_cast<int64_t>(N) * C;
  MT_GRID_STRIDE(i, total) {
    const int64_t n = i / C, c = i % C;
    const int64_t r = static_cast<int64_t>(tokens[n]) - v_start;
    out[i] = (r >= 0 && r < v_count) ? wte[r * C + c] : st<T>(0.0f);
  }
}

template <typename T>
__global__ void token_embedding_backward_k(float* dwte, const T* dout, const int32_t* tokens, int N, int C,
                                           int v_start, int v_count) {
  __shared__ int32_t rows[kTokenTile];  // local row of each token of the tile if group g owns it, else -1
  const int c = blockIdx.x * kEmbThreads + threadIdx.x;
  const int g = blockIdx.y;
  for (int n0 = 0; n0 < N; n0 += kTokenTile) {
    const int len = N - n0 < kTokenTile ? N - n0 : kTokenTile;
    __syncthreads();  // the previous tile is consumed
    for (int i = threadIdx.x; i < len; i += kEmbThreads) {
      const int64_t r = static_cast<int64_t>(tokens[n0 + i]) - v_start;
      rows[i] = (r >= 0 && r < v_count && r % kGroups == g) ? static_cast<int32_t>(r) : -1;
    }
    __syncthreads();
    if (c < C) {
      for (int i = 0; i < len; ++i) {  // positions in order
        const int32_t r = rows[i];
        if (r >= 0) dwte[static_cast<int64_t>(r) * C + c] += ld(dout[static_cast<int64_t>(n0 + i) * C + c]);
      }
    }
  }
}

// out: (B, T_, C) +=;  wpe: (T_max, C);  pos: (B, T_) or null (row t)
template <typename T>
__global__ void position_embedding_forward_k(T* out, const T* wpe, const int32_t* pos, int B, int T_, int C) {
  const int64_t total = static_cast<int64_t>(B) * T_ * C;
  MT_GRID_STRIDE(i, total) {
    const int64_t n = i / C, c = i % C;
    const int64_t p = pos != nullptr ? static_cast<int64_t>(pos[n]) : n % T_;
    out[i] = st<T>(ld(out[i]) + ld(wpe[p * C + c]));
  }
}

// dwpe: (T_, C) += sum over b of dout[b] (no explicit positions)
template <typename T>
__global__ void position_embedding_backward_k(float* dwpe, const T* dout, int B, int T_, int C) {
  const int64_t total = static_cast<int64_t>(T_) * C;
  MT_GRID_STRIDE(i, total) {
    float acc = dwpe[i];
    for (int b = 0; b < B; ++b) acc += ld(dout[static_cast<int64_t>(b) * total + i]);  // batch order
    dwpe[i] = acc;
  }
}

}  // namespace

cudaError_t token_embedding_forward(Dt dt, void* out, const int32_t* tokens, const void* wte, int N, int C,
                                    int v_start, int v_count, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(N) * C;
  if (total <= 0) return cudaSuccess;
  MT_DISPATCH(dt, T, token_embedding_forward_k<T><<<grid_for(total), kThreads, 0, s>>>(
                         static_cast<T*>(out), tokens, static_cast<const T*>(wte), N, C, v_start, v_count););
  return cudaGetLastError();
}

cudaError_t token_embedding_backward(Dt dt, float* dwte, const void* dout, const int32_t* tokens, int N, int C,
                                     int v_start, int v_count, cudaStream_t s) {
  if (dwte == nullptr || N <= 0 || C <= 0 || v_count <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned int>(ceil_div(C, kEmbThreads)), kGroups);
  MT_DISPATCH(dt, T, token_embedding_backward_k<T><<<grid, kEmbThreads, 0, s>>>(
                         dwte, static_cast<const T*>(dout), tokens, N, C, v_start, v_count););
  return cudaGetLastError();
}

cudaError_t position_embedding_forward(Dt dt, void* out, const void* wpe, const int32_t* pos, int B, int T, int C,
                                       cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(B) * T * C;
  if (total <= 0) return cudaSuccess;
  MT_DISPATCH(dt, X, position_embedding_forward_k<X><<<grid_for(total), kThreads, 0, s>>>(
                         static_cast<X*>(out), static_cast<const X*>(wpe), pos, B, T, C););
  return cudaGetLastError();
}

cudaError_t position_embedding_backward(Dt dt, float* dwpe, const void* dout, const int32_t* pos, int B, int T, int C,
                                        cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(T) * C;
  if (dwpe == nullptr || total <= 0 || B <= 0) return cudaSuccess;
  if (pos != nullptr) {
    // The token scatter with the positions as ids over the whole table (rows 0 .. INT_MAX-1:
    // the caller's positions index its (T_max, C) table).
    const int64_t N = static_cast<int64_t>(B) * T;
    if (N > INT_MAX) return cudaErrorInvalidValue;
    return token_embedding_backward(dt, dwpe, dout, pos, static_cast<int>(N), C, 0, INT_MAX, s);
  }
  MT_DISPATCH(dt, X, position_embedding_backward_k<X><<<grid_for(total), kThreads, 0, s>>>(
                         dwpe, static_cast<const X*>(dout), B, T, C););
  return cudaGetLastError();
}

}  // namespace mt::kernels::cuda
