// What: BufferPool's leasing policy, with an allocator that records every allocation and
// release: power-of-two capacities from 64 KiB, best fit among free buffers, a busy buffer
// never handed out twice, growth by replacing the largest free buffer, no shrinking, and
// everything released when the pool goes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <stdexcept>

#include "parallel/buffer_pool.h"

using mt::parallel::BufferPool;

namespace {

struct Recorder {
  std::map<void*, size_t> live;  // pointer -> bytes
  size_t allocations = 0;
  bool fail = false;
  BufferPool pool() {
    return BufferPool(
        [this](size_t n) {
          if (fail) throw std::runtime_error("no memory");
          void* p = std::aligned_alloc(64, n);
          live[p] = n;
          ++allocations;
          return p;
        },
        [this](void* p) {
          live.erase(p);
          std::free(p);
        });
  }
};

constexpr size_t kKiB = 1024;

}  // namespace

TEST(BufferPool, LeasesPowersOfTwoAndReuses) {
  Recorder rec;
  {
    BufferPool pool = rec.pool();
    auto a = pool.acquire(1);
    ASSERT_NE(a.data(), nullptr);
    EXPECT_EQ(pool.total_bytes(), 64 * kKiB);
    auto b = pool.acquire(100 * kKiB);  // a is busy: a second buffer, rounded up to 128 KiB
    EXPECT_NE(b.data(), a.data());
    EXPECT_EQ(rec.live.at(b.data()), 128 * kKiB);
    EXPECT_EQ(pool.total_bytes(), 192 * kKiB);

    std::byte* pb = b.data();
    b.reset();
    a.reset();
    auto c = pool.acquire(10);  // best fit: the 64 KiB buffer, not the 128 KiB one
    EXPECT_EQ(rec.live.at(c.data()), 64 * kKiB);
    auto d = pool.acquire(128 * kKiB);  // the free 128 KiB buffer fits exactly
    EXPECT_EQ(d.data(), pb);
    EXPECT_EQ(rec.allocations, 2u);

    d.reset();
    auto e = pool.acquire(300 * kKiB);  // nothing free fits: the largest free one is replaced
    EXPECT_EQ(rec.live.at(e.data()), 512 * kKiB);
    EXPECT_EQ(rec.live.size(), 2u);
    EXPECT_EQ(pool.total_bytes(), (64 + 512) * kKiB);

    std::byte* pe = e.data();
    e.reset();
    auto f = pool.acquire(1);  // c holds the 64 KiB buffer: the 512 KiB one, not shrunk
    EXPECT_EQ(f.data(), pe);
    EXPECT_EQ(pool.total_bytes(), (64 + 512) * kKiB);
    EXPECT_EQ(rec.allocations, 3u);
  }
  EXPECT_TRUE(rec.live.empty()) << "the pool releases every buffer";
}

TEST(BufferPool, MovedLeaseFreesOnce) {
  Recorder rec;
  BufferPool pool = rec.pool();
  auto a = pool.acquire(kKiB);
  std::byte* p = a.data();
  BufferPool::Lease b = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.data(), p);
  auto c = pool.acquire(kKiB);  // b still holds p
  EXPECT_NE(c.data(), p);
  b = std::move(c);  // releases p, takes c's buffer
  auto d = pool.acquire(kKiB);
  EXPECT_EQ(d.data(), p);
  EXPECT_EQ(rec.allocations, 2u);
}

TEST(BufferPool, AllocationFailureThrowsAndPoolStaysUsable) {
  Recorder rec;
  BufferPool pool = rec.pool();
  rec.fail = true;
  EXPECT_THROW(pool.acquire(kKiB), std::runtime_error);
  EXPECT_EQ(pool.total_bytes(), 0u);
  rec.fail = false;
  auto a = pool.acquire(kKiB);
  EXPECT_NE(a.data(), nullptr);
  EXPECT_EQ(pool.total_bytes(), 64 * kKiB);
}
