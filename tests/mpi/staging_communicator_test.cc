// What: the host-staging communicator (device buffers over MPI) under 2 and 4 real MPI ranks,
// with the CPU device, whose copies are memcpy, so the whole staging logic runs here: every
// collective x dtype (bf16 included) x op against closed forms, in place and out of place,
// nonblocking waits in different orders, zero sizes, splits; the copy protocol (device work
// waited for before the copy out, one copy out and one copy back per op, dropped Works still
// copied back, the host pool reused); wait_stream() (wait() here) and the base class's
// numbering; deadlines of a TimeoutCommunicator underneath; point-to-point (the shared p2p
// cases, its copy protocol, deadlines naming the peer); and make_device_communicator's
// choices.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "collective_cases.h"
#include "core/device.h"
#include "core/error.h"
#include "mt/build_config.h"
#include "parallel/mpi_communicator.h"
#include "parallel/staging_communicator.h"
#include "parallel/timeout_communicator.h"

using namespace mt::parallel;
using namespace mt::testing;
using mt::core::Error;

namespace {

// A device whose memory is host memory (so it runs here) and which counts what the staging
// communicator asks of it. kind() is configurable so the factory treats it as a GPU.
class CountingDevice final : public mt::core::Device {
 public:
  explicit CountingDevice(mt::core::DeviceKind kind) : kind_(kind) {}
  mt::core::DeviceKind kind() const override { return kind_; }
  std::string name() const override { return kind_ == mt::core::DeviceKind::CPU ? "cpu" : "fake-gpu:0"; }
  void* alloc(size_t bytes) override { return mt::core::cpu_device().alloc(bytes); }
  void free(void* p) override { mt::core::cpu_device().free(p); }
  void copy(void* dst, const void* src, size_t bytes) override {
    ++copies;
    copied_bytes += bytes;
    if (records == synced) ++copies_after_sync;  // every recorded event was synchronised first
    std::memcpy(dst, src, bytes);
  }
  void copy_async(void* dst, const void* src, size_t bytes) override { copy(dst, src, bytes); }
  void memset_zero(void* p, size_t bytes) override { std::memset(p, 0, bytes); }
  void synchronize() override {}
  void* alloc_host(size_t bytes) override {
    ++host_allocs;
    return mt::core::cpu_device().alloc_host(bytes);
  }
  void free_host(void* p) override { mt::core::cpu_device().free_host(p); }
  size_t bytes_in_use() const override { return mt::core::cpu_device().bytes_in_use(); }
  size_t peak_bytes_in_use() const override { return mt::core::cpu_device().peak_bytes_in_use(); }
  std::unique_ptr<mt::core::Event> create_event() override { return std::make_unique<Ev>(this); }

  int copies = 0, copies_after_sync = 0, records = 0, synced = 0, host_allocs = 0;
  size_t copied_bytes = 0;

 private:
  struct Ev final : mt::core::Event {
    explicit Ev(CountingDevice* d) : d(d) {}
    void record() override { ++d->records; }
    void synchronize() override { ++d->synced; }
    bool query() override { return true; }
    CountingDevice* d;
  };
  mt::core::DeviceKind kind_;
};

std::unique_ptr<MpiCommunicator> world(const char* name, MpiCommOptions o = {}) {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, name, o);
}

}  // namespace

TEST(Staging, AllCollectivesAllDtypes) {
  MpiCommOptions ring;  // the framework's ring with small segments, and the defaults
  ring.ring_min_bytes = 0;
  ring.segment_bytes = 512;
  HostMem mem;
  for (auto [tag, opt] : {std::pair{"default", MpiCommOptions{}}, std::pair{"ring", ring}}) {
    auto host = world(tag, opt);
    StagingCommunicator c(*host, mt::core::cpu_device());
    EXPECT_EQ(c.backend_name(), "mpi-staging");
    EXPECT_EQ(c.name(), tag);
    EXPECT_EQ(c.rank(), host->rank());
    EXPECT_EQ(c.size(), host->size());
    all_cases<float>(c, mem, tag);
    all_cases<double>(c, mem, tag);
    all_cases<int32_t>(c, mem, tag);
    all_cases<int64_t>(c, mem, tag);
    all_cases<Bf16>(c, mem, tag);
    zero_size_case(c, tag);
    EXPECT_EQ(c.outstanding(), 0u);
  }
}

// One event recorded and synchronised before each copy out, one copy out and one copy back
// of exactly the op's bytes (the root of a broadcast copies nothing back).
TEST(Staging, CopyProtocol) {
  auto host = world("world");
  CountingDevice dev(mt::core::DeviceKind::CPU);
  StagingCommunicator c(*host, dev);
  const int p = c.size(), r = c.rank();
  std::vector<float> x(1000, 1.0f);
  c.all_reduce(x.data(), x.size(), DType::F32, ReduceOp::Sum);
  EXPECT_EQ(dev.records, 1);
  EXPECT_EQ(dev.synced, 1);
  EXPECT_EQ(dev.copies, 2);
  EXPECT_EQ(dev.copies_after_sync, 2);
  EXPECT_EQ(dev.copied_bytes, 2 * 4000u);
  EXPECT_EQ(x[999], static_cast<float>(p));

  std::vector<double> send(10 * p, 2.0), recv(10);
  c.reduce_scatter(send.data(), recv.data(), 10, DType::F64, ReduceOp::Sum);
  EXPECT_EQ(dev.copied_bytes, 8000u + 80u * p + 80u);  // all p blocks out, one block back
  EXPECT_EQ(recv[3], 2.0 * p);

  std::vector<int32_t> mine(5, r), all(5 * p, -1);
  c.all_gather(mine.data(), all.data(), 5, DType::I32);
  EXPECT_EQ(dev.copied_bytes, 8000u + 80u * p + 80u + 20u + 20u * p);  // own block out, all back
  for (int q = 0; q < p; ++q) EXPECT_EQ(all[q * 5 + 4], q);

  const int copies_before = dev.copies, records_before = dev.records;
  std::vector<int64_t> b(3, r == 0 ? 42 : 0);
  c.broadcast(b.data(), 3, DType::I64, 0);
  EXPECT_EQ(dev.copies - copies_before, 1);  // root: out only; others: back only
  EXPECT_EQ(dev.records - records_before, r == 0 ? 1 : 0);
  EXPECT_EQ(b[2], 42);
  EXPECT_EQ(dev.copies_after_sync, dev.copies);  // no copy between a record and its synchronize
  // the staging buffers are the device's host staging memory (page-locked on CUDA), pooled:
  // four ops of at most 4000 bytes fit in the pool's first 64 KiB buffer
  EXPECT_EQ(dev.host_allocs, 1);
}

// The contract: dropping a Work does not cancel it; the copy back happens in later calls.
TEST(Staging, DroppedWorkIsStillCopiedBack) {
  auto host = world("world");
  StagingCommunicator c(*host, mt::core::cpu_device());
  const int p = c.size(), r = c.rank();
  std::vector<float> a(300000), b(7);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(w(r, i, p));
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(w(r, i, p));
  c.iall_reduce(a.data(), a.size(), DType::F32, ReduceOp::Sum);  // dropped at once
  auto wb = c.iall_reduce(b.data(), b.size(), DType::F32, ReduceOp::Max);
  wb->wait();
  c.synchronize();  // finishes the dropped one too
  EXPECT_EQ(c.outstanding(), 0u);
  std::string msg;
  EXPECT_EQ(mismatches(a.data(), a.size(), [&](size_t i) { return expected<float>(ReduceOp::Sum, i, p); }, &msg), 0u)
      << msg;
  EXPECT_EQ(mismatches(b.data(), b.size(), [&](size_t i) { return expected<float>(ReduceOp::Max, i, p); }, &msg), 0u)
      << msg;
}

// wait_stream() on host staging is wait() (the result is copied back in it); the base class
// numbers and counts the staging communicator's ops like any other's, and its host
// communicator sees each op once (the barrier included).
TEST(Staging, WaitStreamCopiesBackAndOpsAreNumbered) {
  auto host = world("world");
  StagingCommunicator c(*host, mt::core::cpu_device());
  const int p = c.size(), r = c.rank();
  std::vector<float> a(300000);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(w(r, i, p));
  auto wa = c.iall_reduce(a.data(), a.size(), DType::F32, ReduceOp::Sum);
  wa->wait_stream();
  EXPECT_TRUE(wa->completed());
  std::string msg;
  EXPECT_EQ(mismatches(a.data(), a.size(), [&](size_t i) { return expected<float>(ReduceOp::Sum, i, p); }, &msg), 0u)
      << msg;
  c.barrier();
  auto wz = c.iall_reduce(nullptr, 0, DType::F32, ReduceOp::Sum);
  wz->wait_stream();
  EXPECT_EQ(wa->seq(), 0u);
  EXPECT_EQ(std::string(wa->op()), "all_reduce");
  EXPECT_EQ(wa->bytes(), a.size() * 4);
  EXPECT_EQ(wz->seq(), 2u);
  EXPECT_EQ(c.stats().ops, 3u);
  EXPECT_EQ(c.stats().bytes, static_cast<double>(a.size() * 4));
  EXPECT_EQ(host->stats().ops, 3u);
  EXPECT_EQ(c.outstanding(), 0u);
}

TEST(Staging, HostPoolIsReused) {
  auto host = world("world");
  StagingCommunicator c(*host, mt::core::cpu_device());
  std::vector<float> x(1 << 18, 1.0f);
  c.all_reduce(x.data(), x.size(), DType::F32, ReduceOp::Sum);
  const size_t after_first = c.staging_bytes();
  EXPECT_GE(after_first, x.size() * 4);
  for (int i = 0; i < 3; ++i) c.all_reduce(x.data(), x.size(), DType::F32, ReduceOp::Sum);
  c.all_reduce(x.data(), 1000, DType::F32, ReduceOp::Sum);
  EXPECT_EQ(c.staging_bytes(), after_first);
  // Two in flight at once need a second buffer (unless the first completes as the second is
  // issued, which depends on timing); repeating the pattern adds nothing beyond that one.
  for (int k = 0; k < 4; ++k) {
    auto w1 = c.iall_reduce(x.data(), x.size() / 2, DType::F32, ReduceOp::Sum);
    auto w2 = c.iall_reduce(x.data() + x.size() / 2, x.size() / 2, DType::F32, ReduceOp::Sum);
    if (k % 2) w2->wait();
    w1->wait();
    w2->wait();
  }
  EXPECT_LE(c.staging_bytes(), after_first + x.size() / 2 * 4);
}

TEST(Staging, SplitEvenOdd) {
  auto host = world("world");
  StagingCommunicator c(*host, mt::core::cpu_device());
  const int p = c.size(), r = c.rank();
  auto sub = c.split(r % 2, -r);  // reversed order inside each group
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->backend_name(), "mpi-staging");
  EXPECT_EQ(sub->name(), "world/split(color=" + std::to_string(r % 2) + ",key=" + std::to_string(-r) + ")");
  const int members = (p - r % 2 + 1) / 2;
  EXPECT_EQ(sub->size(), members);
  std::vector<Bf16> x(1001, Bf16::from_float(static_cast<float>(r)));
  sub->all_reduce(x.data(), x.size(), DType::BF16, ReduceOp::Sum);
  float want = 0;
  for (int q = r % 2; q < p; q += 2) want += static_cast<float>(q);
  EXPECT_EQ(x[1000].to_float(), want);
  EXPECT_EQ(c.split(-1, 0), nullptr);  // "no group"
  HostMem mem;
  all_reduce_case<int64_t>(*sub, mem, "split", true);
}

TEST(Staging, ArgumentErrorsLeaveItUsable) {
  auto host = world("world");
  StagingCommunicator c(*host, mt::core::cpu_device());
  const int p = c.size(), r = c.rank();
  int32_t i[8] = {};
  EXPECT_THROW(c.all_reduce(i, 8, DType::I32, ReduceOp::Avg), Error);  // from the host backend
  EXPECT_THROW(c.ibroadcast(i, 8, DType::I32, p), Error);
  if (p > 1) {
    std::vector<float> buf(4 * p);
    EXPECT_THROW(c.reduce_scatter(buf.data(), buf.data() + (r == 0 ? 1 : 0), 2, DType::F32, ReduceOp::Sum), Error);
    EXPECT_THROW(c.all_gather(buf.data() + (r == 0 ? 1 : 0), buf.data(), 2, DType::F32), Error);
  }
  EXPECT_THROW(c.all_reduce(nullptr, 3, DType::F32, ReduceOp::Sum), Error);
  EXPECT_EQ(c.outstanding(), 0u);
  float one = 1.f;
  c.all_reduce(&one, 1, DType::F32, ReduceOp::Sum);
  EXPECT_EQ(one, static_cast<float>(p));
}

// A TimeoutCommunicator underneath gives staged ops their deadline: rank 0 gives up waiting
// for a late rank 1, its buffer stays leased, and the op completes (and is copied back) once
// rank 1 joins.
TEST(Staging, DeadlineOfTheHostCommunicatorApplies) {
  auto inner = world("world");
  const int p = inner->size(), r = inner->rank();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  TimeoutCommunicator host(std::move(inner), 0.3);
  StagingCommunicator c(host, mt::core::cpu_device());
  std::vector<float> x(100, static_cast<float>(r + 1));
  if (r == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto work = c.iall_reduce(x.data(), x.size(), DType::F32, ReduceOp::Sum);
  bool timed_out = false;
  try {
    work->wait();
  } catch (const Error& e) {
    timed_out = true;
    const std::string m = e.what();
    EXPECT_NE(m.find("timed out after"), std::string::npos) << m;
    EXPECT_NE(m.find("all_reduce #0 (400 bytes)"), std::string::npos) << m;
    EXPECT_NE(m.find("(rank " + std::to_string(r) + " of"), std::string::npos) << m;
    EXPECT_FALSE(work->completed());
    EXPECT_EQ(c.outstanding(), 1u);
  }
  if (r == 0) {
    EXPECT_TRUE(timed_out) << "rank 0 should have given up on the late rank 1";
  }
  while (!work->test()) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // no deadline in test()
  c.synchronize();
  EXPECT_TRUE(work->completed());
  EXPECT_EQ(x[99], static_cast<float>(p * (p + 1) / 2));
  EXPECT_EQ(c.outstanding(), 0u);
}

// Point-to-point through host staging: the shared cases for every dtype (a 4M-float pairwise
// exchange among them), tags and zero counts, over the default MPI communicator.
TEST(Staging, PointToPointAllDtypes) {
  HostMem mem;
  auto host = world("p2p");
  StagingCommunicator c(*host, mt::core::cpu_device());
  p2p_cases<float>(c, mem, "staging", size_t(4) << 20);
  p2p_cases<double>(c, mem, "staging");
  p2p_cases<int32_t>(c, mem, "staging");
  p2p_cases<int64_t>(c, mem, "staging", 1000);
  p2p_cases<Bf16>(c, mem, "staging");
  p2p_tags_case<double>(c, mem, "staging");
  EXPECT_EQ(c.stats().p2p_ops, host->stats().p2p_ops);  // each staged op is one host op
  EXPECT_EQ(c.stats().p2p_bytes, host->stats().p2p_bytes);
  p2p_zero_case(c, "staging");  // zero counts do not reach the host communicator
  EXPECT_EQ(c.stats().p2p_ops, host->stats().p2p_ops + (c.size() > 1 ? 3 : 0));
  EXPECT_EQ(c.outstanding(), 0u);
}

// A send waits for the device's queued work and copies out once at issue (nothing back); a
// recv copies in once, when it completes, and not before (the device buffer is untouched
// while the host recv is in flight).
TEST(Staging, PointToPointCopyProtocol) {
  auto host = world("world");
  const int p = host->size(), r = host->rank(), partner = r ^ 1;
  if (partner >= p) GTEST_SKIP() << "no partner";
  CountingDevice dev(mt::core::DeviceKind::CPU);
  StagingCommunicator c(*host, dev);
  std::vector<float> x(1000, static_cast<float>(r));
  if (r % 2 == 0) {
    MPI_Barrier(MPI_COMM_WORLD);  // the partner's recv is posted (and checked) first
    c.send(x.data(), x.size(), DType::F32, partner, 1);
    EXPECT_EQ(dev.records, 1);
    EXPECT_EQ(dev.synced, 1);
    EXPECT_EQ(dev.copies, 1);
    EXPECT_EQ(dev.copied_bytes, 4000u);
    EXPECT_EQ(dev.copies_after_sync, 1);
  } else {
    auto w = c.irecv(x.data(), x.size(), DType::F32, partner, 1);
    EXPECT_EQ(dev.records, 0);  // nothing to wait for on the device before a recv
    EXPECT_EQ(dev.copies, 0);   // the partner sends only after the barrier
    EXPECT_FALSE(w->test());
    EXPECT_EQ(x[0], static_cast<float>(r));
    MPI_Barrier(MPI_COMM_WORLD);
    w->wait();
    EXPECT_EQ(dev.copies, 1);
    EXPECT_EQ(dev.copied_bytes, 4000u);
    EXPECT_EQ(x[999], static_cast<float>(partner));
  }
  EXPECT_EQ(c.outstanding(), 0u);
}

// A TimeoutCommunicator underneath gives staged recvs their deadline, naming the peer; the
// recv stays in flight (its host buffer leased) and is copied in once the late send arrives.
TEST(Staging, PointToPointDeadlineNamesThePeer) {
  auto inner = world("pp");
  const int p = inner->size(), r = inner->rank(), partner = r ^ 1;
  if (partner >= p) GTEST_SKIP() << "no partner";
  TimeoutCommunicator host(std::move(inner), 0.3);
  StagingCommunicator c(host, mt::core::cpu_device());
  std::vector<float> x(100, static_cast<float>(r));
  if (r % 2 == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    c.send(x.data(), x.size(), DType::F32, partner, 6);
  } else {
    auto w = c.irecv(x.data(), x.size(), DType::F32, partner, 6);
    try {
      w->wait();
      ADD_FAILURE() << "the recv should have timed out";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("recv from rank " + std::to_string(partner) + " (tag 6, 400 bytes) on communicator 'pp' (rank " +
                       std::to_string(r) + " of " + std::to_string(p) + ") timed out after"),
                std::string::npos)
          << m;
      EXPECT_NE(m.find("the peer is dead or stuck"), std::string::npos) << m;
    }
    EXPECT_FALSE(w->completed());
    EXPECT_EQ(c.outstanding(), 1u);
    EXPECT_EQ(x[0], static_cast<float>(r));  // not copied in yet
    while (!w->test()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(x[99], static_cast<float>(partner));
  }
  c.synchronize();
  EXPECT_EQ(c.outstanding(), 0u);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Staging, FactoryChoosesTheBackend) {
  auto host = world("dp");
  EXPECT_EQ(make_device_communicator(*host, mt::core::cpu_device(), "auto"), nullptr);
  EXPECT_EQ(make_device_communicator(*host, mt::core::cpu_device(), "nccl"), nullptr);
  CountingDevice gpu(mt::core::DeviceKind::CUDA);
  auto staged = make_device_communicator(*host, gpu, "mpi");
  ASSERT_NE(staged, nullptr);
  EXPECT_EQ(staged->backend_name(), "mpi-staging");
  EXPECT_EQ(staged->name(), "dp");
  float x = 1.f;
  staged->all_reduce(&x, 1, DType::F32, ReduceOp::Sum);
  EXPECT_EQ(x, static_cast<float>(host->size()));
  EXPECT_GE(gpu.copies, 2);
  try {
    make_device_communicator(*host, gpu, "gloo");
    ADD_FAILURE() << "unknown backend accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown communicator backend 'gloo'"), std::string::npos) << e.what();
  }
#if MT_WITH_NCCL
  // The fake GPU says index 0 on every rank. With a GPU: all ranks share GPU 0, so auto
  // stages (one rank: NCCL) and nccl is refused; without one, every rank reports the CUDA
  // error of the device query (none hangs in the UUID all_gather).
  const int p = host->size();
  try {
    auto a = make_device_communicator(*host, gpu, "auto");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->backend_name(), p > 1 ? "mpi-staging" : "nccl");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cudaGetDeviceProperties(device 0) failed"), std::string::npos) << e.what();
  }
  if (p > 1) {
    try {
      make_device_communicator(*host, gpu, "nccl");
      ADD_FAILURE() << "nccl with every rank on GPU 0";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_TRUE(m.find("one GPU cannot host two NCCL ranks") != std::string::npos ||
                  m.find("cudaGetDeviceProperties(device 0) failed") != std::string::npos)
          << m;
    }
  }
#else
  // No NCCL in this build: auto stages, nccl is an error naming the cause.
  auto a = make_device_communicator(*host, gpu, "auto");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->backend_name(), "mpi-staging");
  try {
    make_device_communicator(*host, gpu, "nccl");
    ADD_FAILURE() << "nccl in a build without NCCL";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("this build has no NCCL"), std::string::npos) << e.what();
  }
#endif
}
