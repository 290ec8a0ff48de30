// What: the MPI backend's own collective algorithms over MPI_Isend/MPI_Irecv, as state
// machines the progress engine advances (mpi_engine.h): recursive doubling (RdOp, small
// all-reduces), the ring (RingOp: reduce-scatter + all-gather, pipelined in segments, or
// either half of an all-reduce), StagedOp (stages one after the other: the hierarchical
// all-reduce), and the element-wise reductions they apply, bf16 included.
// Why: Open MPI 4.1's nonblocking collectives run at half the speed of its blocking ones and
// allocate a temporary per call; these keep their scratch in the engine's pool, pipeline
// receive + reduce and send small messages in eager-sized pieces. The measurements and the
// thresholds that choose between them and the library are in mpi_communicator.cc.
// Every element is reduced once, in one order, on one rank (the ring) or symmetrically by
// both partners (recursive doubling), so all ranks get identical bits.
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "parallel/mpi_engine.h"

namespace mt::parallel::detail {

namespace {

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

}  // namespace

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

namespace {

// Elements per block of the in-place ring layout: ceil(count / p), rounded up to a cache line.
size_t ring_block_elems(size_t count, int p, size_t es) {
  const size_t align = std::max<size_t>(1, 64 / es);  // block boundaries on cache lines
  return ((count + p - 1) / p + align - 1) / align * align;
}

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
  using Kind = RingKind;

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
    if (in_place()) {
      bs_ = ring_block_elems(count_, p_, es_);
      total_ = count_;
    } else {
      bs_ = count_;
      total_ = count_ * p_;
    }
    seg_ = std::max(es_, std::min(segment_bytes, kMaxMessageBytes) / es_ * es_);
    if (kind_ != Kind::AllGather && kind_ != Kind::AllReduceAG) {
      // staging for one block; reduce-scatter (out of place) also needs two accumulators
      const size_t block_bytes = bs_ * es_;
      const size_t n = kind_ == Kind::ReduceScatter && p_ > 2 ? 3 : 1;
      scratch_ = engine_->pool().acquire(n * block_bytes);
      staging_ = scratch_.data();
      acc_[0] = staging_ + block_bytes;
      acc_[1] = staging_ + 2 * block_bytes;
    }
    phase_ = kind_ == Kind::AllGather || kind_ == Kind::AllReduceAG ? Phase::AllGather : Phase::ReduceScatter;
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
  // The in-place kinds on the all-reduce block layout (all of it, or one of its halves).
  bool in_place() const { return kind_ == Kind::AllReduce || kind_ == Kind::AllReduceRS || kind_ == Kind::AllReduceAG; }

  int mod(int x) const { return ((x % p_) + p_) % p_; }
  size_t off(int b) const { return std::min(total_, static_cast<size_t>(b) * bs_); }
  size_t len(int b) const { return std::min(total_, static_cast<size_t>(b + 1) * bs_) - off(b); }
  // The caller's copy of block b: the reduction's own contribution.
  const std::byte* base(int b) const {
    return (in_place() ? data_ : send_) + off(b) * es_;
  }

  bool start_step() {
    for (;;) {
      if (phase_ == Phase::ReduceScatter) {
        if (step_ < p_ - 1) {
          post_reduce_scatter_step(step_);
          return in_step_ = true;
        }
        if (avg_) {  // divide the block this rank owns, before it is gathered
          if (in_place()) divide(dt_, data_ + off(r_) * es_, len(r_), p_);
          else divide(dt_, data_, count_, p_);
        }
        phase_ = kind_ == Kind::AllReduce ? Phase::AllGather : Phase::Done;
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
    const std::byte* src = (s == 0 || in_place()) ? base(sb) : acc_[(s - 1) % 2];
    if (in_place()) red_dst_ = data_ + off(rb) * es_;
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
    if (in_place()) {
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

// Stages one after the other (mpi_engine.h: make_staged).
class StagedOp final : public MpiOp {
 public:
  StagedOp(std::shared_ptr<MpiEngine> engine, OpInfo info, std::vector<std::function<std::shared_ptr<MpiOp>()>> stages)
      : MpiOp(std::move(engine), std::move(info)), stages_(std::move(stages)) {}

 protected:
  void advance() override {
    for (;;) {
      if (!cur_) {
        if (next_ == stages_.size()) {
          finish();
          return;
        }
        cur_ = stages_[next_++]();  // may throw: completes this op with the error
        if (!cur_) continue;        // nothing to do in this stage (e.g. an empty block)
      }
      cur_->step();
      if (!cur_->completed()) return;
      if (cur_->error()) std::rethrow_exception(cur_->error());
      cur_.reset();
    }
  }
  void release() override {  // (a stage that failed is complete: its requests are gone)
    cur_.reset();
    stages_.clear();
  }

 private:
  std::vector<std::function<std::shared_ptr<MpiOp>()>> stages_;
  size_t next_ = 0;
  std::shared_ptr<MpiOp> cur_;
};

// Up to `window` operations in flight, in order (mpi_engine.h: make_windowed).
class WindowedOp final : public MpiOp {
 public:
  WindowedOp(std::shared_ptr<MpiEngine> engine, OpInfo info, std::vector<std::shared_ptr<MpiOp>> ops, size_t window)
      : MpiOp(std::move(engine), std::move(info)), ops_(std::move(ops)), window_(std::max<size_t>(1, window)) {}

 protected:
  void advance() override {
    for (;;) {
      const size_t end = std::min(ops_.size(), first_ + window_);
      for (size_t i = first_; i < end; ++i) {
        ops_[i]->step();
        if (ops_[i]->completed() && ops_[i]->error()) std::rethrow_exception(ops_[i]->error());
      }
      const size_t before = first_;
      while (first_ < ops_.size() && ops_[first_]->completed()) ops_[first_++].reset();
      if (first_ == ops_.size()) {
        finish();
        return;
      }
      if (first_ == before) return;  // the oldest is still running: come back on the next progress
    }
  }
  void release() override { ops_.clear(); }

 private:
  std::vector<std::shared_ptr<MpiOp>> ops_;
  size_t window_;
  size_t first_ = 0;  // the oldest operation not yet completed
};

}  // namespace

std::shared_ptr<MpiOp> make_windowed(std::shared_ptr<MpiEngine> engine, OpInfo info,
                                     std::vector<std::shared_ptr<MpiOp>> ops, size_t window) {
  return std::make_shared<WindowedOp>(std::move(engine), std::move(info), std::move(ops), window);
}

std::pair<size_t, size_t> ring_block(size_t count, int p, size_t es, int b) {
  const size_t bs = ring_block_elems(count, p, es);
  const size_t o = std::min(count, static_cast<size_t>(b) * bs);
  return {o, std::min(count, static_cast<size_t>(b + 1) * bs) - o};
}

std::shared_ptr<MpiOp> make_staged(std::shared_ptr<MpiEngine> engine, OpInfo info,
                                   std::vector<std::function<std::shared_ptr<MpiOp>()>> stages) {
  return std::make_shared<StagedOp>(std::move(engine), std::move(info), std::move(stages));
}

std::shared_ptr<MpiOp> make_recursive_doubling(std::shared_ptr<MpiEngine> engine, OpInfo info, DType dt, ReduceOp op,
                                               void* buf, size_t count, uint32_t tag, size_t piece_bytes) {
  return std::make_shared<RdOp>(std::move(engine), std::move(info), dt, op, buf, count, tag, piece_bytes);
}

std::shared_ptr<MpiOp> make_ring(std::shared_ptr<MpiEngine> engine, OpInfo info, RingKind kind, DType dt, ReduceOp op,
                                 const void* send, void* data, size_t count, uint32_t tag, size_t segment_bytes) {
  return std::make_shared<RingOp>(std::move(engine), std::move(info), kind, dt, op, send, data, count, tag,
                                   segment_bytes);
}

}  // namespace mt::parallel::detail
