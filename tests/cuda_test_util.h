// What: helpers for tests that need a GPU (CUDA builds only): device memory as a Mem for
// collective_cases.h, and the collective "does every rank have a GPU of its own?" check
// whose reason the tests print when they skip.
// Why: with no GPU the runtime returns error 35 (cudaErrorInsufficientDriver) or 100
// (cudaErrorNoDevice); the tests must then skip visibly, and all ranks must skip together
// (a rank that went on alone would wait forever in a collective).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>

#include "collective_cases.h"

namespace mt::testing {

#define MT_CUDA_OK(call)                                                                       \
  do {                                                                                         \
    const cudaError_t rc_ = (call);                                                            \
    ASSERT_EQ(rc_, cudaSuccess) << #call << ": " << cudaGetErrorName(rc_) << " " << cudaGetErrorString(rc_); \
  } while (0)

// Device memory through the legacy default stream. upload() waits for that stream: a
// cudaMemcpy from pageable memory returns once the bytes are staged, before the DMA to the
// device is done, and a communicator whose compute stream is not the legacy one (the factory
// test hands it the CUDA device's non-blocking stream) would otherwise read the buffer early.
class CudaMem final : public Mem {
 public:
  void* alloc(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t rc = cudaMalloc(&p, bytes > 0 ? bytes : 1);
    if (rc != cudaSuccess) throw std::runtime_error(std::string("cudaMalloc: ") + cudaGetErrorString(rc));
    return p;
  }
  void free(void* p) override { cudaFree(p); }
  void upload(void* d, const void* s, size_t n) override {
    check(cudaMemcpy(d, s, n, cudaMemcpyHostToDevice));
    check(cudaStreamSynchronize(nullptr));
  }
  void download(void* d, const void* s, size_t n) override { check(cudaMemcpy(d, s, n, cudaMemcpyDeviceToHost)); }

 private:
  static void check(cudaError_t rc) {
    if (rc != cudaSuccess) throw std::runtime_error(std::string("cudaMemcpy/cudaStreamSynchronize: ") + cudaGetErrorString(rc));
  }
};

// This rank's index among the ranks of its node (MPI shared-memory split of the world).
inline int node_local_rank(int* local_size = nullptr) {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int r = 0, n = 1;
  MPI_Comm_rank(node, &r);
  MPI_Comm_size(node, &n);
  MPI_Comm_free(&node);
  if (local_size) *local_size = n;
  return r;
}

// Collective over MPI_COMM_WORLD: "" when every rank has a GPU of its own (local rank <
// device count), else the reason of the lowest failing rank, identical on every rank.
inline std::string gpu_per_rank_skip_reason() {
  int local_size = 1;
  const int local = node_local_rank(&local_size);
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  std::string why;
  if (rc != cudaSuccess)
    why = std::string("no usable GPU: cudaGetDeviceCount returned ") + cudaGetErrorName(rc) + " (" +
          std::to_string(static_cast<int>(rc)) + "): " + cudaGetErrorString(rc) + " -- not run on a GPU";
  else if (count < local_size)
    why = std::to_string(local_size) + " ranks on this node but " + std::to_string(count) +
          " GPU(s): NCCL needs one GPU per rank (one GPU cannot host two NCCL ranks)";
  (void)local;
  char buf[512] = {0};
  why.copy(buf, sizeof(buf) - 1);
  int world = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  // The first rank (lowest) with a reason supplies it.
  int mine = why.empty() ? world : rank, first = world;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first == world) return "";
  MPI_Bcast(buf, sizeof(buf), MPI_CHAR, first, MPI_COMM_WORLD);
  return buf;
}

}  // namespace mt::testing
