// What: the MPI backend's communicator: argument checks, the choice per call between the
// framework's own algorithms (mpi_algorithms.cc: recursive doubling, the ring) and the
// library's nonblocking collectives (NativeOp, wrapping their requests), send/recv (P2pOp),
// the progress engine shared by a world communicator and its splits (mpi_engine.h) with its
// scratch pool, MPI error messages and the MT_MPI_* options.
//
// Why own algorithms (measured on the 2-vCPU dev VM, Open MPI 4.1.4, vader with CMA single
// copy, 2 ranks, f32 sum in place, median rounds; algbw GB/s):
//
//      bytes   MPI_Allreduce  MPI_Iallreduce  Ireduce_scatter_block  ring, 1 MiB  rec. doubling,
//             (blocking,tuned)    (libnbc)      + Iallgather (libnbc)   segments   4000 B pieces
//      4 KiB        3.7             0.8               1.1               3.4          5.0
//     16 KiB        2.7             2.0               1.7               2.6          6.9
//     64 KiB        6.1             3.7               3.5               5.6          8.3
//    256 KiB        8.9             4.4               5.0               8.7          9.0
//      1 MiB       11.0             5.5               5.6              10.8           -
//     16 MiB        6.2             3.4               1.4               6.0           -
//     64 MiB        2.5             1.3               1.3               5.0           -
//
// - libnbc, Open MPI 4.1's only nonblocking path here, runs at about half the blocking speed
//   (reduce + bcast below 4 ranks, a temporary per call), and every library path collapses
//   from 32 MiB, where each call's temporary is a fresh mmap (first touch ~0.4 GB/s here).
// - The ring moves the bandwidth-optimal 2(p-1)/p x bytes, pipelines receive + reduce in
//   segment_bytes pieces, keeps its staging in a pool that grows but never shrinks, and
//   matches the blocking MPI_Allreduce from 256 KiB to 16 MiB (fw/raw 0.94-1.08 over three
//   runs of `meshtrain bench allreduce`, median ~1.0) and doubles it from 32 MiB. Segments of
//   256 KiB were 3-10% slower; 1 MiB and 4 MiB were equal within noise.
// - Small messages are latency-bound: vader sends messages up to its 4 KiB eager limit
//   without a rendezvous round trip (~2 us), so recursive doubling in 4000-byte pieces beats
//   both the ring and MPI_Allreduce (1.1-2.7x) up to 128 KiB, and ties at 256 KiB:
//   ring_min_bytes = 256 KiB. reduce_scatter by the ring is ~3x faster than the library's at
//   every size (e.g. 1 MiB: 57 us vs 171 us libnbc, 181 us blocking); all_gather is on par.
// These thresholds were measured with 2 ranks on one node (the machine has 2 cores); with
// more ranks recursive doubling does log2(p) full-size exchanges and the ring should take
// over earlier. Options and MT_MPI_* environment variables (mpi_communicator.h) tune them.
#include "parallel/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "parallel/buffer_pool.h"
#include "parallel/collective_args.h"
#include "parallel/mpi_engine.h"
#include "parallel/mpi_env.h"

namespace mt::parallel {

namespace {

constexpr size_t kScratchAlign = 64;

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
    case DType::I64: return MPI_INT64_T;
    case DType::BF16: return MPI_UINT16_T;  // moved as bits; reduced only by the framework's algorithms
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::Max ? MPI_MAX : MPI_SUM; }

}  // namespace

[[noreturn]] void throw_mpi_error(int code, const std::string& op, size_t bytes, const std::string& detail,
                                  const std::string& comm_name, int comm_rank, int comm_size) {
  throw core::Error(fmt::format("{} failed: {} bytes{} on communicator '{}' (rank {} of {})", op, bytes, detail,
                                comm_name, comm_rank, comm_size))
      .with_library(mpi_error_string(code))
      .with_hint("an MPI failure inside a collective leaves the other ranks waiting; the job must be aborted");
}

MpiCommOptions mpi_comm_options_from_env(MpiCommOptions base) {
  auto read = [](const char* name, size_t& out) {
    if (const char* v = std::getenv(name); v && *v) {
      char* end = nullptr;
      const unsigned long long x = std::strtoull(v, &end, 10);
      MT_CHECK(end && *end == '\0', "environment variable {}='{}' is not a byte count", name, v);
      out = static_cast<size_t>(x);
    }
  };
  read("MT_MPI_RING_MIN_BYTES", base.ring_min_bytes);
  read("MT_MPI_SEGMENT_BYTES", base.segment_bytes);
  read("MT_MPI_SMALL_PIECE_BYTES", base.small_piece_bytes);
  read("MT_MPI_HIER_MIN_BYTES", base.hier_min_bytes);
  read("MT_MPI_NET_SEGMENT_BYTES", base.net_segment_bytes);
  read("MT_MPI_NET_PIECE_BYTES", base.net_piece_bytes);
  read("MT_MPI_HIER_CHUNK_BYTES", base.hier_chunk_bytes);
  if (const char* v = std::getenv("MT_MPI_SMALL_ALGORITHM"); v && *v) {
    const std::string a = v;
    MT_CHECK(a == "framework" || a == "library", "MT_MPI_SMALL_ALGORITHM='{}': expected framework or library", a);
    base.small_algorithm = a == "framework" ? SmallAlgorithm::Framework : SmallAlgorithm::Library;
  }
  MT_CHECK(base.segment_bytes >= 64 && base.small_piece_bytes >= 64 && base.net_segment_bytes >= 64 &&
               base.net_piece_bytes >= 64,
           "MT_MPI_SEGMENT_BYTES, MT_MPI_SMALL_PIECE_BYTES and their MT_MPI_NET_ forms must be at least 64, got "
           "{}, {}, {}, {}",
           base.segment_bytes, base.small_piece_bytes, base.net_segment_bytes, base.net_piece_bytes);
  return base;
}

namespace detail {

// The engine's scratch: plain 64-byte-aligned host memory (capacities are powers of two
// >= 64 KiB, so multiples of the alignment).
void* alloc_scratch(size_t bytes) {
  void* p = std::aligned_alloc(kScratchAlign, bytes);
  if (!p) MT_FAIL("cannot allocate {} bytes of communication scratch", bytes);
  return p;
}

MpiEngine::MpiEngine() : pool_(alloc_scratch, [](void* p) { std::free(p); }) {}

void MpiEngine::start(const std::shared_ptr<MpiOp>& op) {
  active_.push_back(op);
  progress();
}

void MpiEngine::progress() {
  // Index loop: step() never adds operations, but be robust to it anyway.
  for (size_t i = 0; i < active_.size(); ++i) active_[i]->step();
  active_.erase(std::remove_if(active_.begin(), active_.end(), [](const auto& o) { return o->completed(); }),
                active_.end());
}

void MpiEngine::wait_for(const MpiOp& op) {
  while (!op.completed()) progress();
}

size_t MpiEngine::outstanding(MPI_Comm c) const {
  return static_cast<size_t>(
      std::count_if(active_.begin(), active_.end(), [c](const auto& o) { return o->comm() == c; }));
}

// A library collective (or a few: chunked broadcast): requests + what to do when all are done.
class NativeOp final : public MpiOp {
 public:
  using MpiOp::MpiOp;
  std::vector<MPI_Request> reqs;
  std::function<void()> on_done;  // Avg division, copy out of scratch
  BufferPool::Lease scratch;

  // After `rc = MPI_Ixxx(..., &q)` returned (not as one expression: argument evaluation order
  // is unspecified). Throws at issue time, so bad arguments surface in the caller.
  void issue(int rc, const char* call, MPI_Request q) {
    check(rc, call);
    reqs.push_back(q);
  }

 protected:
  void advance() override {
    if (!test_all(reqs)) return;
    if (on_done) on_done();
    finish();
  }
  void release() override { scratch.reset(); }
};

// A send or a recv: one request per piece of at most kMaxMessageBytes (int counts); a recv
// checks that each piece has the size it expected (MPI itself only catches a longer one).
class P2pOp final : public MpiOp {
 public:
  using MpiOp::MpiOp;
  std::vector<MPI_Request> reqs;
  std::vector<size_t> piece_bytes;  // what each recv piece must hold

  void issue(int rc, const char* call, MPI_Request q, size_t bytes) {
    check(rc, call);
    reqs.push_back(q);
    piece_bytes.push_back(bytes);
  }

 protected:
  void advance() override {
    const bool recv = info_.op[0] == 'r';
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (reqs[i] == MPI_REQUEST_NULL) continue;
      int flag = 0;
      MPI_Status st;
      check(MPI_Test(&reqs[i], &flag, &st), "MPI_Test");
      if (!flag) return;  // pieces of one peer and tag complete in order
      if (recv) {
        int got = 0;
        check(MPI_Get_count(&st, MPI_BYTE, &got), "MPI_Get_count");
        if (static_cast<size_t>(got) != piece_bytes[i])
          throw core::Error(fmt::format("recv from rank {} (tag {}) on communicator '{}' (rank {} of {}): expected {} "
                                        "bytes{}, the message has {} bytes",
                                        info_.peer, info_.tag, info_.comm_name, info_.rank, info_.size,
                                        piece_bytes[i], info_.detail(), got))
              .with_hint("the receiver's count and dtype must equal the sender's");
      }
    }
    finish();
  }
};

}  // namespace detail

using detail::kMaxMessageBytes;
using detail::MpiEngine;
using detail::NativeOp;
using detail::OpInfo;
using detail::P2pOp;
using detail::RingKind;
using detail::divide;

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, MpiCommOptions opt) : opt_(opt) {
  MT_CHECK(MpiEnv::active(), "the MPI communicator '{}' needs MPI initialised (create a parallel::MpiEnv first)",
           name);
  set_name(std::move(name));
  const int rc = MPI_Comm_dup(comm, &comm_);
  if (rc != MPI_SUCCESS) throw_mpi_error(rc, "MPI_Comm_dup", 0, "", this->name(), -1, -1);
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  engine_ = std::make_shared<MpiEngine>();
  dup_p2p();
}

void MpiCommunicator::dup_p2p() {
  // Collective, like the constructors that call it (every rank constructs, or splits, alike).
  const int rc = MPI_Comm_dup(comm_, &p2p_comm_);
  if (rc != MPI_SUCCESS) throw_mpi_error(rc, "MPI_Comm_dup (send/recv communicator)", 0, "", name(), rank_, size_);
  MPI_Comm_set_errhandler(p2p_comm_, MPI_ERRORS_RETURN);
}

MpiCommunicator::MpiCommunicator(Adopt, MPI_Comm owned, std::string name, MpiCommOptions opt,
                                 std::shared_ptr<MpiEngine> engine)
    : comm_(owned), opt_(opt), engine_(std::move(engine)) {
  set_name(std::move(name));
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  dup_p2p();
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ == MPI_COMM_NULL || !MpiEnv::active()) return;
  if (const size_t n = engine_->outstanding(comm_); n > 0) {
    // Freeing the communicator under live requests is erroneous; keep it (a leak at exit).
    core::log::warn("communicator '{}' destroyed with {} operation(s) still in flight; not freeing it", name(), n);
    (void)intra_.release();  // their requests may be in flight too
    (void)inter_.release();
    return;
  }
  if (p2p_comm_ != MPI_COMM_NULL) MPI_Comm_free(&p2p_comm_);
  MPI_Comm_free(&comm_);
}

size_t MpiCommunicator::outstanding() const { return engine_->outstanding(); }
size_t MpiCommunicator::scratch_bytes() const { return engine_->pool().total_bytes(); }

bool MpiCommunicator::large(size_t total_bytes, size_t count) const {
  return total_bytes >= opt_.ring_min_bytes || count > static_cast<size_t>(INT_MAX);
}

uint32_t MpiCommunicator::next_tag() {
  // Point-to-point tags of the ring; MPI guarantees tags up to 32767. Tags are unique among
  // any 32768 consecutive collectives, and MPI's non-overtaking order does the rest.
  return static_cast<uint32_t>(tag_seq_++ % 32768);
}

std::shared_ptr<Work> MpiCommunicator::do_iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  check_reduce_op("all_reduce", dtype, op);
  const size_t bytes = count * dtype_size(dtype);
  const uint32_t tag = next_tag();
  if (count == 0 || size_ == 1) {  // Avg over one rank: x / 1 == x
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  check_buffer(buf, "all_reduce", count, name());
  if (intra_ && bytes >= opt_.hier_min_bytes) return hierarchical_all_reduce(buf, count, dtype, op);
  auto w = flat_all_reduce(buf, count, dtype, op, tag, "all_reduce");
  engine_->start(w);
  return w;
}

std::shared_ptr<detail::MpiOp> MpiCommunicator::flat_all_reduce(void* buf, size_t count, DType dtype, ReduceOp op,
                                                                uint32_t tag, const char* what, bool library) {
  const size_t bytes = count * dtype_size(dtype);
  OpInfo info{what, bytes, dtype, static_cast<int>(op), -1, name(), rank_, size_, comm_};
  if (large(bytes, count))
    return detail::make_ring(engine_, std::move(info), RingKind::AllReduce, dtype, op, nullptr, buf, count, tag,
                             segment());
  // MPI has no bf16 type: bf16 always takes the framework's algorithms.
  if (opt_.small_algorithm == SmallAlgorithm::Framework || dtype == DType::BF16 || !library)
    return detail::make_recursive_doubling(engine_, std::move(info), dtype, op, buf, count, tag, piece());
  auto w = std::make_shared<NativeOp>(engine_, std::move(info));
  MPI_Request q = MPI_REQUEST_NULL;
  const int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, static_cast<int>(count), mpi_type(dtype), mpi_op(op), comm_, &q);
  w->issue(rc, "MPI_Iallreduce", q);
  if (op == ReduceOp::Avg) w->on_done = [buf, count, dtype, p = size_] { divide(dtype, buf, count, p); };
  return w;
}

// reduce-scatter inside the host (the ring's first half on the all-reduce block layout: local
// rank l ends with block l reduced over its host), all-reduce of block l across hosts (with
// the flat choice for its size), all-gather inside the host. Avg runs as Sum, the block
// divided by size() before it is gathered. The tags of all three are drawn now: stages start
// later, in an order that may differ between ranks when several ops are in flight.
std::shared_ptr<Work> MpiCommunicator::hierarchical_all_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  const size_t es = dtype_size(dtype);
  const size_t chunk = opt_.hier_chunk_bytes / es;
  std::shared_ptr<detail::MpiOp> w;
  if (chunk == 0 || count <= chunk) {
    w = hierarchical_piece(buf, count, dtype, op);
  } else {  // each chunk an independent hierarchical all-reduce (tags drawn now, in order)
    std::vector<std::shared_ptr<detail::MpiOp>> pieces;
    for (size_t o = 0; o < count; o += chunk)
      pieces.push_back(hierarchical_piece(static_cast<std::byte*>(buf) + o * es, std::min(chunk, count - o), dtype, op));
    w = detail::make_windowed(
        engine_, OpInfo{"all_reduce", count * es, dtype, static_cast<int>(op), -1, name(), rank_, size_, comm_},
        std::move(pieces), 2);
  }
  engine_->start(w);
  return w;
}

std::shared_ptr<detail::MpiOp> MpiCommunicator::hierarchical_piece(void* buf, size_t count, DType dtype, ReduceOp op) {
  const size_t es = dtype_size(dtype), bytes = count * es;
  const ReduceOp red = op == ReduceOp::Max ? ReduceOp::Max : ReduceOp::Sum;
  const auto [o, n] = detail::ring_block(count, intra_->size_, es, intra_->rank_);
  std::byte* own = static_cast<std::byte*>(buf) + o * es;
  const uint32_t t_rs = intra_->next_tag(), t_x = inter_->next_tag(), t_ag = intra_->next_tag();
  const size_t seg = intra_->large(bytes, count) ? intra_->segment() : intra_->piece();
  MpiCommunicator* intra = intra_.get();
  MpiCommunicator* inter = inter_.get();
  auto intra_info = [=](const char* what) {
    return OpInfo{what, bytes, dtype, static_cast<int>(red), -1, intra->name(), intra->rank_, intra->size_, intra->comm_};
  };
  std::vector<std::function<std::shared_ptr<detail::MpiOp>()>> stages;
  stages.push_back([=] {
    return detail::make_ring(engine_, intra_info("all_reduce (intra-host reduce-scatter)"), RingKind::AllReduceRS,
                             dtype, red, nullptr, buf, count, t_rs, seg);
  });
  stages.push_back([=, n = n]() -> std::shared_ptr<detail::MpiOp> {
    if (n == 0) return nullptr;  // more local ranks than blocks: this one owns nothing
    // (started when the intra-host stage ends, in an order that can differ between ranks when
    // several all-reduces are in flight: tagged framework algorithms only)
    return inter->flat_all_reduce(own, n, dtype, red, t_x, "all_reduce (inter-host)", false);
  });
  stages.push_back([=, n = n] {
    if (op == ReduceOp::Avg) divide(dtype, own, n, size_);
    return detail::make_ring(engine_, intra_info("all_reduce (intra-host all-gather)"), RingKind::AllReduceAG, dtype,
                             red, nullptr, buf, count, t_ag, seg);
  });
  return detail::make_staged(
      engine_, OpInfo{"all_reduce", bytes, dtype, static_cast<int>(op), -1, name(), rank_, size_, comm_},
      std::move(stages));
}

void MpiCommunicator::enable_hierarchy(int host, int local_rank) {
  MT_CHECK(host >= 0 && local_rank >= 0, "enable_hierarchy on '{}': host {} and local rank {} must be >= 0", name(),
           host, local_rank);
  engine_->drain();  // MPI_Comm_split blocks
  auto make = [&](int color, const char* what) {
    next_tag();
    MPI_Comm nc = MPI_COMM_NULL;
    const int rc = MPI_Comm_split(comm_, color, rank_, &nc);
    if (rc != MPI_SUCCESS)
      throw_mpi_error(rc, fmt::format("split into {} groups (MPI_Comm_split)", what), 0,
                      fmt::format(", color {}", color), name(), rank_, size_);
    return std::unique_ptr<MpiCommunicator>(
        new MpiCommunicator(Adopt{}, nc, fmt::format("{}/{}", name(), what), opt_, engine_));
  };
  intra_ = make(host, "intra-host");
  inter_ = make(local_rank, "inter-host");
  spans_hosts_ = true;
  inter_->spans_hosts_ = true;
  MT_CHECK(intra_->rank_ == local_rank, "enable_hierarchy on '{}' (rank {}): local rank {} is not the rank's position "
           "among the ranks of its host ({})", name(), rank_, local_rank, intra_->rank_);
}

std::shared_ptr<Work> MpiCommunicator::do_ireduce_scatter(const void* send, void* recv, size_t recv_count,
                                                          DType dtype, ReduceOp op) {
  check_reduce_op("reduce_scatter", dtype, op);
  const size_t es = dtype_size(dtype);
  const size_t block = recv_count * es, bytes = block * size_;
  const uint32_t tag = next_tag();
  if (recv_count == 0) {
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  const bool in_place = check_reduce_scatter_buffers(send, recv, block, rank_, size_, name());
  if (size_ == 1) {
    if (!in_place) std::memcpy(recv, send, block);
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  OpInfo info{"reduce_scatter", bytes, dtype, static_cast<int>(op), -1, name(), rank_, size_, comm_};
  if (large(bytes, recv_count) || opt_.small_algorithm == SmallAlgorithm::Framework || dtype == DType::BF16) {
    const size_t piece = large(bytes, recv_count) ? segment() : this->piece();
    auto w = detail::make_ring(engine_, std::move(info), RingKind::ReduceScatter, dtype, op, send, recv,
                               recv_count, tag, piece);
    engine_->start(w);
    return w;
  }
  auto w = std::make_shared<NativeOp>(engine_, std::move(info));
  void* out = recv;
  if (in_place) {  // MPI forbids recv inside send; reduce into scratch and copy
    w->scratch = engine_->pool().acquire(block);
    out = w->scratch.data();
  }
  MPI_Request q = MPI_REQUEST_NULL;
  const int rc = MPI_Ireduce_scatter_block(send, out, static_cast<int>(recv_count), mpi_type(dtype), mpi_op(op), comm_, &q);
  w->issue(rc, "MPI_Ireduce_scatter_block", q);
  w->on_done = [=, p = size_] {
    if (out != recv) std::memcpy(recv, out, block);
    if (op == ReduceOp::Avg) divide(dtype, recv, recv_count, p);
  };
  engine_->start(w);
  return w;
}

std::shared_ptr<Work> MpiCommunicator::do_iall_gather(const void* send, void* recv, size_t send_count,
                                                      DType dtype) {
  const size_t es = dtype_size(dtype);
  const size_t block = send_count * es, bytes = block * size_;
  const uint32_t tag = next_tag();
  if (send_count == 0) {
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  const bool in_place = check_all_gather_buffers(send, recv, block, rank_, size_, name());
  std::byte* own = static_cast<std::byte*>(recv) + rank_ * block;
  OpInfo info{"all_gather", bytes, dtype, -1, -1, name(), rank_, size_, comm_};
  if (size_ == 1 || large(bytes, send_count) || opt_.small_algorithm == SmallAlgorithm::Framework) {
    if (!in_place) std::memcpy(own, send, block);
    if (size_ == 1) {
      engine_->progress();
      return std::make_shared<CompletedWork>();
    }
    const size_t piece = large(bytes, send_count) ? segment() : this->piece();
    auto w = detail::make_ring(engine_, std::move(info), RingKind::AllGather, dtype, ReduceOp::Sum, nullptr, recv,
                               send_count, tag, piece);
    engine_->start(w);
    return w;
  }
  auto w = std::make_shared<NativeOp>(engine_, std::move(info));
  const MPI_Datatype t = mpi_type(dtype);
  const int n = static_cast<int>(send_count);
  MPI_Request q = MPI_REQUEST_NULL;
  const int rc = MPI_Iallgather(in_place ? MPI_IN_PLACE : send, n, t, recv, n, t, comm_, &q);
  w->issue(rc, "MPI_Iallgather", q);
  engine_->start(w);
  return w;
}

std::shared_ptr<Work> MpiCommunicator::do_ibroadcast(void* buf, size_t count, DType dtype, int root) {
  const size_t bytes = count * dtype_size(dtype);
  next_tag();
  check_broadcast_root(root, size_, name());
  if (count == 0 || size_ == 1) {
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  check_buffer(buf, "broadcast", count, name());
  auto w = std::make_shared<NativeOp>(engine_, OpInfo{"broadcast", bytes, dtype, -1, root, name(), rank_, size_, comm_});
  auto* p = static_cast<std::byte*>(buf);
  for (size_t o = 0; o < bytes; o += kMaxMessageBytes) {  // int counts: chunk huge messages
    MPI_Request q = MPI_REQUEST_NULL;
    const int rc = MPI_Ibcast(p + o, static_cast<int>(std::min(kMaxMessageBytes, bytes - o)), MPI_BYTE, root, comm_, &q);
    w->issue(rc, "MPI_Ibcast", q);
  }
  engine_->start(w);
  return w;
}

void MpiCommunicator::do_barrier() {
  next_tag();
  auto w = std::make_shared<NativeOp>(engine_, OpInfo{"barrier", 0, DType::F32, -1, -1, name(), rank_, size_, comm_});
  MPI_Request q = MPI_REQUEST_NULL;
  const int rc = MPI_Ibarrier(comm_, &q);
  w->issue(rc, "MPI_Ibarrier", q);
  engine_->start(w);
  w->wait();
}

std::shared_ptr<Work> MpiCommunicator::do_isend(const void* buf, size_t count, DType dtype, int peer, int tag) {
  const size_t bytes = count * dtype_size(dtype);
  OpInfo info{"send", bytes, dtype, -1, -1, name(), rank_, size_, comm_, peer, tag};
  auto w = std::make_shared<P2pOp>(engine_, std::move(info));
  const auto* p = static_cast<const std::byte*>(buf);
  for (size_t o = 0; o < bytes; o += kMaxMessageBytes) {  // int counts: pieces, matched in order
    const size_t n = std::min(kMaxMessageBytes, bytes - o);
    MPI_Request q = MPI_REQUEST_NULL;
    const int rc = MPI_Isend(p + o, static_cast<int>(n), MPI_BYTE, peer, tag, p2p_comm_, &q);
    w->issue(rc, "MPI_Isend", q, n);
  }
  engine_->start(w);
  return w;
}

std::shared_ptr<Work> MpiCommunicator::do_irecv(void* buf, size_t count, DType dtype, int peer, int tag) {
  const size_t bytes = count * dtype_size(dtype);
  OpInfo info{"recv", bytes, dtype, -1, -1, name(), rank_, size_, comm_, peer, tag};
  auto w = std::make_shared<P2pOp>(engine_, std::move(info));
  auto* p = static_cast<std::byte*>(buf);
  for (size_t o = 0; o < bytes; o += kMaxMessageBytes) {
    const size_t n = std::min(kMaxMessageBytes, bytes - o);
    MPI_Request q = MPI_REQUEST_NULL;
    const int rc = MPI_Irecv(p + o, static_cast<int>(n), MPI_BYTE, peer, tag, p2p_comm_, &q);
    w->issue(rc, "MPI_Irecv", q, n);
  }
  engine_->start(w);
  return w;
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  next_tag();
  engine_->drain();  // MPI_Comm_split blocks: finish everything peers may be waiting on first
  MPI_Comm nc = MPI_COMM_NULL;
  const int rc = MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &nc);
  if (rc != MPI_SUCCESS)
    throw_mpi_error(rc, "split (MPI_Comm_split)", 0, fmt::format(", color {}, key {}", color, key), name(), rank_,
                    size_);
  if (nc == MPI_COMM_NULL) return nullptr;
  return std::unique_ptr<Communicator>(new MpiCommunicator(
      Adopt{}, nc, fmt::format("{}/split(color={},key={})", name(), color, key), opt_, engine_));
}

void MpiCommunicator::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (MpiEnv::active()) MPI_Abort(comm_, code);
  std::_Exit(code);
}

}  // namespace mt::parallel
