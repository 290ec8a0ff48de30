// What: BufferPool, host buffers leased to communication operations and reused: the MPI
// backend's scratch (plain aligned host memory) and host staging's copies of device buffers
// (Device::alloc_host: page-locked on CUDA). The pool is parameterised only by how memory is
// obtained and released.
// Why: fresh pages are slow on the machines we measure on (first touch ~0.4 GB/s, and glibc
// returns allocations >= 32 MiB to the OS on free), and page-locking memory costs about as
// much as copying it once; so buffers are allocated once, kept for the life of the pool and
// reused. The pool grows to the working set and never shrinks.
//
// Sizing: a lease takes the smallest free buffer that fits, else replaces the largest free
// one with a bigger one, else adds a buffer. Capacities are powers of two from 64 KiB, so a
// few distinct request sizes (gradient buckets, ring blocks) settle on a few buffers.
// Not thread-safe: used by the one thread that drives its communicator (communicator.h).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace mt::parallel {

class BufferPool {
 public:
  // allocate(bytes) returns at least `bytes` bytes aligned to 64 or throws; release(ptr) frees it.
  using Allocate = std::function<void*(size_t bytes)>;
  using Release = std::function<void(void* ptr)>;

  static constexpr size_t kMinCapacity = size_t(64) << 10;

  BufferPool(Allocate allocate, Release release);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

 private:
  struct Buf {
    std::byte* data = nullptr;
    size_t cap = 0;
    bool used = false;
  };

 public:
  // A buffer held until the lease is reset or destroyed; the pool must outlive its leases.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& o) noexcept : buf_(o.buf_) { o.buf_ = nullptr; }
    Lease& operator=(Lease&& o) noexcept {
      if (this != &o) {
        reset();
        buf_ = o.buf_;
        o.buf_ = nullptr;
      }
      return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { reset(); }
    void reset() {
      if (buf_) buf_->used = false;
      buf_ = nullptr;
    }
    std::byte* data() const { return buf_ ? buf_->data : nullptr; }

   private:
    friend class BufferPool;
    explicit Lease(Buf* b) : buf_(b) {}
    Buf* buf_ = nullptr;
  };

  // A buffer of at least `bytes` bytes (throws what allocate throws).
  Lease acquire(size_t bytes);
  // Bytes held by the pool, leased or not.
  size_t total_bytes() const;

 private:
  Allocate allocate_;
  Release release_;
  std::vector<std::unique_ptr<Buf>> bufs_;  // stable addresses: leases point at them
};

}  // namespace mt::parallel
