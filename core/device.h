// What: the Device interface (alloc, free, copy, memset, events, synchronize) and the CPU device.
// Why: kernels and the model allocate through a Device so the same code serves CPU and CUDA
// (ggml's backend / c10 Device idea, kept small). Only core/device_registry.cc knows the list
// of device backends; everything else asks it for a device by name.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

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
};

class Device {
 public:
  virtual ~Device() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;      // "cpu", "cuda:0"
  virtual int index() const { return 0; }
  virtual void* alloc(size_t bytes) = 0;     // aligned to >= 64 bytes; throws on failure
  virtual void free(void* ptr) = 0;
  // Copies bytes; either side may be host or this device's memory (the device knows).
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void memset_zero(void* ptr, size_t bytes) = 0;
  virtual void synchronize() = 0;            // wait for all queued work on the device
  virtual std::unique_ptr<Event> create_event() = 0;
  virtual size_t bytes_in_use() const = 0;   // live allocations through this device
  // The native handle of the compute stream work is queued on (cudaStream_t for CUDA), for
  // code that must order its own work after it (the NCCL communicator); null on the CPU.
  virtual void* stream() const { return nullptr; }
};

// The process-wide CPU device (stateless apart from its byte counter).
Device& cpu_device();

// Device lookup by name ("cpu", "cuda", "cuda:N"); the only place that lists backends.
// Throws with a hint if the backend was not built or no such device exists.
Device& get_device(const std::string& name);
std::vector<std::string> built_device_backends();

}  // namespace mt::core
