// What: the MPI Communicator under 2 and 4 ranks: every collective x dtype (f32, f64, i32,
// i64) x op (sum, avg for floats, max), blocking and nonblocking, against the closed forms
// of collective_cases.h (shared with the staging and NCCL tests);
// odd, zero and non-divisible sizes; both algorithms (the library's nonblocking collectives
// and the framework's ring, forced by options, with tiny segments to exercise pipelining)
// and the default thresholds with messages above them; in-place forms; broadcast from every
// root; Work::test polling and waits in a different order on different ranks; wait_stream()
// (wait() on a host backend); splits (even/odd, reversed keys, mesh dp/tp groups); the base
// class's sequence numbers and statistics (ops, bytes, host time blocked waiting for a late
// peer); argument and MPI error paths. bf16 reductions have their own file
// (bf16_reduce_test.cc).
// Tests issue all their collectives before checking and use EXPECT_ so that a failing rank
// does not leave the others blocked (see tests/mpi_main.cc).
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "collective_cases.h"
#include "core/error.h"
#include "core/hash.h"
#include "mt/build_config.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"
#include "parallel/mpi_communicator.h"
#include "parallel/timeout_communicator.h"

using namespace mt::parallel;
using namespace mt::testing;
using mt::core::Error;

namespace {

// Communicator configurations covering every algorithm: the library's collectives, the
// framework's small algorithms (recursive doubling, small ring) with default and tiny
// pieces, the large ring with default and tiny segments, and the defaults.
struct Cfg {
  const char* name;
  MpiCommOptions opt;
};
std::vector<Cfg> configs() {
  MpiCommOptions library, small, small_pieces, ring, ring_seg, deflt;
  library.ring_min_bytes = std::numeric_limits<size_t>::max();
  library.small_algorithm = SmallAlgorithm::Library;
  small.ring_min_bytes = std::numeric_limits<size_t>::max();
  small_pieces.ring_min_bytes = std::numeric_limits<size_t>::max();
  small_pieces.small_piece_bytes = 64;
  ring.ring_min_bytes = 0;
  ring_seg.ring_min_bytes = 0;
  ring_seg.segment_bytes = 256;
  return {{"library", library}, {"small", small},          {"small_pieces64", small_pieces},
          {"ring", ring},       {"ring_seg256", ring_seg}, {"default", deflt}};
}
std::unique_ptr<MpiCommunicator> make(const Cfg& c) {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, c.name, c.opt);
}

// Every case of collective_cases.h for dtype T, under every configuration.
template <class T>
void all_cases_every_config() {
  HostMem mem;
  for (const auto& cfg : configs()) {
    auto c = make(cfg);
    all_cases<T>(*c, mem, cfg.name);
  }
}

uint64_t fnv(const void* p, size_t n) { return mt::core::fnv1a64(p, n); }

}  // namespace

TEST(Communicator, Basics) {
  auto c = make_world_communicator("mpi");
  int wr = 0, ws = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &wr);
  MPI_Comm_size(MPI_COMM_WORLD, &ws);
  EXPECT_EQ(c->rank(), wr);
  EXPECT_EQ(c->size(), ws);
  EXPECT_EQ(c->backend_name(), "mpi");
  EXPECT_EQ(c->name(), "world");
  c->barrier();
  auto a = make_world_communicator("auto");
  EXPECT_EQ(a->backend_name(), "mpi");
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
}

TEST(Communicator, AllCollectivesF32) { all_cases_every_config<float>(); }
TEST(Communicator, AllCollectivesF64) { all_cases_every_config<double>(); }
TEST(Communicator, AllCollectivesI32) { all_cases_every_config<int32_t>(); }
TEST(Communicator, AllCollectivesI64) { all_cases_every_config<int64_t>(); }

TEST(Communicator, ZeroSizeCompletesAtOnce) {
  for (const auto& cfg : configs()) {
    auto c = make(cfg);
    float x = 42.f;
    auto w1 = c->iall_reduce(nullptr, 0, DType::F32, ReduceOp::Sum);
    auto w2 = c->ireduce_scatter(nullptr, nullptr, 0, DType::F64, ReduceOp::Avg);
    auto w3 = c->iall_gather(nullptr, nullptr, 0, DType::I32);
    auto w4 = c->ibroadcast(&x, 0, DType::F32, c->size() - 1);
    for (auto* w : {&w1, &w2, &w3, &w4}) {
      EXPECT_TRUE((*w)->completed());
      EXPECT_TRUE((*w)->test());
      EXPECT_EQ((*w)->error(), nullptr);
      (*w)->wait();
    }
    c->all_reduce(&x, 0, DType::F32, ReduceOp::Max);
    EXPECT_EQ(x, 42.f);
  }
}

// Above the default threshold and spanning many 1 MiB segments; counts not divisible by p.
TEST(Communicator, LargeMessagesDefaultOptions) {
  auto c = make_world_communicator("mpi");
  const int p = c->size(), r = c->rank();
  const size_t n = (3u << 20) / 4 * 4 + 3;  // ~12 MiB of f32
  std::vector<float> a(n), avg(n);
  for (size_t i = 0; i < n; ++i) a[i] = avg[i] = static_cast<float>(w(r, i, p));
  std::vector<int64_t> m(n / 3);
  for (size_t i = 0; i < m.size(); ++i) m[i] = val<int64_t>(w(r, i, p));
  const size_t rc = 300001;
  std::vector<double> rs_send(rc * p), rs_recv(rc);
  for (size_t j = 0; j < rs_send.size(); ++j) rs_send[j] = val<double>(w(r, j, p));
  std::vector<float> ag(rc * p);
  for (size_t i = 0; i < rc; ++i) ag[r * rc + i] = static_cast<float>(g(r, i));

  auto w1 = c->iall_reduce(a.data(), n, DType::F32, ReduceOp::Sum);
  auto w2 = c->iall_reduce(avg.data(), n, DType::F32, ReduceOp::Avg);
  auto w3 = c->iall_reduce(m.data(), m.size(), DType::I64, ReduceOp::Max);
  auto w4 = c->ireduce_scatter(rs_send.data(), rs_recv.data(), rc, DType::F64, ReduceOp::Sum);
  auto w5 = c->iall_gather(ag.data() + r * rc, ag.data(), rc, DType::F32);
  std::vector<std::shared_ptr<Work>> ws{w1, w2, w3, w4, w5};
  wait_all(ws, r);

  std::string msg;
  EXPECT_EQ(mismatches(a.data(), n, [&](size_t i) { return expected<float>(ReduceOp::Sum, i, p); }, &msg), 0u) << msg;
  EXPECT_EQ(mismatches(avg.data(), n, [&](size_t i) { return expected<float>(ReduceOp::Avg, i, p); }, &msg), 0u) << msg;
  EXPECT_EQ(mismatches(m.data(), m.size(), [&](size_t i) { return expected<int64_t>(ReduceOp::Max, i, p); }, &msg), 0u)
      << msg;
  EXPECT_EQ(mismatches(rs_recv.data(), rc, [&](size_t i) { return expected<double>(ReduceOp::Sum, r * rc + i, p); }, &msg),
            0u)
      << msg;
  EXPECT_EQ(mismatches(ag.data(), ag.size(), [&](size_t j) { return static_cast<float>(g(static_cast<int>(j / rc), j % rc)); },
                       &msg),
            0u)
      << msg;
}

// Each element is reduced once and distributed, so results are bitwise identical on all
// ranks even for values whose sum depends on the order.
TEST(Communicator, AllReduceBitwiseIdenticalAcrossRanks) {
  for (const auto& cfg : configs()) {
    auto c = make(cfg);
    const int r = c->rank();
    for (size_t n : {size_t(5), size_t(1000), size_t(300000)}) {
      std::vector<float> x(n);
      for (size_t i = 0; i < n; ++i) x[i] = std::sin(0.37f * static_cast<float>(i) + 1.3f * r) * 1e-3f + 1.0f / (r + 3);
      c->all_reduce(x.data(), n, DType::F32, ReduceOp::Sum);
      uint64_t h = fnv(x.data(), n * sizeof(float)), lo = h, hi = h;
      MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
      MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
      EXPECT_EQ(lo, hi) << cfg.name << " n=" << n;
    }
  }
}

TEST(Communicator, BroadcastFromEveryRoot) {
  for (const auto& cfg : configs()) {
    auto c = make(cfg);
    const int p = c->size(), r = c->rank();
    for (int root = p - 1; root >= 0; --root) {  // non-zero roots first
      std::vector<std::vector<double>> d;
      std::vector<std::vector<int32_t>> i32;
      std::vector<std::vector<uint16_t>> bf;
      std::vector<std::shared_ptr<Work>> ws;
      for (size_t n : case_sizes()) {
        d.emplace_back(n, -1.0);
        i32.emplace_back(n, -1);
        bf.emplace_back(n, 0xFFFF);
        if (r == root)
          for (size_t i = 0; i < n; ++i) {
            d.back()[i] = val<double>(g(root, i));
            i32.back()[i] = static_cast<int32_t>(g(root, i));
            bf.back()[i] = static_cast<uint16_t>(0x3F80 + (i + root) % 128);  // bf16 bit patterns
          }
      }
      for (size_t k = 0; k < case_sizes().size(); ++k) {
        c->broadcast(d[k].data(), case_sizes()[k], DType::F64, root);
        ws.push_back(c->ibroadcast(i32[k].data(), case_sizes()[k], DType::I32, root));
        ws.push_back(c->ibroadcast(bf[k].data(), case_sizes()[k], DType::BF16, root));
      }
      wait_all(ws, r);
      for (size_t k = 0; k < case_sizes().size(); ++k) {
        std::string msg;
        EXPECT_EQ(mismatches(d[k].data(), case_sizes()[k], [&](size_t i) { return val<double>(g(root, i)); }, &msg), 0u)
            << cfg.name << " root " << root << " " << msg;
        EXPECT_EQ(mismatches(i32[k].data(), case_sizes()[k], [&](size_t i) { return static_cast<int32_t>(g(root, i)); }, &msg),
                  0u)
            << cfg.name << " root " << root << " " << msg;
        EXPECT_EQ(mismatches(bf[k].data(), case_sizes()[k],
                             [&](size_t i) { return static_cast<uint16_t>(0x3F80 + (i + root) % 128); }, &msg),
                  0u)
            << cfg.name << " root " << root << " " << msg;
      }
    }
  }
}

TEST(Communicator, Bf16AllGatherMovesBits) {
  for (const auto& cfg : configs()) {
    auto c = make(cfg);
    const int p = c->size(), r = c->rank();
    const size_t n = 3001;
    std::vector<uint16_t> s(n), out(n * p);
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<uint16_t>(r * 1000 + i % 1000);
    c->all_gather(s.data(), out.data(), n, DType::BF16);
    std::string msg;
    EXPECT_EQ(mismatches(out.data(), out.size(), [&](size_t j) { return static_cast<uint16_t>((j / n) * 1000 + (j % n) % 1000); },
                         &msg),
              0u)
        << cfg.name << " " << msg;
  }
}

TEST(Communicator, WorkTestPolling) {
  for (const auto& cfg : configs()) {
    auto c = make(cfg);
    const int p = c->size(), r = c->rank();
    const size_t n = 200003;
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(w(r, i, p));
    auto work = c->iall_reduce(x.data(), n, DType::F32, ReduceOp::Sum);
    long polls = 0;
    while (!work->test()) ++polls;
    EXPECT_TRUE(work->completed());
    EXPECT_EQ(work->error(), nullptr);
    work->wait();  // returns at once
    EXPECT_TRUE(work->test());
    std::string msg;
    EXPECT_EQ(mismatches(x.data(), n, [&](size_t i) { return expected<float>(ReduceOp::Sum, i, p); }, &msg), 0u)
        << cfg.name << " after " << polls << " polls " << msg;
    EXPECT_EQ(c->outstanding(), 0u);
  }
}

// Many outstanding ring operations; even ranks wait first-to-last, odd ranks last-to-first
// and interleave a blocking collective: the shared progress engine keeps it deadlock-free.
TEST(Communicator, WaitsInDifferentOrderOnDifferentRanks) {
  MpiCommOptions o;
  o.ring_min_bytes = 0;
  o.segment_bytes = 4096;
  MpiCommunicator c(MPI_COMM_WORLD, "ring", o);
  const int p = c.size(), r = c.rank();
  std::vector<std::vector<float>> bufs;
  std::vector<std::shared_ptr<Work>> ws;
  for (int k = 0; k < 12; ++k) {
    bufs.emplace_back(50000 + 1000 * k);
    for (size_t i = 0; i < bufs.back().size(); ++i) bufs.back()[i] = static_cast<float>(w(r, i + k, p));
  }
  for (auto& b : bufs) ws.push_back(c.iall_reduce(b.data(), b.size(), DType::F32, ReduceOp::Sum));
  double one = 1.0;
  if (r % 2 == 1) {
    c.all_reduce(&one, 1, DType::F64, ReduceOp::Sum);  // blocking, while 12 are in flight
    wait_all(ws, r);
  } else {
    wait_all(ws, r);
    c.all_reduce(&one, 1, DType::F64, ReduceOp::Sum);
  }
  EXPECT_EQ(one, static_cast<double>(p));
  for (size_t k = 0; k < bufs.size(); ++k) {
    std::string msg;
    EXPECT_EQ(mismatches(bufs[k].data(), bufs[k].size(), [&](size_t i) { return expected<float>(ReduceOp::Sum, i + k, p); },
                         &msg),
              0u)
        << "buffer " << k << " " << msg;
  }
}

TEST(Communicator, ScratchIsReusedNotRegrown) {
  MpiCommOptions o;
  o.ring_min_bytes = 0;
  MpiCommunicator c(MPI_COMM_WORLD, "ring", o);
  if (c.size() == 1) GTEST_SKIP() << "one rank: nothing to reduce, no scratch";  // same on every rank
  std::vector<float> x(1 << 20, 1.0f);
  c.all_reduce(x.data(), x.size(), DType::F32, ReduceOp::Sum);
  const size_t after_first = c.scratch_bytes();
  for (int i = 0; i < 3; ++i) c.all_reduce(x.data(), x.size(), DType::F32, ReduceOp::Sum);
  c.all_reduce(x.data(), 1000, DType::F32, ReduceOp::Sum);  // smaller: same buffer
  EXPECT_GT(after_first, 0u);
  EXPECT_EQ(c.scratch_bytes(), after_first);
}

TEST(Communicator, SplitEvenOdd) {
  for (const auto& cfg : configs()) {
    auto c = make(cfg);
    const int p = c->size(), r = c->rank();
    auto sub = c->split(r % 2, r);
    auto rev = c->split(r % 2, -r);  // reversed order within each group
    ASSERT_TRUE(sub && rev);
    const int members = (p + 1 - r % 2) / 2;
    EXPECT_EQ(sub->size(), members);
    EXPECT_EQ(sub->rank(), r / 2);
    EXPECT_EQ(rev->rank(), members - 1 - r / 2);
    EXPECT_NE(sub->name().find("split(color="), std::string::npos) << sub->name();
    // sum of world ranks of the group, large enough for the ring with default options
    std::vector<int64_t> x(10007, r), y(10007, r);
    auto w1 = sub->iall_reduce(x.data(), x.size(), DType::I64, ReduceOp::Sum);
    auto w2 = rev->iall_reduce(y.data(), y.size(), DType::I64, ReduceOp::Max);
    std::vector<std::shared_ptr<Work>> ws{w1, w2};
    wait_all(ws, r);
    int64_t sum = 0, mx = 0;
    for (int q = r % 2; q < p; q += 2) sum += q, mx = q;
    std::string msg;
    EXPECT_EQ(mismatches(x.data(), x.size(), [&](size_t) { return sum; }, &msg), 0u) << cfg.name << msg;
    EXPECT_EQ(mismatches(y.data(), y.size(), [&](size_t) { return mx; }, &msg), 0u) << cfg.name << msg;
    // gather the world ranks in the reversed group's order
    std::vector<int32_t> me{r}, all(members);
    rev->all_gather(me.data(), all.data(), 1, DType::I32);
    for (int k = 0; k < members; ++k) EXPECT_EQ(all[k], (members - 1 - k) * 2 + r % 2);
    // a rank with a negative color gets no communicator
    auto none = c->split(r == 0 ? -1 : 1, r);
    EXPECT_EQ(none == nullptr, r == 0);
    if (none) {
      EXPECT_EQ(none->size(), p - 1);
    }
  }
}

TEST(Communicator, MeshGroups) {
  auto world = make_world_communicator("mpi");
  const int p = world->size(), r = world->rank();
  for (int tp = 1; tp <= p; ++tp) {
    if (p % tp) continue;
    const Mesh mesh(p, p / tp, tp);
    MeshComms mc = make_mesh_comms(*world, mesh);
    ASSERT_TRUE(mc.dp && mc.tp);
    EXPECT_EQ(mc.world, world.get());
    EXPECT_EQ(mc.dp->size(), mesh.dp());
    EXPECT_EQ(mc.tp->size(), mesh.tp());
    EXPECT_EQ(mc.dp->rank(), mesh.coords(r).dp);
    EXPECT_EQ(mc.tp->rank(), mesh.coords(r).tp);
    EXPECT_EQ(mc.dp->name(), "dp");
    EXPECT_EQ(mc.tp->name(), "tp");
    // Outstanding ops on both groups at once (they share a progress engine), big enough
    // for the ring; waited in rank-dependent order.
    std::vector<double> a(30011, static_cast<double>(r)), b(30011, static_cast<double>(r));
    auto wt = mc.tp->iall_reduce(a.data(), a.size(), DType::F64, ReduceOp::Sum);
    auto wd = mc.dp->iall_reduce(b.data(), b.size(), DType::F64, ReduceOp::Avg);
    std::vector<std::shared_ptr<Work>> ws{wt, wd};
    wait_all(ws, r);
    double tsum = 0, dsum = 0;
    for (int q : mesh.tp_group(r)) tsum += q;
    for (int q : mesh.dp_group(r)) dsum += q;
    const double davg = dsum / mesh.dp();
    std::string msg;
    EXPECT_EQ(mismatches(a.data(), a.size(), [&](size_t) { return tsum; }, &msg), 0u) << "tp " << tp << msg;
    EXPECT_EQ(mismatches(b.data(), b.size(), [&](size_t) { return davg; }, &msg), 0u) << "tp " << tp << msg;
    // The tp group's members, gathered, are the mesh's tp_group.
    std::vector<int32_t> me{r}, members(mesh.tp());
    mc.tp->all_gather(me.data(), members.data(), 1, DType::I32);
    EXPECT_EQ(std::vector<int>(members.begin(), members.end()), mesh.tp_group(r));
  }
}

// The base class numbers the ops of each communicator across op kinds (collectives and
// barriers; zero counts too), every Work knows its op, number and bytes, stats() adds them up,
// an op whose issue throws gets no number, and a split numbers its own ops from 0.
TEST(Communicator, SequenceNumbersAndStats) {
  for (const auto& cfg : configs()) {
    auto c = make(cfg);
    const int p = c->size(), r = c->rank();
    EXPECT_EQ(c->stats().ops, 0u);
    EXPECT_EQ(c->stats().bytes, 0.0);
    EXPECT_EQ(c->stats().blocked_s, 0.0);
    std::vector<float> a(1000, 1.f);
    std::vector<double> rs(3 * p, 1.0), rs_out(3);
    std::vector<int32_t> ag(5 * p, r);
    std::vector<int64_t> bc(7, r);
    std::vector<std::shared_ptr<Work>> ws;
    ws.push_back(c->iall_reduce(a.data(), a.size(), DType::F32, ReduceOp::Sum));
    ws.push_back(c->ireduce_scatter(rs.data(), rs_out.data(), 3, DType::F64, ReduceOp::Sum));
    ws.push_back(c->iall_gather(ag.data() + r * 5, ag.data(), 5, DType::I32));
    ws.push_back(c->ibroadcast(bc.data(), bc.size(), DType::I64, p - 1));
    ws.push_back(c->iall_reduce(nullptr, 0, DType::F32, ReduceOp::Max));
    wait_all(ws, r);
    const char* names[] = {"all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_reduce"};
    const size_t bytes[] = {4000, 24u * p, 20u * p, 56, 0};
    for (size_t k = 0; k < ws.size(); ++k) {
      EXPECT_EQ(ws[k]->seq(), k) << cfg.name;
      EXPECT_EQ(std::string(ws[k]->op()), names[k]) << cfg.name << " #" << k;
      EXPECT_EQ(ws[k]->bytes(), bytes[k]) << cfg.name << " #" << k;
    }
    c->all_reduce(a.data(), 10, DType::F32, ReduceOp::Sum);  // #5, 40 bytes
    c->barrier();                                            // #6, 0 bytes
    auto last = c->ibroadcast(bc.data(), 1, DType::I64, 0);  // #7, 8 bytes
    last->wait();
    EXPECT_EQ(last->seq(), 7u) << cfg.name;
    EXPECT_EQ(c->stats().ops, 8u) << cfg.name;
    EXPECT_EQ(c->stats().bytes, 4000.0 + 24 * p + 20 * p + 56 + 0 + 40 + 0 + 8) << cfg.name;
    EXPECT_GE(c->stats().blocked_s, 0.0);
    EXPECT_EQ(rs_out[2], static_cast<double>(p));  // the ops did run
    EXPECT_THROW(c->ibroadcast(bc.data(), 1, DType::I64, p), Error);  // bad root on every rank
    EXPECT_EQ(c->stats().ops, 8u) << cfg.name;
    EXPECT_EQ(c->iall_reduce(a.data(), 1, DType::F32, ReduceOp::Sum)->seq(), 8u) << cfg.name;
    auto sub = c->split(r % 2, r);
    ASSERT_NE(sub, nullptr);
    EXPECT_EQ(sub->stats().ops, 0u);
    auto sw = sub->iall_reduce(a.data(), 2, DType::F32, ReduceOp::Sum);
    sw->wait();
    EXPECT_EQ(sw->seq(), 0u);
    EXPECT_EQ(sub->stats().ops, 1u);
    EXPECT_EQ(sub->stats().bytes, 8.0);
  }
}

// A TimeoutCommunicator's Works carry the base class's numbers (its own, which match the
// inner communicator's: it forwards every op, its barrier as a 1-element all-reduce).
TEST(Communicator, TimeoutCommunicatorNumbersLikeItsInner) {
  TimeoutCommunicator c(make_world_communicator("mpi"), 60);
  std::vector<float> a(100, 1.f);
  auto w0 = c.iall_reduce(a.data(), a.size(), DType::F32, ReduceOp::Sum);
  c.barrier();
  std::vector<float> b(3, 2.f);
  auto w2 = c.ibroadcast(b.data(), b.size(), DType::F32, 0);
  w2->wait();
  w0->wait();
  EXPECT_EQ(w0->seq(), 0u);
  EXPECT_EQ(std::string(w0->op()), "all_reduce");
  EXPECT_EQ(w0->bytes(), 400u);
  EXPECT_EQ(w2->seq(), 2u);
  EXPECT_EQ(std::string(w2->op()), "broadcast");
  EXPECT_EQ(c.stats().ops, 3u);
  EXPECT_EQ(c.stats().bytes, 412.0);
  EXPECT_EQ(c.inner().stats().ops, 3u);
  EXPECT_EQ(c.inner().stats().bytes, 416.0);  // the barrier's 4-byte all-reduce
  EXPECT_EQ(a[99], static_cast<float>(c.size()));
}

// The host time blocked in waits is a real measurement: rank 0 waits for peers that join
// ~50 ms late (they start sleeping only once rank 0 has issued the op, told by a message), in
// wait(), wait_stream() (the same on a host backend) and barrier(); the peers' own waits
// are not asserted (they only time this code).
TEST(Communicator, BlockedTimeGrowsWhileWaitingForALatePeer) {
  MpiCommunicator c(MPI_COMM_WORLD, "world", {});
  const int p = c.size(), r = c.rank();
  if (p < 2) return;  // the mpi tests run with 2 and 4 ranks
  const char* how[] = {"wait", "wait_stream", "barrier"};
  for (int k = 0; k < 3; ++k) {
    const double before = c.stats().blocked_s;
    float x = 1.f;
    int go = 1;
    if (r == 0) {
      std::shared_ptr<Work> w;
      if (k < 2) w = c.iall_reduce(&x, 1, DType::F32, ReduceOp::Sum);
      for (int q = 1; q < p; ++q) MPI_Send(&go, 1, MPI_INT, q, 77, MPI_COMM_WORLD);
      if (k == 0) w->wait();
      else if (k == 1) w->wait_stream();
      else c.barrier();
      EXPECT_GE(c.stats().blocked_s - before, 0.03) << how[k];
      EXPECT_LT(c.stats().blocked_s - before, 30.0) << how[k];
    } else {
      MPI_Recv(&go, 1, MPI_INT, 0, 77, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (k < 2) c.all_reduce(&x, 1, DType::F32, ReduceOp::Sum);
      else c.barrier();
    }
    if (k < 2) {
      EXPECT_EQ(x, static_cast<float>(p)) << how[k];
    }
  }
}

// On a host backend wait_stream() is wait(): the op is complete when it returns and its
// result is there for the host to read.
TEST(Communicator, WaitStreamCompletesOnTheMpiBackend) {
  for (const auto& cfg : configs()) {
    auto c = make(cfg);
    const int p = c->size(), r = c->rank();
    const size_t n = 20003;
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(w(r, i, p));
    std::vector<int32_t> mine(3, r), all(3 * p, -1);
    auto w1 = c->iall_reduce(x.data(), n, DType::F32, ReduceOp::Sum);
    auto w2 = c->iall_gather(mine.data(), all.data(), 3, DType::I32);
    if (r % 2) w2->wait_stream();
    w1->wait_stream();
    EXPECT_TRUE(w1->completed()) << cfg.name;
    EXPECT_EQ(w1->error(), nullptr) << cfg.name;
    std::string msg;
    EXPECT_EQ(mismatches(x.data(), n, [&](size_t i) { return expected<float>(ReduceOp::Sum, i, p); }, &msg), 0u)
        << cfg.name << " " << msg;
    w2->wait_stream();
    EXPECT_TRUE(w2->completed()) << cfg.name;
    for (int q = 0; q < p; ++q) EXPECT_EQ(all[q * 3 + 2], q) << cfg.name;
    w1->wait_stream();  // again: returns at once
    EXPECT_EQ(c->outstanding(), 0u);
  }
}

TEST(Communicator, ArgumentErrors) {
  auto c = make_world_communicator("mpi");
  const int p = c->size(), r = c->rank();
  float f[8] = {};
  int32_t i[8] = {};
  uint16_t h[8] = {};
  try {
    c->broadcast(f, 8, DType::F32, p);  // root out of range, on every rank
    ADD_FAILURE() << "no error for root " << p;
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("broadcast root"), std::string::npos) << m;
    EXPECT_NE(m.find("out of range"), std::string::npos) << m;
    EXPECT_NE(m.find("(rank " + std::to_string(r) + ")"), std::string::npos) << m;
  }
  EXPECT_THROW(c->ibroadcast(f, 8, DType::F32, -1), Error);
  try {
    c->all_reduce(i, 8, DType::I32, ReduceOp::Avg);
    ADD_FAILURE() << "no error for avg of i32";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("avg needs a floating-point dtype"), std::string::npos) << e.what();
  }
  c->all_reduce(h, 8, DType::BF16, ReduceOp::Sum);  // bf16 reduces (tests/mpi/bf16_reduce_test.cc)
  EXPECT_EQ(h[7], 0);
  if (p > 1) {
    std::vector<float> buf(4 * p);
    // overlapping, but not the in-place layouts
    EXPECT_THROW(c->reduce_scatter(buf.data(), buf.data() + (r == 0 ? 1 : 0), 2, DType::F32, ReduceOp::Sum), Error);
    EXPECT_THROW(c->all_gather(buf.data() + (r == 0 ? 1 : 0), buf.data(), 2, DType::F32), Error);
  }
  // the communicator still works after argument errors
  float one = 1.f;
  c->all_reduce(&one, 1, DType::F32, ReduceOp::Sum);
  EXPECT_EQ(one, static_cast<float>(p));
}

TEST(Communicator, FactoryErrors) {
#if MT_WITH_NCCL
  // The world is MPI whatever parallel.backend says: NCCL carries device tensors only.
  EXPECT_EQ(make_world_communicator("nccl")->backend_name(), "mpi");
#else
  try {
    make_world_communicator("nccl");
    ADD_FAILURE() << "nccl backend in a build without NCCL";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("this build has no NCCL"), std::string::npos) << e.what();
  }
#endif
  try {
    make_world_communicator("gloo");
    ADD_FAILURE() << "unknown backend accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("unknown communicator backend 'gloo'"), std::string::npos) << m;
    EXPECT_NE(m.find("auto, mpi, nccl"), std::string::npos) << m;
  }
}

// A real MPI error code (MPI_ERRORS_RETURN is set on the communicator, so MPI returns it
// instead of aborting) becomes an Error naming the op, the bytes, the rank and MPI's message.
TEST(Communicator, MpiErrorBecomesError) {
  MpiCommunicator c(MPI_COMM_WORLD, "world", {});
  MPI_Errhandler eh;
  MPI_Comm_get_errhandler(c.raw(), &eh);
  EXPECT_EQ(eh, MPI_ERRORS_RETURN);
  MPI_Errhandler_free(&eh);
  int x = 0;
  const int rc = MPI_Bcast(&x, 1, MPI_INT, c.size() + 5, c.raw());  // invalid root on every rank
  ASSERT_NE(rc, MPI_SUCCESS) << "Open MPI's mpi_param_check is expected to reject an invalid root";
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, s, &len);
  try {
    throw_mpi_error(rc, "broadcast (MPI_Ibcast)", 4, " of i32, root 7", c.name(), c.rank(), c.size());
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("broadcast (MPI_Ibcast) failed: 4 bytes of i32, root 7 on communicator 'world'"), std::string::npos)
        << m;
    EXPECT_NE(m.find(std::string(s, len)), std::string::npos) << m;
    EXPECT_NE(m.find("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.size())), std::string::npos) << m;
    EXPECT_EQ(e.context().library.find(std::string(s, len)), 0u) << e.context().library;
  }
  c.barrier();
}

// ---- point-to-point ----

// The shared p2p cases (collective_cases.h) for every dtype, on the MPI backend and through a
// TimeoutCommunicator: a ring, pairwise exchanges of 4M floats (far above vader's eager limit:
// rendezvous) in both directions at once and in order, several messages on one tag, tags,
// zero counts.
TEST(Communicator, PointToPointAllDtypes) {
  HostMem mem;
  MpiCommunicator mpi(MPI_COMM_WORLD, "mpi-p2p", {});
  TimeoutCommunicator timed(make_world_communicator("mpi"), 60);
  for (Communicator* c : {static_cast<Communicator*>(&mpi), static_cast<Communicator*>(&timed)}) {
    const std::string tag = c == &mpi ? "mpi" : "timeout";
    p2p_cases<float>(*c, mem, tag, size_t(4) << 20);
    p2p_cases<double>(*c, mem, tag);
    p2p_cases<int32_t>(*c, mem, tag);
    p2p_cases<int64_t>(*c, mem, tag, 1000);
    p2p_cases<Bf16>(*c, mem, tag);
    p2p_tags_case<float>(*c, mem, tag);
    p2p_tags_case<Bf16>(*c, mem, tag);
    p2p_zero_case(*c, tag);
  }
  EXPECT_EQ(mpi.outstanding(), 0u);
}

// User messages live apart from the framework's collectives, which use point-to-point tags
// 0, 1, ... underneath: a send on tag 0 posted before an all-reduce (recursive doubling, tag 0
// too, same size) and received after it does not get mixed up with it.
TEST(Communicator, PointToPointDoesNotMatchCollectiveTraffic) {
  MpiCommunicator c(MPI_COMM_WORLD, "world", {});
  const int p = c.size(), r = c.rank(), partner = r ^ 1;
  const size_t n = 100;
  std::vector<float> msg(n), got(n, -1.f), a(n);
  for (size_t i = 0; i < n; ++i) msg[i] = 1000.f * r + static_cast<float>(i), a[i] = static_cast<float>(r + 1);
  std::shared_ptr<Work> s;
  if (partner < p) s = c.isend(msg.data(), n, DType::F32, partner, 0);
  c.all_reduce(a.data(), n, DType::F32, ReduceOp::Sum);
  if (partner < p) {
    c.recv(got.data(), n, DType::F32, partner, 0);
    s->wait();
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], 1000.f * partner + static_cast<float>(i)) << i;
  }
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(a[i], static_cast<float>(p * (p + 1) / 2)) << i;
}

// p2p Works carry op "send"/"recv", a local p2p number, the peer and the tag; the statistics
// count their bytes and ops apart from the collectives' numbering.
TEST(Communicator, PointToPointNumberingAndStats) {
  MpiCommunicator c(MPI_COMM_WORLD, "world", {});
  const int p = c.size(), r = c.rank();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  const int next = (r + 1) % p, prev = (r + p - 1) % p;
  std::vector<float> s(10, static_cast<float>(r)), g(10, -1.f);
  auto ws = c.isend(s.data(), 10, DType::F32, next, 4);
  auto wr = c.irecv(g.data(), 10, DType::F32, prev, 4);
  EXPECT_STREQ(ws->op(), "send");
  EXPECT_STREQ(wr->op(), "recv");
  EXPECT_EQ(ws->seq(), 0u);
  EXPECT_EQ(wr->seq(), 1u);
  EXPECT_EQ(ws->peer(), next);
  EXPECT_EQ(wr->peer(), prev);
  EXPECT_EQ(ws->tag(), 4);
  EXPECT_EQ(wr->bytes(), 40u);
  wr->wait();
  ws->wait();
  EXPECT_EQ(g[9], static_cast<float>(prev));
  EXPECT_EQ(c.stats().p2p_ops, 2u);
  EXPECT_EQ(c.stats().p2p_bytes, 80.0);
  EXPECT_EQ(c.stats().ops, 0u);  // no collective number taken
  EXPECT_EQ(c.stats().bytes, 80.0);
  float x = 1.f;
  auto w = c.iall_reduce(&x, 1, DType::F32, ReduceOp::Sum);
  EXPECT_EQ(w->seq(), 0u);
  EXPECT_EQ(w->peer(), -1);
  w->wait();
  EXPECT_EQ(c.stats().ops, 1u);
}

TEST(Communicator, PointToPointArgumentErrors) {
  MpiCommunicator c(MPI_COMM_WORLD, "pp", {});
  const int p = c.size(), r = c.rank();
  float x[4] = {};
  auto expect_error = [&](auto&& f, const std::string& want) {
    try {
      f();
      ADD_FAILURE() << "no error, wanted: " << want;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  expect_error([&] { c.isend(x, 4, DType::F32, r, 0); }, "send to rank " + std::to_string(r) +
                                                             " on communicator 'pp' (rank " + std::to_string(r) +
                                                             " of " + std::to_string(p) + "): a rank cannot send");
  expect_error([&] { c.irecv(x, 4, DType::F32, p, 0); }, "recv from rank " + std::to_string(p) +
                                                             " on communicator 'pp'");
  expect_error([&] { c.irecv(x, 4, DType::F32, -1, 0); }, "not a rank of this communicator");
  expect_error([&] { c.isend(x, 4, DType::F32, (r + 1) % p == r ? -1 : (r + 1) % p, -1); },
               p > 1 ? "tag -1 is outside 0..32767" : "not a rank");
  if (p > 1) {
    expect_error([&] { c.isend(x, 4, DType::F32, (r + 1) % p, 40000); }, "tag 40000 is outside 0..32767");
    expect_error([&] { c.irecv(nullptr, 4, DType::F32, (r + 1) % p); }, "got a null buffer");
  }
  EXPECT_EQ(c.stats().p2p_ops, 0u);
  EXPECT_EQ(c.outstanding(), 0u);
}

// The receiver's count must equal the sender's: a shorter message is this backend's error, a
// longer one MPI's (truncation), both naming the op, the peer and the communicator.
TEST(Communicator, PointToPointSizeMismatchIsAnError) {
  MpiCommunicator c(MPI_COMM_WORLD, "world", {});
  const int p = c.size(), r = c.rank(), partner = r ^ 1;
  if (partner >= p) GTEST_SKIP() << "no partner";
  std::vector<float> a(20, 1.f);
  if (r % 2 == 0) {
    c.send(a.data(), 10, DType::F32, partner, 1);
    c.send(a.data(), 20, DType::F32, partner, 2);
  } else {
    try {
      c.recv(a.data(), 20, DType::F32, partner, 1);
      ADD_FAILURE() << "a 40-byte message into an 80-byte recv should fail";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("recv from rank " + std::to_string(partner) + " (tag 1) on communicator 'world'"),
                std::string::npos)
          << m;
      EXPECT_NE(m.find("expected 80 bytes of f32"), std::string::npos) << m;
      EXPECT_NE(m.find("the message has 40 bytes"), std::string::npos) << m;
    }
    try {
      c.recv(a.data(), 10, DType::F32, partner, 2);
      ADD_FAILURE() << "an 80-byte message into a 40-byte recv should fail";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("recv (MPI_Test) failed: 40 bytes of f32, from rank " + std::to_string(partner) + ", tag 2"),
                std::string::npos)
          << m;
    }
  }
  EXPECT_EQ(c.outstanding(), 0u);
  c.barrier();
}

// A TimeoutCommunicator's deadline covers p2p waits, and the error names the op, the peer and
// the communicator. Even ranks send 1.5 s late: their partners' recv gives up after 0.3 s;
// then the odd ranks receive 1.5 s late: a 16 MiB send (rendezvous) cannot complete before
// its recv is posted, so the sender gives up. Both ops complete afterwards (test() has no
// deadline), with the right data.
TEST(Communicator, PointToPointTimeoutNamesThePeer) {
  const int p = make_world_communicator("mpi")->size();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  auto inner = make_world_communicator("mpi");
  inner->set_name("pp");
  TimeoutCommunicator c(std::move(inner), 0.3);
  const int r = c.rank(), partner = r ^ 1;
  using Clock = std::chrono::steady_clock;
  const std::string where = "on communicator 'pp' (rank " + std::to_string(r) + " of " + std::to_string(p) + ")";
  {  // late sender
    std::vector<float> x(100, static_cast<float>(r));
    if (r % 2 == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      c.send(x.data(), x.size(), DType::F32, partner, 2);
    } else {
      auto w = c.irecv(x.data(), x.size(), DType::F32, partner, 2);
      const auto t0 = Clock::now();
      try {
        w->wait();
        ADD_FAILURE() << "the recv should have timed out";
      } catch (const Error& e) {
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        EXPECT_GE(s, 0.3);
        EXPECT_LT(s, 1.2);
        const std::string m = e.what();
        EXPECT_NE(m.find("recv from rank " + std::to_string(partner) + " (tag 2, 400 bytes) " + where +
                         " timed out after "),
                  std::string::npos)
            << m;
        EXPECT_NE(m.find(" s: the peer is dead or stuck"), std::string::npos) << m;
      }
      EXPECT_FALSE(w->completed());
      while (!w->test()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      EXPECT_EQ(x[99], static_cast<float>(partner));
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  {  // late receiver of a large message
    std::vector<float> x(size_t(4) << 20, static_cast<float>(r));
    if (r % 2 == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      c.recv(x.data(), x.size(), DType::F32, partner, 3);
      EXPECT_EQ(x.back(), static_cast<float>(partner));
    } else {
      auto w = c.isend(x.data(), x.size(), DType::F32, partner, 3);
      try {
        w->wait();
        ADD_FAILURE() << "the send of 16 MiB should have waited for the late recv and timed out";
      } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("send to rank " + std::to_string(partner) + " (tag 3, 16777216 bytes) " + where +
                         " timed out after"),
                  std::string::npos)
            << m;
        EXPECT_NE(m.find("never posted the matching recv"), std::string::npos) << m;
      }
      while (!w->test()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}
