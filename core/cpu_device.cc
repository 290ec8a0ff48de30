// What: the CPU device: 64-byte aligned host allocations (counted, by category: core/memory.h)
// and synchronous copies. MT_CPU_MEMORY_LIMIT (MiB) caps what it hands out, as a GPU's memory
// would: an allocation past it throws OutOfMemory (to try layouts and the out-of-memory path
// on a machine whose RAM would otherwise be overcommitted or the job killed).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "core/device.h"
#include "core/error.h"

namespace mt::core {

namespace {

// CPU work is synchronous: an event is complete when recorded, and its time is the host clock's.
class CpuEvent final : public Event {
 public:
  void record() override { at_ = std::chrono::steady_clock::now(); }
  void synchronize() override {}
  bool query() override { return true; }
  double elapsed_ms_since(Event& start) override {
    return std::chrono::duration<double, std::milli>(at_ - static_cast<CpuEvent&>(start).at_).count();
  }

 private:
  std::chrono::steady_clock::time_point at_{};
};

class CpuDevice final : public Device {
 public:
  DeviceKind kind() const override { return DeviceKind::CPU; }
  std::string name() const override { return "cpu"; }
  void* alloc(size_t bytes) override {
    if (bytes == 0) bytes = 64;
    const size_t rounded = (bytes + 63) / 64 * 64;
    if (limit_ > 0 && in_use_.load() + rounded > limit_) {
      throw OutOfMemory(fmt::format("out of device memory on cpu allocating {:.1f} MiB: {:.1f} MiB in use, the "
                                    "limit is {:.1f} MiB (MT_CPU_MEMORY_LIMIT)", bytes / 1048576.0,
                                    in_use_.load() / 1048576.0, limit_ / 1048576.0));
    }
    void* p = std::aligned_alloc(64, rounded);
    if (!p) {
      throw OutOfMemory(fmt::format("out of host memory allocating {:.1f} MiB", bytes / 1048576.0));
    }
    std::lock_guard<std::mutex> lock(mu_);
    sizes_[p] = {rounded, ledger_.add(rounded)};
    in_use_ = ledger_.in_use();
    peak_ = ledger_.peak();
    return p;
  }
  void free(void* p) override {
    if (!p) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        ledger_.remove(it->second.first, it->second.second);
        in_use_ = ledger_.in_use();
        sizes_.erase(it);
      }
    }
    std::free(p);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy_async(void* dst, const void* src, size_t bytes) override { copy(dst, src, bytes); }
  void memset_zero(void* p, size_t bytes) override {
    if (bytes) std::memset(p, 0, bytes);
  }
  void synchronize() override {}
  std::unique_ptr<Event> create_event() override { return std::make_unique<CpuEvent>(); }
  std::unique_ptr<Event> create_timing_event() override { return std::make_unique<CpuEvent>(); }
  // Host staging memory is ordinary memory here (not counted as device memory).
  void* alloc_host(size_t bytes) override {
    void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
    if (!p) throw Error(fmt::format("out of host memory allocating {} bytes of staging memory", bytes));
    return p;
  }
  void free_host(void* p) override { std::free(p); }
  size_t bytes_in_use() const override { return in_use_.load(); }
  size_t peak_bytes_in_use() const override { return peak_.load(); }
  MemoryStats memory_stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return ledger_.stats();
  }
  void reset_memory_window() override {
    std::lock_guard<std::mutex> lock(mu_);
    ledger_.reset_window();
  }

 private:
  mutable std::mutex mu_;
  // MT_CPU_MEMORY_LIMIT in MiB (0: none)
  size_t limit_ = [] {
    const char* v = std::getenv("MT_CPU_MEMORY_LIMIT");
    return v && *v ? static_cast<size_t>(std::strtod(v, nullptr) * 1048576.0) : size_t{0};
  }();
  std::unordered_map<void*, std::pair<size_t, MemCat>> sizes_;  // rounded bytes, category booked
  MemoryLedger ledger_;
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> peak_{0};
};

}  // namespace

Device& cpu_device() {
  static CpuDevice dev;
  return dev;
}

}  // namespace mt::core
