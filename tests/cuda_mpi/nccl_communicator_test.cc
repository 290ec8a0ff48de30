// What: the NCCL communicator on real GPUs under 1 and 2 MPI ranks (one GPU per rank, bound
// by node-local rank): every collective x dtype (f32, f64, i32, i64, bf16) x op against the
// closed forms of collective_cases.h, in place and not, nonblocking with waits in different
// orders, zero and odd sizes; splits; barrier; ordering against a non-blocking compute
// stream (the op reads what the compute stream wrote, later compute work sees the result);
// bitwise-identical results; Work::wait() blocking the host and Work::wait_stream() only the
// compute stream; the base class's numbering; argument errors; the factory; and the deadline:
// a late peer makes synchronize() and Work::wait() time out, abort the communicator and name
// the op; point-to-point (the shared p2p cases, waits inside a group, a late sender's peer
// named in the receiver's deadline error).
// Every test SKIPS (visibly, with the CUDA error) where a rank has no GPU of its own, as on
// the dev machine (error 35): NONE OF THIS HAS RUN ON A GPU YET.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "core/hash.h"
#include "core/cuda_device.h"
#include "core/device.h"
#include "core/error.h"
#include "cuda_test_util.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"

using namespace mt::parallel;
using namespace mt::testing;
using mt::core::Error;

namespace {

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = gpu_per_rank_skip_reason();  // collective: every rank skips alike
    if (!why.empty()) GTEST_SKIP() << why;
    device_ = node_local_rank();
    ASSERT_EQ(cudaSetDevice(device_), cudaSuccess);
    world_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world");
  }
  std::unique_ptr<NcclCommunicator> make(double timeout_s = 120, void* stream = nullptr) {
    NcclOptions o;
    o.timeout_s = timeout_s;
    return std::make_unique<NcclCommunicator>(*world_, device_, stream, o);
  }
  int device_ = 0;
  std::unique_ptr<MpiCommunicator> world_;
};

}  // namespace

TEST_F(Nccl, AllCollectivesAllDtypes) {
  auto c = make();
  EXPECT_EQ(c->backend_name(), "nccl");
  EXPECT_EQ(c->name(), "world");
  EXPECT_EQ(c->rank(), world_->rank());
  EXPECT_EQ(c->size(), world_->size());
  CudaMem mem;
  all_cases<float>(*c, mem, "nccl");
  all_cases<double>(*c, mem, "nccl");
  all_cases<int32_t>(*c, mem, "nccl");
  all_cases<int64_t>(*c, mem, "nccl");
  all_cases<Bf16>(*c, mem, "nccl");
  zero_size_case(*c, "nccl");
  c->synchronize();
  EXPECT_EQ(c->in_flight(), 0u);
  EXPECT_FALSE(c->aborted());
}

TEST_F(Nccl, SplitEvenOddAndBarrier) {
  auto c = make();
  const int p = c->size(), r = c->rank();
  auto sub = c->split(r % 2, -r);
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->backend_name(), "nccl");
  EXPECT_EQ(sub->size(), (p - r % 2 + 1) / 2);
  CudaMem mem;
  all_reduce_case<float>(*sub, mem, "split", true);
  all_gather_case<Bf16>(*sub, mem, "split", false, true);
  EXPECT_EQ(c->split(-1, 0), nullptr);
  sub->barrier();
  c->barrier();
}

// A user stream (non-blocking: no implicit order with anything) as the compute stream: the
// op must see the copy queued on it before, and the copy queued after wait_stream() the result.
TEST_F(Nccl, OrderedAgainstTheComputeStream) {
  cudaStream_t compute = nullptr;
  MT_CUDA_OK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  {
    auto c = make(120, compute);
    const int p = c->size(), r = c->rank();
    const size_t n = 8u << 20;  // 32 MiB: copies long enough to expose a missing dependency
    std::vector<float> in(n, static_cast<float>(r + 1)), out(n, -1.f);
    float* d = nullptr;
    float* h_in = nullptr;
    float* h_out = nullptr;
    MT_CUDA_OK(cudaMalloc(&d, n * 4));
    MT_CUDA_OK(cudaMallocHost(&h_in, n * 4));
    MT_CUDA_OK(cudaMallocHost(&h_out, n * 4));
    std::copy(in.begin(), in.end(), h_in);
    MT_CUDA_OK(cudaMemsetAsync(d, 0, n * 4, compute));
    MT_CUDA_OK(cudaMemcpyAsync(d, h_in, n * 4, cudaMemcpyHostToDevice, compute));
    auto w = c->iall_reduce(d, n, DType::F32, ReduceOp::Sum);
    w->wait_stream();  // the compute stream waits; the host does not
    MT_CUDA_OK(cudaMemcpyAsync(h_out, d, n * 4, cudaMemcpyDeviceToHost, compute));
    MT_CUDA_OK(cudaStreamSynchronize(compute));
    EXPECT_TRUE(w->test());
    const float want = static_cast<float>(p * (p + 1) / 2);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad += h_out[i] != want;
    EXPECT_EQ(bad, 0u);
    cudaFree(d);
    cudaFreeHost(h_in);
    cudaFreeHost(h_out);
  }
  cudaStreamDestroy(compute);
}

// Work::wait() blocks the host until the op is complete on the device: the Work is complete
// and the result can be read back on another stream without a synchronize(). The base class
// numbers the ops and times the wait.
TEST_F(Nccl, WorkWaitBlocksTheHost) {
  auto c = make();
  const size_t n = 1u << 22;
  CudaMem mem;
  Buf<float> b(mem, std::vector<float>(n, 1.f));
  Buf<float> z(mem, std::vector<float>(1, 1.f));
  auto w0 = c->iall_reduce(z.dev(), 0, DType::F32, ReduceOp::Sum);
  auto w = c->iall_reduce(b.dev(), n, DType::F32, ReduceOp::Sum);
  w->wait();
  EXPECT_TRUE(w->completed());
  EXPECT_EQ(w->error(), nullptr);
  EXPECT_EQ(c->in_flight(), 0u);
  EXPECT_EQ(w0->seq(), 0u);
  EXPECT_EQ(w->seq(), 1u);
  EXPECT_EQ(w->bytes(), n * 4);
  EXPECT_EQ(c->stats().ops, 2u);
  EXPECT_GE(c->stats().blocked_s, 0.0);
  std::vector<float> host(n, -1.f);
  // cudaMemcpy on the legacy default stream, which the communicator's non-blocking stream
  // does not order against: only the host wait makes the result visible here.
  MT_CUDA_OK(cudaMemcpy(host.data(), b.dev(), n * 4, cudaMemcpyDeviceToHost));
  EXPECT_EQ(host[n - 1], static_cast<float>(c->size()));
}

TEST_F(Nccl, WorkTestPollsTheCompletionEvent) {
  auto c = make();
  const size_t n = 1u << 22;
  CudaMem mem;
  Buf<float> b(mem, std::vector<float>(n, 1.f));
  auto w = c->iall_reduce(b.dev(), n, DType::F32, ReduceOp::Sum);
  long polls = 0;
  while (!w->test()) ++polls;
  EXPECT_TRUE(w->completed());
  EXPECT_EQ(w->error(), nullptr);
  EXPECT_EQ(b.download()[n - 1], static_cast<float>(c->size()));
}

TEST_F(Nccl, AllReduceBitwiseIdenticalAcrossRanks) {
  auto c = make();
  const int r = c->rank();
  CudaMem mem;
  for (size_t n : {size_t(5), size_t(300000)}) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = std::sin(0.37f * static_cast<float>(i) + 1.3f * r) * 1e-3f + 1.0f / (r + 3);
    Buf<float> b(mem, x);
    c->all_reduce(b.dev(), n, DType::F32, ReduceOp::Sum);
    c->synchronize();
    const auto& y = b.download();
    const uint64_t h = mt::core::fnv1a64(y.data(), n * 4);
    uint64_t lo = h, hi = h;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    EXPECT_EQ(lo, hi) << "n=" << n;
  }
}

TEST_F(Nccl, ArgumentErrorsDoNotAbort) {
  auto c = make();
  const int p = c->size(), r = c->rank();
  CudaMem mem;
  Buf<int32_t> i(mem, std::vector<int32_t>(8, 1));
  const uint64_t ops = c->stats().ops;
  EXPECT_THROW(c->all_reduce(i.dev(), 8, DType::I32, ReduceOp::Avg), Error);
  EXPECT_THROW(c->broadcast(i.dev(), 8, DType::I32, p), Error);
  EXPECT_THROW(c->all_reduce(nullptr, 8, DType::F32, ReduceOp::Sum), Error);
  if (p > 1) {
    Buf<float> buf(mem, std::vector<float>(4 * p));
    EXPECT_THROW(c->reduce_scatter(buf.dev(), buf.dev() + (r == 0 ? 1 : 0), 2, DType::F32, ReduceOp::Sum), Error);
  }
  EXPECT_FALSE(c->aborted());
  EXPECT_EQ(c->stats().ops, ops);  // argument errors are not numbered
  c->all_reduce(i.dev(), 8, DType::I32, ReduceOp::Sum);
  c->synchronize();
  EXPECT_EQ(i.download()[7], p);
}

// The last rank joins an all_reduce 4 s late; with a 1 s deadline the others' synchronize()
// times out, aborts their communicator and names the op. The late rank then waits for peers
// that have aborted: its own deadline ends that. Every communicator is aborted afterwards.
TEST_F(Nccl, DeadlineAbortsAndNamesTheOp) {
  auto c = make(1.0);
  const int p = c->size(), r = c->rank();
  // One rank has no peer to be late: the -np 2 run covers this. (Not GTEST_SKIP: ctest would
  // then count the whole -np 1 binary as skipped, hiding the tests that ran.)
  if (p < 2) return;
  CudaMem mem;
  Buf<float> b(mem, std::vector<float>(1024, 1.f));
  c->all_reduce(b.dev(), 1024, DType::F32, ReduceOp::Sum);  // #0, completes
  c->synchronize();
  if (r == p - 1) std::this_thread::sleep_for(std::chrono::seconds(4));
  auto w = c->iall_reduce(b.dev(), 1024, DType::F32, ReduceOp::Sum);  // #1
  try {
    c->synchronize();
    ADD_FAILURE() << "rank " << r << ": synchronize() returned although a peer was late or had aborted";
  } catch (const Error& e) {
    // Early ranks time out; the late rank times out too or sees NCCL's remote error.
    const std::string m = e.what();
    if (r != p - 1) {
      EXPECT_NE(m.find("timed out after"), std::string::npos) << m;
      EXPECT_NE(m.find("all_reduce #1 (4096 bytes) on communicator 'world' (rank " + std::to_string(r)),
                std::string::npos)
          << m;
    }
    EXPECT_NE(m.find("all_reduce #1 (4096 bytes) on"), std::string::npos) << m;
    EXPECT_NE(m.find("[ncclCommAbort called on this rank]"), std::string::npos) << m;
    EXPECT_TRUE(c->aborted());
    EXPECT_THROW(c->iall_reduce(b.dev(), 1, DType::F32, ReduceOp::Sum), Error);
    EXPECT_TRUE(w->test());
    EXPECT_NE(w->error(), nullptr);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// The same through Work::wait(), which now blocks the host with the deadline: the early ranks'
// wait() times out, aborts and names the op; the Work completes with that error.
TEST_F(Nccl, DeadlineInWorkWait) {
  auto c = make(1.0);
  const int p = c->size(), r = c->rank();
  if (p < 2) return;  // as above
  CudaMem mem;
  Buf<float> b(mem, std::vector<float>(1024, 1.f));
  c->all_reduce(b.dev(), 1024, DType::F32, ReduceOp::Sum);  // #0, completes (host wait)
  if (r == p - 1) std::this_thread::sleep_for(std::chrono::seconds(4));
  auto w = c->iall_reduce(b.dev(), 1024, DType::F32, ReduceOp::Sum);  // #1
  try {
    w->wait();
    ADD_FAILURE() << "rank " << r << ": wait() returned although a peer was late or had aborted";
  } catch (const Error& e) {
    const std::string m = e.what();
    if (r != p - 1) {
      EXPECT_NE(m.find("timed out after"), std::string::npos) << m;
    }
    EXPECT_NE(m.find("all_reduce #1 (4096 bytes) on"), std::string::npos) << m;
    EXPECT_NE(m.find("[ncclCommAbort called on this rank]"), std::string::npos) << m;
    EXPECT_TRUE(c->aborted());
    EXPECT_TRUE(w->completed());
    EXPECT_NE(w->error(), nullptr);
    EXPECT_GE(c->stats().blocked_s, r != p - 1 ? 0.9 : 0.0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Point-to-point on NCCL: the shared p2p cases (crossing exchanges inside group_start/end,
// ordered blocking exchanges, several messages from one peer matched in order, a 1M-element
// pairwise exchange) for every dtype, and zero counts. Tags are not relied on (NCCL has none).
TEST_F(Nccl, PointToPointAllDtypes) {
  auto c = make();
  CudaMem mem;
  p2p_cases<float>(*c, mem, "nccl", size_t(4) << 20);
  p2p_cases<double>(*c, mem, "nccl");
  p2p_cases<int32_t>(*c, mem, "nccl");
  p2p_cases<int64_t>(*c, mem, "nccl", 1000);
  p2p_cases<Bf16>(*c, mem, "nccl");
  p2p_zero_case(*c, "nccl");
  c->synchronize();
  EXPECT_EQ(c->in_flight(), 0u);
  EXPECT_FALSE(c->aborted());
}

// Inside a group nothing can be waited for (the ops are launched at group_end()): wait()
// and synchronize() throw a usage error without aborting, test() says not done; after
// group_end() the same Works complete with the partner's data.
TEST_F(Nccl, PointToPointGroupWaitsAfterGroupEnd) {
  auto c = make();
  const int p = c->size(), r = c->rank(), partner = r ^ 1;
  if (partner >= p) return;  // -np 1: no partner (not GTEST_SKIP, see DeadlineAbortsAndNamesTheOp)
  CudaMem mem;
  Buf<float> s(mem, std::vector<float>(1000, static_cast<float>(r))), g(mem, std::vector<float>(1000, -1.f));
  c->group_start();
  auto ws = c->isend(s.dev(), 1000, DType::F32, partner);
  auto wr = c->irecv(g.dev(), 1000, DType::F32, partner);
  EXPECT_FALSE(wr->test());
  EXPECT_THROW(wr->wait(), Error);
  EXPECT_THROW(c->synchronize(), Error);
  c->group_end();
  EXPECT_FALSE(c->aborted());
  wr->wait();
  ws->wait();
  EXPECT_EQ(g.download()[999], static_cast<float>(partner));
}

// A late sender: the receiver's wait() times out after the deadline, aborts and names the op
// and the peer.
TEST_F(Nccl, PointToPointDeadlineNamesThePeer) {
  auto c = make(1.0);
  const int p = c->size(), r = c->rank(), partner = r ^ 1;
  if (partner >= p) return;
  CudaMem mem;
  Buf<float> b(mem, std::vector<float>(1024, 1.f));
  if (r % 2 == 0) std::this_thread::sleep_for(std::chrono::seconds(4));
  auto w = r % 2 == 0 ? c->isend(b.dev(), 1024, DType::F32, partner) : c->irecv(b.dev(), 1024, DType::F32, partner);
  try {
    w->wait();
    if (r % 2 == 1) ADD_FAILURE() << "rank " << r << ": the recv should have timed out";
  } catch (const Error& e) {
    const std::string m = e.what();
    if (r % 2 == 1) {
      EXPECT_NE(m.find("recv from rank " + std::to_string(partner) + " (4096 bytes) on communicator 'world'"),
                std::string::npos)
          << m;
      EXPECT_NE(m.find("timed out after"), std::string::npos) << m;
    }
    EXPECT_NE(m.find("[ncclCommAbort called on this rank]"), std::string::npos) << m;
    EXPECT_TRUE(c->aborted());
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_F(Nccl, FactoryGivesNcclOnePerGpu) {
  mt::core::Device& gpu = mt::core::cuda_device(device_);  // this rank's GPU
  auto c = make_device_communicator(*world_, gpu, "auto", 60);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->backend_name(), "nccl");
  CudaMem mem;
  all_reduce_case<float>(*c, mem, "factory", true);
}
