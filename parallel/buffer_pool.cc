// What: BufferPool (see the header): best-fit leasing over a list of reusable buffers.
#include "parallel/buffer_pool.h"

#include <algorithm>
#include <utility>

namespace mt::parallel {

BufferPool::BufferPool(Allocate allocate, Release release)
    : allocate_(std::move(allocate)), release_(std::move(release)) {}

BufferPool::~BufferPool() {
  for (auto& b : bufs_)
    if (b->data) release_(b->data);
}

BufferPool::Lease BufferPool::acquire(size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);  // a zero-byte request still gets a real buffer
  Buf* best = nullptr;
  Buf* largest_free = nullptr;
  for (auto& b : bufs_) {
    if (b->used) continue;
    if (b->cap >= bytes && (!best || b->cap < best->cap)) best = b.get();
    if (!largest_free || b->cap > largest_free->cap) largest_free = b.get();
  }
  if (!best) {
    best = largest_free;
    if (!best) {
      bufs_.push_back(std::make_unique<Buf>());
      best = bufs_.back().get();
    }
    size_t cap = kMinCapacity;
    while (cap < bytes) cap *= 2;  // plain host memory: untouched pages of the rounding cost nothing
    if (best->data) release_(best->data);
    best->data = nullptr;
    best->cap = 0;
    best->data = static_cast<std::byte*>(allocate_(cap));
    best->cap = cap;
  }
  best->used = true;
  return Lease(best);
}

size_t BufferPool::total_bytes() const {
  size_t s = 0;
  for (auto& b : bufs_) s += b->cap;
  return s;
}

}  // namespace mt::parallel
