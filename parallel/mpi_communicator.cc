// What: the MPI backend: a progress engine shared by a world communicator and its splits,
// Work objects wrapping library requests (NativeOp) or the framework's own algorithms over
// MPI_Isend/MPI_Irecv (RdOp: recursive doubling; RingOp: ring reduce-scatter + all-gather),
// a scratch pool, and the reduction kernels.
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
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "parallel/buffer_pool.h"
#include "parallel/mpi_env.h"

namespace mt::parallel {

namespace {

constexpr size_t kMaxMessageBytes = size_t(1) << 30;  // one MPI message (int counts of MPI_BYTE)
constexpr size_t kScratchAlign = 64;

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  std::string s;
  if (MPI_Error_string(code, buf, &len) == MPI_SUCCESS) s.assign(buf, static_cast<size_t>(len));
  else s = "unknown MPI error";
  int cls = 0;
  if (MPI_Error_class(code, &cls) == MPI_SUCCESS) s += fmt::format(" (MPI error code {}, class {})", code, cls);
  return s;
}

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

// ---- reduction kernels: dst[i] = a[i] (op) b[i]; dst may alias a ----
template <class T>
void sum_kernel(T* dst, const T* a, const T* b, size_t n) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;  // wraps like MPI_SUM instead of signed-overflow UB
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(static_cast<U>(a[i]) + static_cast<U>(b[i]));
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = a[i] + b[i];
  }
}
template <class T>
void max_kernel(T* dst, const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = a[i] < b[i] ? b[i] : a[i];
}
// bf16 <-> f32. A bf16 is the upper half of an f32; narrowing rounds to nearest even, NaN
// stays NaN (quiet). Written branch-free so the loops below vectorise.
inline float bf16_to_f32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded);
}
// bf16 reductions accumulate each pair in f32 and round once per pair, as NCCL does: a sum
// over p ranks is rounded p-1 times (the ring) or log2(p) times (recursive doubling). Every
// element is still reduced once, in one order, so all ranks get identical bits.
void reduce_bf16(ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  auto* d = static_cast<uint16_t*>(dst);
  const auto* x = static_cast<const uint16_t*>(a);
  const auto* y = static_cast<const uint16_t*>(b);
  if (op == ReduceOp::Max) {
    for (size_t i = 0; i < n; ++i) {
      const float fx = bf16_to_f32(x[i]), fy = bf16_to_f32(y[i]);
      d[i] = fx < fy ? y[i] : x[i];
    }
  } else {
    for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(bf16_to_f32(x[i]) + bf16_to_f32(y[i]));
  }
}

template <class T>
void reduce_typed(ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  if (op == ReduceOp::Max) max_kernel(static_cast<T*>(dst), static_cast<const T*>(a), static_cast<const T*>(b), n);
  else sum_kernel(static_cast<T*>(dst), static_cast<const T*>(a), static_cast<const T*>(b), n);
}
void reduce(DType t, ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  switch (t) {
    case DType::F32: return reduce_typed<float>(op, dst, a, b, n);
    case DType::F64: return reduce_typed<double>(op, dst, a, b, n);
    case DType::I32: return reduce_typed<int32_t>(op, dst, a, b, n);
    case DType::I64: return reduce_typed<int64_t>(op, dst, a, b, n);
    case DType::BF16: return reduce_bf16(op, dst, a, b, n);
  }
  MT_FAIL("reduction of {} is not implemented on the MPI backend", dtype_name(t));
}
// Avg = Sum / size, element-wise division (not multiplication by 1/size: same rounding as the
// obvious reference, sum / n).
void divide(DType t, void* p, size_t n, int d) {
  if (t == DType::F32) {
    float* x = static_cast<float*>(p);
    const float f = static_cast<float>(d);
    for (size_t i = 0; i < n; ++i) x[i] /= f;
  } else if (t == DType::F64) {
    double* x = static_cast<double*>(p);
    const double f = static_cast<double>(d);
    for (size_t i = 0; i < n; ++i) x[i] /= f;
  } else if (t == DType::BF16) {  // divide in f32, round once
    uint16_t* x = static_cast<uint16_t*>(p);
    const float f = static_cast<float>(d);
    for (size_t i = 0; i < n; ++i) x[i] = f32_to_bf16(bf16_to_f32(x[i]) / f);
  }
}

bool overlaps(const void* a, size_t an, const void* b, size_t bn) {
  const auto* pa = static_cast<const std::byte*>(a);
  const auto* pb = static_cast<const std::byte*>(b);
  return an > 0 && bn > 0 && pa < pb + bn && pb < pa + an;
}

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
  if (const char* v = std::getenv("MT_MPI_SMALL_ALGORITHM"); v && *v) {
    const std::string a = v;
    MT_CHECK(a == "framework" || a == "library", "MT_MPI_SMALL_ALGORITHM='{}': expected framework or library", a);
    base.small_algorithm = a == "framework" ? SmallAlgorithm::Framework : SmallAlgorithm::Library;
  }
  MT_CHECK(base.segment_bytes >= 64 && base.small_piece_bytes >= 64,
           "MT_MPI_SEGMENT_BYTES and MT_MPI_SMALL_PIECE_BYTES must be at least 64, got {} and {}",
           base.segment_bytes, base.small_piece_bytes);
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

class MpiOp;

// Outstanding operations of a world communicator and all communicators split from it.
class MpiEngine {
 public:
  void start(const std::shared_ptr<MpiOp>& op);
  void progress();
  void wait_for(const MpiOp& op);
  void drain() {
    while (!active_.empty()) progress();
  }
  size_t outstanding(MPI_Comm c) const;
  size_t outstanding() const { return active_.size(); }
  BufferPool& pool() { return pool_; }

 private:
  std::vector<std::shared_ptr<MpiOp>> active_;
  // Reused for the life of the engine: fresh pages are slow here (buffer_pool.h).
  BufferPool pool_{alloc_scratch, [](void* p) { std::free(p); }};
};

// What an operation is, for error messages (formatted only when an error happens).
struct OpInfo {
  const char* op = "";  // "all_reduce", ...
  size_t bytes = 0;     // bytes of the whole array involved
  DType dtype = DType::F32;
  int reduce = -1;      // ReduceOp as int, -1 if none
  int root = -1;        // broadcast root, -1 if none
  std::string comm_name;
  int rank = 0, size = 1;
  MPI_Comm comm = MPI_COMM_NULL;

  std::string detail() const {
    if (bytes == 0 && root < 0) return "";
    std::string s = fmt::format(" of {}", dtype_name(dtype));
    if (reduce >= 0) s += fmt::format(", {}", reduce_op_name(static_cast<ReduceOp>(reduce)));
    if (root >= 0) s += fmt::format(", root {}", root);
    return s;
  }
};

class MpiOp : public Work {
 public:
  MpiOp(std::shared_ptr<MpiEngine> engine, OpInfo info) : engine_(std::move(engine)), info_(std::move(info)) {}
  void wait() override {
    engine_->wait_for(*this);
    if (error()) std::rethrow_exception(error());
  }
  bool test() override {
    engine_->progress();
    return completed();
  }
  // Engine side: advance without blocking; an exception completes the op with that error.
  void step() {
    if (completed()) return;
    try {
      advance();
    } catch (...) {
      release();
      mark_completed(std::current_exception());
    }
  }
  MPI_Comm comm() const { return info_.comm; }

 protected:
  virtual void advance() = 0;
  virtual void release() {}
  void finish() {
    release();
    mark_completed();
  }
  void check(int rc, const char* call) const {
    if (rc != MPI_SUCCESS)
      throw_mpi_error(rc, fmt::format("{} ({})", info_.op, call), info_.bytes, info_.detail(), info_.comm_name,
                      info_.rank, info_.size);
  }
  // One MPI_Test; true when the request is done (it is then MPI_REQUEST_NULL).
  bool test_request(MPI_Request& q) const {
    if (q == MPI_REQUEST_NULL) return true;
    int flag = 0;
    check(MPI_Test(&q, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    return flag != 0;
  }
  bool test_all(std::vector<MPI_Request>& qs) const {
    for (auto& q : qs)
      if (!test_request(q)) return false;
    return true;
  }

  std::shared_ptr<MpiEngine> engine_;
  OpInfo info_;
};

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

// Base of the framework's own algorithms over MPI_Isend/MPI_Irecv: posts a step's
// messages (in pieces, for int counts and pipelining) and keeps its requests.
class P2pOp : public MpiOp {
 public:
  P2pOp(std::shared_ptr<MpiEngine> engine, OpInfo info, uint32_t tag)
      : MpiOp(std::move(engine), std::move(info)), tag_(static_cast<int>(tag)) {}

 protected:
  // Receives first (so the peer's rendezvous finds them), then sends; peer < 0: none.
  void post(const std::byte* src, size_t send_bytes, int send_peer, std::byte* dst, size_t recv_bytes,
            int recv_peer, size_t piece) {
    rreq_.clear();
    sreq_.clear();
    rpiece_ = piece;
    next_ = 0;
    if (recv_peer >= 0) {
      for (size_t o = 0; o < recv_bytes; o += piece) {
        MPI_Request q = MPI_REQUEST_NULL;
        check(MPI_Irecv(dst + o, static_cast<int>(std::min(piece, recv_bytes - o)), MPI_BYTE, recv_peer, tag_,
                        info_.comm, &q),
              "MPI_Irecv");
        rreq_.push_back(q);
      }
    }
    if (send_peer >= 0) {
      for (size_t o = 0; o < send_bytes; o += piece) {
        MPI_Request q = MPI_REQUEST_NULL;
        check(MPI_Isend(src + o, static_cast<int>(std::min(piece, send_bytes - o)), MPI_BYTE, send_peer, tag_,
                        info_.comm, &q),
              "MPI_Isend");
        sreq_.push_back(q);
      }
    }
  }

  int tag_;
  std::vector<MPI_Request> rreq_, sreq_;
  size_t rpiece_ = 0, next_ = 0;  // piece size of the receives; next receive piece to consume
};

// Recursive doubling all-reduce for small messages: log2(p) exchanges of the whole buffer,
// plus one before and one after for the ranks beyond the largest power of two p2 (the even
// ones among the first 2(p-p2) hand their data to their odd neighbour and get the result
// back). Latency-optimal; both partners of an exchange combine the same two partial results
// (a+b == b+a bit for bit), so every rank ends with identical bits.
class RdOp final : public P2pOp {
 public:
  RdOp(std::shared_ptr<MpiEngine> engine, OpInfo info, DType dt, ReduceOp op, void* buf, size_t count, uint32_t tag,
       size_t piece_bytes)
      : P2pOp(std::move(engine), std::move(info), tag),
        piece_(std::max<size_t>(64, std::min(piece_bytes, kMaxMessageBytes))),
        dt_(dt),
        op_(op == ReduceOp::Max ? ReduceOp::Max : ReduceOp::Sum),
        avg_(op == ReduceOp::Avg),
        buf_(static_cast<std::byte*>(buf)),
        count_(count),
        bytes_(count * dtype_size(dt)) {
    const int p = info_.size, r = info_.rank;
    int p2 = 1;
    while (p2 * 2 <= p) p2 *= 2;
    const int rem = p - p2;
    int newrank = r - rem;
    if (r < 2 * rem) {
      newrank = r % 2 == 0 ? -1 : r / 2;
      steps_.push_back(r % 2 == 0 ? Step{Kind::Send, r + 1} : Step{Kind::RecvReduce, r - 1});
    }
    if (newrank >= 0) {
      for (int mask = 1; mask < p2; mask <<= 1) {
        const int nd = newrank ^ mask;
        steps_.push_back({Kind::Exchange, nd < rem ? nd * 2 + 1 : nd + rem});
      }
    }
    if (r < 2 * rem) steps_.push_back(r % 2 == 0 ? Step{Kind::RecvCopy, r + 1} : Step{Kind::Send, r - 1});
    if (newrank >= 0) {
      scratch_ = engine_->pool().acquire(bytes_);
      staging_ = scratch_.data();
    }
  }

 protected:
  void advance() override {
    for (;;) {
      if (!in_step_) {
        if (step_ == steps_.size()) {
          if (avg_) divide(dt_, buf_, count_, info_.size);  // every rank divides the same sum
          finish();
          return;
        }
        const Step& st = steps_[step_];
        switch (st.kind) {
          case Kind::Send: post(buf_, bytes_, st.peer, nullptr, 0, -1, piece_); break;
          case Kind::RecvReduce: post(nullptr, 0, -1, staging_, bytes_, st.peer, piece_); break;
          case Kind::Exchange: post(buf_, bytes_, st.peer, staging_, bytes_, st.peer, piece_); break;
          case Kind::RecvCopy: post(nullptr, 0, -1, buf_, bytes_, st.peer, piece_); break;
        }
        in_step_ = true;
      }
      // the send reads buf_: it must be complete before buf_ is overwritten by the reduction
      if (!test_all(rreq_) || !test_all(sreq_)) return;
      const Kind k = steps_[step_].kind;
      if (k == Kind::RecvReduce || k == Kind::Exchange) reduce(dt_, op_, buf_, buf_, staging_, count_);
      in_step_ = false;
      ++step_;
    }
  }
  void release() override { scratch_.reset(); }

 private:
  enum class Kind { Send, RecvReduce, Exchange, RecvCopy };
  struct Step {
    Kind kind;
    int peer;
  };
  size_t piece_;
  DType dt_;
  ReduceOp op_;
  bool avg_;
  std::byte* buf_;
  size_t count_, bytes_;
  std::vector<Step> steps_;
  size_t step_ = 0;
  bool in_step_ = false;
  BufferPool::Lease scratch_;
  std::byte* staging_ = nullptr;
};

// The framework's ring: reduce-scatter (p-1 steps) then all-gather (p-1 steps) over
// MPI_Isend/MPI_Irecv, as a state machine advanced by the engine. Block b of the array is
// [off(b), off(b) + len(b)); rank r ends the reduce-scatter owning block r:
//   reduce-scatter step s: send block (r-s-1), receive block (r-s-2) into staging and reduce
//   it into its accumulator, segment by segment as segments arrive;
//   all-gather step s: send block (r-s), receive block (r-s-1) in place.
// Each block is reduced on exactly one rank in one order, so all ranks get identical bits.
class RingOp final : public P2pOp {
 public:
  enum class Kind { AllReduce, ReduceScatter, AllGather };

  // AllReduce: data = buf (count elements). ReduceScatter: send = p*count elements, data =
  // recv (count). AllGather: data = recv (p*count) with block r already in place.
  RingOp(std::shared_ptr<MpiEngine> engine, OpInfo info, Kind kind, DType dt, ReduceOp op, const void* send,
         void* data, size_t count, uint32_t tag, size_t segment_bytes)
      : P2pOp(std::move(engine), std::move(info), tag),
        kind_(kind),
        dt_(dt),
        op_(op == ReduceOp::Max ? ReduceOp::Max : ReduceOp::Sum),
        avg_(op == ReduceOp::Avg),
        es_(dtype_size(dt)),
        send_(static_cast<const std::byte*>(send)),
        data_(static_cast<std::byte*>(data)),
        count_(count),
        r_(info_.rank),
        p_(info_.size) {
    left_ = (r_ - 1 + p_) % p_;
    right_ = (r_ + 1) % p_;
    if (kind_ == Kind::AllReduce) {
      const size_t align = std::max<size_t>(1, 64 / es_);  // block boundaries on cache lines
      bs_ = ((count_ + p_ - 1) / p_ + align - 1) / align * align;
      total_ = count_;
    } else {
      bs_ = count_;
      total_ = count_ * p_;
    }
    seg_ = std::max(es_, std::min(segment_bytes, kMaxMessageBytes) / es_ * es_);
    if (kind_ != Kind::AllGather) {
      // staging for one block; reduce-scatter (out of place) also needs two accumulators
      const size_t block_bytes = bs_ * es_;
      const size_t n = kind_ == Kind::ReduceScatter && p_ > 2 ? 3 : 1;
      scratch_ = engine_->pool().acquire(n * block_bytes);
      staging_ = scratch_.data();
      acc_[0] = staging_ + block_bytes;
      acc_[1] = staging_ + 2 * block_bytes;
    }
    phase_ = kind_ == Kind::AllGather ? Phase::AllGather : Phase::ReduceScatter;
  }

 protected:
  void advance() override {
    for (;;) {
      if (!in_step_ && !start_step()) {
        if (!test_all(deferred_)) return;
        finish();
        return;
      }
      if (!step_done()) return;
      in_step_ = false;
      ++step_;
    }
  }
  void release() override { scratch_.reset(); }

 private:
  enum class Phase { ReduceScatter, AllGather, Done };

  int mod(int x) const { return ((x % p_) + p_) % p_; }
  size_t off(int b) const { return std::min(total_, static_cast<size_t>(b) * bs_); }
  size_t len(int b) const { return std::min(total_, static_cast<size_t>(b + 1) * bs_) - off(b); }
  // The caller's copy of block b: the reduction's own contribution.
  const std::byte* base(int b) const {
    return (kind_ == Kind::AllReduce ? data_ : send_) + off(b) * es_;
  }

  bool start_step() {
    for (;;) {
      if (phase_ == Phase::ReduceScatter) {
        if (step_ < p_ - 1) {
          post_reduce_scatter_step(step_);
          return in_step_ = true;
        }
        if (avg_) {  // divide the block this rank owns, before it is gathered
          if (kind_ == Kind::AllReduce) divide(dt_, data_ + off(r_) * es_, len(r_), p_);
          else divide(dt_, data_, count_, p_);
        }
        phase_ = kind_ == Kind::ReduceScatter ? Phase::Done : Phase::AllGather;
        step_ = 0;
        continue;
      }
      if (phase_ == Phase::AllGather) {
        if (step_ < p_ - 1) {
          post_all_gather_step(step_);
          return in_step_ = true;
        }
        phase_ = Phase::Done;
      }
      return false;
    }
  }

  void post_reduce_scatter_step(int s) {
    const int sb = mod(r_ - s - 1), rb = mod(r_ - s - 2);
    const std::byte* src = (s == 0 || kind_ == Kind::AllReduce) ? base(sb) : acc_[(s - 1) % 2];
    if (kind_ == Kind::AllReduce) red_dst_ = data_ + off(rb) * es_;
    else red_dst_ = (s == p_ - 2) ? data_ : acc_[s % 2];
    red_a_ = base(rb);
    red_bytes_ = len(rb) * es_;
    post(src, len(sb) * es_, right_, staging_, red_bytes_, left_, seg_);
  }

  void post_all_gather_step(int s) {
    const int sb = mod(r_ - s), rb = mod(r_ - s - 1);
    red_bytes_ = 0;
    post(data_ + off(sb) * es_, len(sb) * es_, right_, data_ + off(rb) * es_, len(rb) * es_, left_, seg_);
  }

  bool step_done() {
    if (phase_ == Phase::ReduceScatter) {
      // reduce segments in arrival order while later ones are still in flight
      while (next_ < rreq_.size()) {
        if (!test_request(rreq_[next_])) return false;
        const size_t o = next_ * rpiece_;
        reduce(dt_, op_, red_dst_ + o, red_a_ + o, staging_ + o, std::min(rpiece_, red_bytes_ - o) / es_);
        ++next_;
      }
    } else if (!test_all(rreq_)) {
      return false;
    }
    if (kind_ == Kind::AllReduce) {
      // In place, a block this rank sent is overwritten only by its final value, which
      // reaches us only after the receiver of our send has taken its copy: go on without
      // waiting for the sends' completion (the receiver's acknowledgement), finish them last.
      for (MPI_Request q : sreq_)
        if (q != MPI_REQUEST_NULL) deferred_.push_back(q);
      sreq_.clear();
      return true;
    }
    return test_all(sreq_);  // the out-of-place accumulators are reused two steps later
  }

  Kind kind_;
  DType dt_;
  ReduceOp op_;  // Sum or Max (Avg runs as Sum + division)
  bool avg_;
  size_t es_;
  const std::byte* send_;
  std::byte* data_;
  size_t count_;
  int r_, p_, left_ = 0, right_ = 0;
  size_t bs_ = 0, total_ = 0, seg_ = 0;
  BufferPool::Lease scratch_;
  std::byte* staging_ = nullptr;
  std::byte* acc_[2] = {nullptr, nullptr};

  Phase phase_;
  int step_ = 0;
  bool in_step_ = false;
  std::vector<MPI_Request> deferred_;  // sends whose completion is checked at the end
  std::byte* red_dst_ = nullptr;
  const std::byte* red_a_ = nullptr;
  size_t red_bytes_ = 0;
};

}  // namespace detail

using detail::MpiEngine;
using detail::NativeOp;
using detail::OpInfo;
using detail::RdOp;
using detail::RingOp;

namespace {
void check_reduce_args(const char* op_name, DType dt, ReduceOp op) {
  if (op == ReduceOp::Avg && !is_floating(dt))
    throw core::Error(fmt::format("{} with op avg needs a floating-point dtype, got {}", op_name, dtype_name(dt)))
        .with_hint("use sum and divide yourself, or reduce in f64")
        .with_where(__FILE__, __LINE__);
}
}  // namespace

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
}

MpiCommunicator::MpiCommunicator(Adopt, MPI_Comm owned, std::string name, MpiCommOptions opt,
                                 std::shared_ptr<MpiEngine> engine)
    : comm_(owned), opt_(opt), engine_(std::move(engine)) {
  set_name(std::move(name));
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ == MPI_COMM_NULL || !MpiEnv::active()) return;
  if (const size_t n = engine_->outstanding(comm_); n > 0) {
    // Freeing the communicator under live requests is erroneous; keep it (a leak at exit).
    core::log::warn("communicator '{}' destroyed with {} operation(s) still in flight; not freeing it", name(), n);
    return;
  }
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
  return static_cast<uint32_t>(seq_++ % 32768);
}

std::shared_ptr<Work> MpiCommunicator::iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  check_reduce_args("all_reduce", dtype, op);
  const size_t bytes = count * dtype_size(dtype);
  const uint32_t tag = next_tag();
  if (count == 0 || size_ == 1) {  // Avg over one rank: x / 1 == x
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  MT_CHECK(buf != nullptr, "all_reduce of {} elements on communicator '{}' got a null buffer", count, name());
  OpInfo info{"all_reduce", bytes, dtype, static_cast<int>(op), -1, name(), rank_, size_, comm_};
  if (large(bytes, count)) {
    auto w = std::make_shared<RingOp>(engine_, std::move(info), RingOp::Kind::AllReduce, dtype, op, nullptr, buf,
                                      count, tag, opt_.segment_bytes);
    engine_->start(w);
    return w;
  }
  // MPI has no bf16 type: bf16 always takes the framework's algorithms.
  if (opt_.small_algorithm == SmallAlgorithm::Framework || dtype == DType::BF16) {
    auto w = std::make_shared<RdOp>(engine_, std::move(info), dtype, op, buf, count, tag, opt_.small_piece_bytes);
    engine_->start(w);
    return w;
  }
  auto w = std::make_shared<NativeOp>(engine_, std::move(info));
  MPI_Request q = MPI_REQUEST_NULL;
  const int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, static_cast<int>(count), mpi_type(dtype), mpi_op(op), comm_, &q);
  w->issue(rc, "MPI_Iallreduce", q);
  if (op == ReduceOp::Avg) w->on_done = [buf, count, dtype, p = size_] { divide(dtype, buf, count, p); };
  engine_->start(w);
  return w;
}

std::shared_ptr<Work> MpiCommunicator::ireduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                                       ReduceOp op) {
  check_reduce_args("reduce_scatter", dtype, op);
  const size_t es = dtype_size(dtype);
  const size_t block = recv_count * es, bytes = block * size_;
  const uint32_t tag = next_tag();
  if (recv_count == 0) {
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  MT_CHECK(send && recv, "reduce_scatter on communicator '{}' got a null buffer", name());
  const void* own = static_cast<const std::byte*>(send) + rank_ * block;
  const bool in_place = recv == own;
  MT_CHECK(in_place || !overlaps(send, bytes, recv, block),
           "reduce_scatter: recv overlaps send; the only overlap allowed is recv == send + rank * recv_count");
  if (size_ == 1) {
    if (!in_place) std::memcpy(recv, send, block);
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  OpInfo info{"reduce_scatter", bytes, dtype, static_cast<int>(op), -1, name(), rank_, size_, comm_};
  if (large(bytes, recv_count) || opt_.small_algorithm == SmallAlgorithm::Framework || dtype == DType::BF16) {
    const size_t piece = large(bytes, recv_count) ? opt_.segment_bytes : opt_.small_piece_bytes;
    auto w = std::make_shared<RingOp>(engine_, std::move(info), RingOp::Kind::ReduceScatter, dtype, op, send,
                                      recv, recv_count, tag, piece);
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

std::shared_ptr<Work> MpiCommunicator::iall_gather(const void* send, void* recv, size_t send_count, DType dtype) {
  const size_t es = dtype_size(dtype);
  const size_t block = send_count * es, bytes = block * size_;
  const uint32_t tag = next_tag();
  if (send_count == 0) {
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  MT_CHECK(send && recv, "all_gather on communicator '{}' got a null buffer", name());
  std::byte* own = static_cast<std::byte*>(recv) + rank_ * block;
  const bool in_place = send == own;
  MT_CHECK(in_place || !overlaps(send, block, recv, bytes),
           "all_gather: send overlaps recv; the only overlap allowed is send == recv + rank * send_count");
  OpInfo info{"all_gather", bytes, dtype, -1, -1, name(), rank_, size_, comm_};
  if (size_ == 1 || large(bytes, send_count) || opt_.small_algorithm == SmallAlgorithm::Framework) {
    if (!in_place) std::memcpy(own, send, block);
    if (size_ == 1) {
      engine_->progress();
      return std::make_shared<CompletedWork>();
    }
    const size_t piece = large(bytes, send_count) ? opt_.segment_bytes : opt_.small_piece_bytes;
    auto w = std::make_shared<RingOp>(engine_, std::move(info), RingOp::Kind::AllGather, dtype, ReduceOp::Sum,
                                      nullptr, recv, send_count, tag, piece);
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

std::shared_ptr<Work> MpiCommunicator::ibroadcast(void* buf, size_t count, DType dtype, int root) {
  const size_t bytes = count * dtype_size(dtype);
  next_tag();
  if (root < 0 || root >= size_)
    throw core::Error(fmt::format("broadcast root {} is out of range for communicator '{}' of size {}", root,
                                  name(), size_))
        .with_where(__FILE__, __LINE__);
  if (count == 0 || size_ == 1) {
    engine_->progress();
    return std::make_shared<CompletedWork>();
  }
  MT_CHECK(buf != nullptr, "broadcast on communicator '{}' got a null buffer", name());
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

void MpiCommunicator::barrier() {
  next_tag();
  auto w = std::make_shared<NativeOp>(engine_, OpInfo{"barrier", 0, DType::F32, -1, -1, name(), rank_, size_, comm_});
  MPI_Request q = MPI_REQUEST_NULL;
  const int rc = MPI_Ibarrier(comm_, &q);
  w->issue(rc, "MPI_Ibarrier", q);
  engine_->start(w);
  w->wait();
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
