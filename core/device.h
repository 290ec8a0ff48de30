// What: the Device interface (alloc, free, copy, memset, events, synchronize, host staging
// memory) and the CPU device.
// Why: kernels and the model allocate through a Device so the same code serves CPU and CUDA
// (ggml's backend / c10 Device idea, kept small). Only core/device_registry.cc knows the list
// of device backends; everything else asks it for a device by name.
// Ordering: a device queues its work (kernels, copy_async, memset_zero) on ONE compute stream,
// in issue order; copy() and synchronize() wait for it. On the CPU everything is immediate.
#pragma once

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/memory.h"

namespace mt::core {

enum class DeviceKind { CPU, CUDA };

// An event marks a point in a device's work queue. On the CPU all work is synchronous, so an
// event is always complete; on CUDA it wraps cudaEvent_t on the device's compute stream.
class Event {
 public:
  virtual ~Event() = default;
  virtual void record() = 0;        // mark "now" on the device's stream
  virtual void synchronize() = 0;   // host waits until the marked work is done
  virtual bool query() = 0;         // true if the marked work is done
  // Milliseconds from `start`'s record() to this event's, both recorded on the same device and
  // this one complete. Only events from create_timing_event() time (CUDA's timing costs a
  // little at every record, so create_event() leaves it off).
  virtual double elapsed_ms_since(Event& start) {
    (void)start;
    throw std::logic_error("this event does not time: make it with Device::create_timing_event()");
  }
};

class Device {
 public:
  virtual ~Device() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;      // "cpu", "cuda:0"
  virtual int index() const { return 0; }
  // A readable line for logs: "cpu", "cuda:1 (NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90)".
  virtual std::string description() const { return name(); }
  virtual void* alloc(size_t bytes) = 0;     // aligned to >= 64 bytes; throws on failure
  virtual void free(void* ptr) = 0;
  // Copies bytes and returns when they have arrived; either side may be host or this
  // device's memory (the device knows). Ordered after all work queued before it.
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  // Queues the copy on the compute stream and returns at once (the CPU copies now). Host
  // memory on either side must come from alloc_host() and must not be touched until the
  // stream has passed the copy (synchronize(), or an Event recorded after it).
  virtual void copy_async(void* dst, const void* src, size_t bytes) = 0;
  // Zeroes this device's memory (queued on the compute stream).
  virtual void memset_zero(void* ptr, size_t bytes) = 0;
  virtual void synchronize() = 0;            // wait for all queued work on the device
  virtual std::unique_ptr<Event> create_event() = 0;
  virtual std::unique_ptr<Event> create_timing_event() { return create_event(); }  // see Event::elapsed_ms_since
  // Host memory for staging copies (page-locked on CUDA, so copy_async really is async).
  virtual void* alloc_host(size_t bytes) = 0;
  virtual void free_host(void* ptr) = 0;
  virtual size_t bytes_in_use() const = 0;   // live allocations through this device
  virtual size_t peak_bytes_in_use() const = 0;  // high-water mark of bytes_in_use()
  // bytes_in_use() by category (the calling thread's MemoryScope at each alloc()) and the
  // run's and the current window's peaks with their breakdown (core/memory.h); zeros for a
  // device that does not account.
  virtual MemoryStats memory_stats() const { return {}; }
  // Starts a new peak window (the trainer does at the start of each step).
  virtual void reset_memory_window() {}
  // The native handle of the compute stream work is queued on (cudaStream_t for CUDA), for
  // code that must order its own work after it (the NCCL communicator); null on the CPU.
  virtual void* stream() const { return nullptr; }
};

// Host staging memory from a device's alloc_host(), freed on destruction.
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(Device& dev, size_t bytes) : dev_(&dev), ptr_(dev.alloc_host(bytes)), bytes_(bytes) {}
  ~HostBuffer() {
    if (ptr_) dev_->free_host(ptr_);
  }
  HostBuffer(HostBuffer&& o) noexcept { *this = std::move(o); }
  HostBuffer& operator=(HostBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_) dev_->free_host(ptr_);
      dev_ = o.dev_;
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  Device* dev_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// The process-wide CPU device (stateless apart from its byte counters).
Device& cpu_device();

// Device lookup by name ("cpu", "cuda" = "cuda:0", "cuda:N"); the only place that lists
// backends. Throws with a hint if the backend was not built or no such device exists.
Device& get_device(const std::string& name);
std::vector<std::string> built_device_backends();

// The device a rank trains on: `spec` is train.device. "cuda" binds GPU
// local_rank % (GPUs on the node) (ranks of one node spread over its GPUs); "cuda:N" and
// "cpu" are taken as they are. local_size (ranks on this node) only feeds a warning when
// more ranks than GPUs share a node.
Device& select_device(const std::string& spec, int local_rank, int local_size);

}  // namespace mt::core
