// The CUDA device: size classes, the caching allocator (a warm loop makes no cudaMalloc),
// copies through pinned staging memory ordered by events, device selection and its errors.
// Without a usable GPU the tests that need one are SKIPPED with the runtime's reason; the
// size classes and the error path of device lookup are checked everywhere.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "core/cuda_device.h"
#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"
#include "cuda/cuda_test_util.h"

namespace {

using mt::core::cuda_size_class;

TEST(CudaSizeClass, RoundsUpToFixedSteps) {
  EXPECT_EQ(cuda_size_class(0), 512u);
  EXPECT_EQ(cuda_size_class(1), 512u);
  EXPECT_EQ(cuda_size_class(512), 512u);
  EXPECT_EQ(cuda_size_class(513), 1024u);
  EXPECT_EQ(cuda_size_class((1u << 20) - 1), 1u << 20);
  EXPECT_EQ(cuda_size_class(1u << 20), 2u << 20);        // from 1 MiB: 2 MiB steps
  EXPECT_EQ(cuda_size_class((2u << 20) + 1), 4u << 20);
  for (size_t b : {size_t{3}, size_t{4095}, size_t{777777}, size_t{5} << 20, size_t{123456789}}) {
    EXPECT_GE(cuda_size_class(b), b);
    EXPECT_LT(cuda_size_class(b) - b, b < (1u << 20) ? 512u : (2u << 20));
  }
}

// Where the runtime cannot be used, asking for a CUDA device fails with its reason (and a
// hint), rather than crashing or pretending.
TEST(CudaDevice, UnusableRuntimeIsAClearError) {
  const std::string reason = mt::core::cuda_unavailable_reason();
  if (reason.empty()) GTEST_SKIP() << "a GPU is usable here; the error path is not reachable";
  try {
    mt::core::get_device("cuda");
    FAIL() << "get_device(\"cuda\") returned without a usable GPU";
  } catch (const mt::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    EXPECT_FALSE(e.context().hint.empty());
  }
  EXPECT_THROW(mt::core::select_device("cuda", 0, 1), mt::core::Error);
}

TEST(CudaDevice, NamesTheDeviceCountForABadIndex) {
  MT_REQUIRE_GPU();
  const int n = mt::core::cuda_device_count();
  try {
    mt::core::get_device("cuda:" + std::to_string(n));
    FAIL() << "cuda:" << n << " exists?";
  } catch (const mt::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(n) + " CUDA device(s)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(mt::core::get_device("cuda:x"), mt::core::Error);
  // "cuda" binds local_rank % count
  EXPECT_EQ(&mt::core::select_device("cuda", n, n + 1), &mt::core::get_device("cuda:0"));
}

TEST(CudaAllocator, WarmLoopReusesBlocksWithoutMalloc) {
  MT_REQUIRE_GPU();
  mt::core::Device& dev = mt::core::get_device("cuda:0");
  const size_t base = dev.bytes_in_use();
  const std::vector<size_t> sizes{100, 5000, 1 << 20, (3 << 20) + 7, 64 << 20, 4096};
  auto one_step = [&] {
    std::vector<void*> ptrs;
    for (size_t s : sizes) ptrs.push_back(dev.alloc(s));
    for (void* p : ptrs) EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
    size_t expect = base;
    for (size_t s : sizes) expect += cuda_size_class(s);
    EXPECT_EQ(dev.bytes_in_use(), expect);
    for (void* p : ptrs) dev.free(p);
  };
  one_step();  // cold: may call cudaMalloc
  const auto warm = mt::core::cuda_allocator_stats(dev);
  for (int i = 0; i < 5; ++i) one_step();
  const auto after = mt::core::cuda_allocator_stats(dev);
  EXPECT_EQ(after.device_mallocs, warm.device_mallocs) << "the warm loop called cudaMalloc";
  EXPECT_EQ(after.cache_hits - warm.cache_hits, static_cast<int64_t>(5 * sizes.size()));
  EXPECT_EQ(after.reserved, warm.reserved);
  EXPECT_EQ(dev.bytes_in_use(), base);
  EXPECT_GE(dev.peak_bytes_in_use(), base + (64u << 20));
  // releasing the cache returns the free blocks to the driver
  mt::core::cuda_release_cached(dev);
  EXPECT_EQ(mt::core::cuda_allocator_stats(dev).cached, 0u);
}

TEST(CudaDevice, AsyncCopiesThroughPinnedMemoryAreOrdered) {
  MT_REQUIRE_GPU();
  mt::core::Device& dev = mt::core::get_device("cuda:0");
  const size_t n = 1 << 20;
  mt::core::HostBuffer stage(dev, n * sizeof(float));
  float* h = static_cast<float*>(stage.data());
  std::iota(h, h + n, 0.0f);
  mt::core::Tensor a = mt::core::Tensor::empty({static_cast<int64_t>(n)}, mt::core::DType::F32, dev);
  mt::core::Tensor b = mt::core::Tensor::empty({static_cast<int64_t>(n)}, mt::core::DType::F32, dev);
  auto ev = dev.create_event();
  dev.copy_async(a.raw(), h, n * sizeof(float));   // host -> device
  dev.copy_async(b.raw(), a.raw(), n * sizeof(float));  // device -> device, after it
  ev->record();
  ev->synchronize();
  EXPECT_TRUE(ev->query());
  std::fill(h, h + n, -1.0f);  // the staging memory is free again
  dev.copy_async(h, b.raw(), n * sizeof(float));
  dev.synchronize();
  for (size_t i = 0; i < n; i += 4099) ASSERT_EQ(h[i], static_cast<float>(i));
  // memset_zero is queued too; copy() waits for it
  a.zero_();
  std::vector<float> back(n, 1.0f);
  dev.copy(back.data(), a.raw(), n * sizeof(float));
  for (size_t i = 0; i < n; i += 4099) ASSERT_EQ(back[i], 0.0f);
  EXPECT_NE(dev.stream(), nullptr);
  EXPECT_NE(dev.description().find("cuda:0"), std::string::npos);
}

}  // namespace
