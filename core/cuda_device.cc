// What: the CUDA device (see core/cuda_device.h): caching allocator, compute stream, events,
// page-locked staging memory, device selection with errors that name the device count.
// Why: cudaMalloc/cudaFree synchronize the whole device and cost 10s-100s of microseconds,
// so the step loop must never call them; the model allocates the same shapes every step, so
// a cache of freed blocks keyed by size class serves every allocation after the first step.
//
// Allocator. A request is rounded up to its size class (cuda_size_class): 512-byte steps
// below 1 MiB, 2 MiB steps above. free() puts the block on its class's free list; alloc()
// takes one from there, else calls cudaMalloc. If cudaMalloc fails for lack of memory, every
// cached block is returned to the driver and the call is retried once before throwing an
// error that reports live, cached and peak bytes and what the driver says is free.
// Stream order makes reuse safe: all work using device memory is queued on this device's
// ONE compute stream, so a block freed on the host and handed out again is only touched by
// work queued after everything that used it before. Work on other streams (the NCCL
// communicator) is ordered back into the compute stream by events before its buffers can be
// freed (parallel/communicator.h: Work::wait()).
//
// Devices live for the whole process and are never destroyed: freeing CUDA resources from
// static destructors after the runtime has shut down is an error of its own.
//
// NOT RUN ON A GPU: written and compiled on a machine whose CUDA runtime returns error 35
// (insufficient driver); tests/cuda/cuda_device_test.cc exercises it where a GPU exists.
#include "core/cuda_device.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/log.h"

namespace mt::core {

std::string cuda_error_string(int status) {
  const auto e = static_cast<cudaError_t>(status);
  return fmt::format("CUDA error {} ({}): {}", status, cudaGetErrorName(e), cudaGetErrorString(e));
}

void cuda_check_status(int status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  // Clear the sticky "last error" so that later, unrelated calls do not report it again.
  (void)cudaGetLastError();
  Error e(fmt::format("{} failed", call));
  e.with_library(cuda_error_string(status)).with_where(file, line);
  if (status == cudaErrorInsufficientDriver || status == cudaErrorNoDevice)
    e.with_hint("this process sees no usable GPU (no driver, or CUDA_VISIBLE_DEVICES empty); run on a GPU node "
                "or use train.device=cpu");
  throw e;
}

int cuda_device_count() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error("the CUDA runtime cannot be used on this machine")
        .with_library(cuda_error_string(e))
        .with_hint(e == cudaErrorInsufficientDriver
                       ? "no NVIDIA driver, or one older than this CUDA runtime; run on a GPU node or use train.device=cpu"
                       : "check nvidia-smi and CUDA_VISIBLE_DEVICES, or use train.device=cpu");
  }
  if (n <= 0) {
    throw Error("no CUDA device is visible to this process")
        .with_hint("check nvidia-smi and CUDA_VISIBLE_DEVICES, or use train.device=cpu");
  }
  return n;
}

std::string cuda_unavailable_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return cuda_error_string(e);
  }
  if (n <= 0) return cuda_error_string(cudaErrorNoDevice);
  return "";
}

size_t cuda_size_class(size_t bytes) {
  constexpr size_t kSmallStep = 512;
  constexpr size_t kLargeFrom = size_t{1} << 20;
  constexpr size_t kLargeStep = size_t{2} << 20;
  if (bytes == 0) return kSmallStep;
  if (bytes < kLargeFrom) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
}

namespace {

class CudaEvent final : public Event {
 public:
  CudaEvent(int device, cudaStream_t stream, bool timing = false) : stream_(stream) {
    MT_CUDA_CHECK(cudaSetDevice(device));
    MT_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
  }
  ~CudaEvent() override { (void)cudaEventDestroy(event_); }
  void record() override { MT_CUDA_CHECK(cudaEventRecord(event_, stream_)); }
  void synchronize() override { MT_CUDA_CHECK(cudaEventSynchronize(event_)); }
  bool query() override {
    const cudaError_t e = cudaEventQuery(event_);
    if (e == cudaErrorNotReady) {
      (void)cudaGetLastError();
      return false;
    }
    MT_CUDA_CHECK(e);
    return true;
  }
  double elapsed_ms_since(Event& start) override {
    float ms = 0;
    MT_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<CudaEvent&>(start).event_, event_));
    return ms;
  }

 private:
  cudaStream_t stream_;
  cudaEvent_t event_ = nullptr;
};

class CudaDevice final : public Device {
 public:
  explicit CudaDevice(int index) : index_(index) {
    MT_CUDA_CHECK(cudaSetDevice(index_));
    MT_CUDA_CHECK(cudaGetDeviceProperties(&props_, index_));
    // Non-blocking: never implicitly synchronizes with the legacy default stream.
    MT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }

  DeviceKind kind() const override { return DeviceKind::CUDA; }
  std::string name() const override { return fmt::format("cuda:{}", index_); }
  int index() const override { return index_; }
  std::string description() const override {
    return fmt::format("cuda:{} ({}, {:.1f} GiB, sm_{}{}, {} SMs)", index_, props_.name,
                       props_.totalGlobalMem / 1073741824.0, props_.major, props_.minor,
                       props_.multiProcessorCount);
  }
  void* stream() const override { return stream_; }

  void* alloc(size_t bytes) override {
    activate();
    const size_t cls = cuda_size_class(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    void* p = nullptr;
    auto it = free_.find(cls);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.cached -= cls;
      ++stats_.cache_hits;
    } else {
      cudaError_t e = cudaMalloc(&p, cls);
      if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        release_cached_locked();
        e = cudaMalloc(&p, cls);
      }
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        (void)cudaMemGetInfo(&free_b, &total_b);
        (void)cudaGetLastError();
        constexpr double kMiB = 1.0 / 1048576.0;
        OutOfMemory oom(fmt::format("out of GPU memory on {} allocating {:.1f} MiB (in use {:.1f} MiB, peak {:.1f} "
                                    "MiB; the driver reports {:.1f} of {:.1f} MiB free)",
                                    name(), bytes * kMiB, stats_.in_use * kMiB, stats_.peak * kMiB, free_b * kMiB,
                                    total_b * kMiB));
        oom.with_library(cuda_error_string(e))
            .with_hint("reduce train.micro_batch (gradient accumulation keeps the global batch), use "
                       "train.precision=bf16, a higher parallel.zero, parallel.sp, train.recompute or more tensor "
                       "parallelism (meshtrain plan lists the layouts that fit)");
        throw oom;  // (not the builder's Error&: catchers tell it apart)
      }
      ++stats_.device_mallocs;
      stats_.reserved += cls;
    }
    live_[p] = {cls, ledger_.add(cls)};
    stats_.in_use += cls;
    stats_.peak = std::max(stats_.peak, stats_.in_use);
    return p;
  }

  void free(void* p) override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) {
      // A bug elsewhere; called from destructors, so report rather than throw.
      log::error("{}: free() of a pointer this device did not allocate ({})", name(), p);
      return;
    }
    const size_t cls = it->second.first;
    ledger_.remove(cls, it->second.second);
    live_.erase(it);
    stats_.in_use -= cls;
    stats_.cached += cls;
    free_[cls].push_back(p);
  }

  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    activate();
    MT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
    MT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy_async(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    activate();
    MT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
  }
  void memset_zero(void* p, size_t bytes) override {
    if (bytes == 0) return;
    activate();
    MT_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
  }
  void synchronize() override {
    activate();
    MT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  std::unique_ptr<Event> create_event() override { return std::make_unique<CudaEvent>(index_, stream_); }
  std::unique_ptr<Event> create_timing_event() override {
    return std::make_unique<CudaEvent>(index_, stream_, /*timing=*/true);
  }

  void* alloc_host(size_t bytes) override {
    activate();
    void* p = nullptr;
    MT_CUDA_CHECK(cudaHostAlloc(&p, std::max<size_t>(bytes, 1), cudaHostAllocDefault));
    return p;
  }
  void free_host(void* p) override {
    if (p) (void)cudaFreeHost(p);
  }

  size_t bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_.in_use;
  }
  size_t peak_bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_.peak;
  }
  MemoryStats memory_stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return ledger_.stats();
  }
  void reset_memory_window() override {
    std::lock_guard<std::mutex> lock(mu_);
    ledger_.reset_window();
  }
  CudaAllocatorStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void release_cached() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_locked();
  }

 private:
  // Makes this device current for the calling thread (cheap when it already is).
  void activate() const {
    int cur = -1;
    MT_CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != index_) MT_CUDA_CHECK(cudaSetDevice(index_));
  }
  // Returns every cached block to the driver. Queued work may still use a block that was
  // freed on the host, so the stream is drained first.
  void release_cached_locked() {
    (void)cudaStreamSynchronize(stream_);
    for (auto& [cls, blocks] : free_) {
      for (void* b : blocks) {
        (void)cudaFree(b);
        stats_.reserved -= cls;
        stats_.cached -= cls;
      }
      blocks.clear();
    }
    (void)cudaGetLastError();
  }

  int index_;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  mutable std::mutex mu_;
  std::unordered_map<void*, std::pair<size_t, MemCat>> live_;  // block -> size class, category
  MemoryLedger ledger_;                                  // bytes in use by category (in_use / peak: stats_)
  std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  CudaAllocatorStats stats_;
};

CudaDevice& as_cuda(const Device& dev) {
  MT_CHECK(dev.kind() == DeviceKind::CUDA, "device '{}' is not a CUDA device", dev.name());
  return const_cast<CudaDevice&>(static_cast<const CudaDevice&>(dev));
}

}  // namespace

Device& cuda_device(int index) {
  static std::mutex mu;
  static std::map<int, CudaDevice*>* devices = new std::map<int, CudaDevice*>();  // never freed: see top
  const int count = cuda_device_count();
  if (index < 0 || index >= count) {
    throw Error(fmt::format("device 'cuda:{}' requested but this process sees {} CUDA device(s) (cuda:0 .. cuda:{})",
                            index, count, count - 1))
        .with_hint("train.device=cuda picks local_rank % device count; check CUDA_VISIBLE_DEVICES");
  }
  std::lock_guard<std::mutex> lock(mu);
  auto it = devices->find(index);
  if (it == devices->end()) it = devices->emplace(index, new CudaDevice(index)).first;
  return *it->second;
}

CudaAllocatorStats cuda_allocator_stats(const Device& dev) { return as_cuda(dev).stats(); }
void cuda_release_cached(Device& dev) { as_cuda(dev).release_cached(); }

}  // namespace mt::core
