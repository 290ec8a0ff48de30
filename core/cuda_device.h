// What: the CUDA device (core/cuda_device.cc): a caching allocator over cudaMalloc, one
// compute stream per device, cudaEvent_t events, page-locked host staging memory, and the
// runtime checks that turn a CUDA error into an mt::core::Error naming the call and the code.
// Why: the model and the kernels talk to core::Device only; this header is for the few places
// that must know it is CUDA (the device registry, the CUDA kernels' Ops, the CUDA tests).
// Compiled only when the build has CUDA (core/CMakeLists.txt); include it only from files
// that are too.
//
// NOT RUN ON A GPU: this was written and compiled on a machine without one (the CUDA runtime
// returns error 35 there). Its tests (tests/cuda/) run where a GPU exists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/device.h"

namespace mt::core {

// Number of CUDA devices visible to this process. Throws mt::core::Error with the runtime's
// code and message ("CUDA error 35 (cudaErrorInsufficientDriver): ...") when the runtime
// cannot be used at all (no driver, too old a driver, no device).
int cuda_device_count();

// "" if a CUDA device can be used in this process, else the runtime's reason, e.g.
// "CUDA error 35 (cudaErrorInsufficientDriver): CUDA driver version is insufficient for CUDA
// runtime version". Never throws (tests use it to skip).
std::string cuda_unavailable_reason();

// The process-wide device object for GPU `index` (created on first use; lives until exit).
// Throws naming the device count if there is no such GPU.
Device& cuda_device(int index);

// The caching allocator's counters for a CUDA device (bytes are rounded block sizes).
struct CudaAllocatorStats {
  size_t in_use = 0;     // bytes in live blocks
  size_t peak = 0;       // high-water mark of in_use
  size_t reserved = 0;   // bytes obtained from cudaMalloc and not returned (live + cached)
  size_t cached = 0;     // bytes in free blocks kept for reuse
  int64_t device_mallocs = 0;  // cudaMalloc calls so far (flat once the step loop is warm)
  int64_t cache_hits = 0;      // allocations served from a free list
};
// Throws if `dev` is not a CUDA device.
CudaAllocatorStats cuda_allocator_stats(const Device& dev);
// Returns every cached (free) block to the driver (cudaFree), after synchronizing the stream.
void cuda_release_cached(Device& dev);
// The size class a request of `bytes` is rounded up to (exposed for the allocator test).
size_t cuda_size_class(size_t bytes);

}  // namespace mt::core

// Throws mt::core::Error if the CUDA runtime call returns an error:
//   MT_CUDA_CHECK(cudaMemcpyAsync(...));
// The message names the call, the error code, its name and the runtime's description.
#define MT_CUDA_CHECK(call) ::mt::core::cuda_check_status(static_cast<int>(call), #call, __FILE__, __LINE__)

namespace mt::core {
// Implementation of MT_CUDA_CHECK (status is a cudaError_t).
void cuda_check_status(int status, const char* call, const char* file, int line);
// "CUDA error 35 (cudaErrorInsufficientDriver): <description>"
std::string cuda_error_string(int status);
}  // namespace mt::core
