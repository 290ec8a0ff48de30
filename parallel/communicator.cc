// What: the backend-independent part of Communicator (see the contract in communicator.h):
// the non-virtual collectives, point-to-point ops, barrier() and synchronize() that number each operation, count
// its bytes and time the host's waits into CommStats, and TrackedWork, the Work they return
// around the backend's own.
// Why: every backend reports the same statistics and every Work knows its op, sequence number
// and bytes without each backend (or a decorator such as TimeoutCommunicator) keeping its own
// books; the exposed communication time is measured where the host actually waits, which on
// NCCL is Work::wait() now that it blocks the host.
#include <chrono>
#include <cstring>
#include <vector>

#include "parallel/collective_args.h"
#include "parallel/communicator.h"

#include "core/error.h"

namespace mt::parallel {

namespace {

using Clock = std::chrono::steady_clock;

// Adds the time from construction to destruction to `total` (also when an exception leaves).
class BlockedTimer {
 public:
  explicit BlockedTimer(double& total) : total_(total), start_(Clock::now()) {}
  ~BlockedTimer() { total_ += std::chrono::duration<double>(Clock::now() - start_).count(); }
  BlockedTimer(const BlockedTimer&) = delete;
  BlockedTimer& operator=(const BlockedTimer&) = delete;

 private:
  double& total_;
  Clock::time_point start_;
};

// The Work of a numbered operation: forwards to the backend's Work and times the waits.
class TrackedWork final : public Work {
 public:
  TrackedWork(std::shared_ptr<Work> inner, std::shared_ptr<CommStats> stats, const char* op, uint64_t seq,
              size_t bytes)
      : inner_(std::move(inner)), stats_(std::move(stats)) {
    describe(op, seq, bytes);
    if (inner_->completed()) mark_completed(inner_->error());
  }

  bool test() override {
    if (completed()) return true;
    if (!inner_->test()) return false;
    mark_completed(inner_->error());
    return true;
  }

  void wait() override {
    if (!completed()) {
      BlockedTimer t(stats_->blocked_s);
      try {
        inner_->wait();
      } catch (...) {
        // The op's own error completes it; a deadline leaves it in flight (test() may still
        // complete it later).
        if (inner_->completed()) mark_completed(inner_->error());
        throw;
      }
      mark_completed(inner_->error());
    }
    if (error()) std::rethrow_exception(error());
  }

  void set_peer(int peer, int tag) { describe_peer(peer, tag); }

  void wait_stream() override {
    if (!completed()) {
      BlockedTimer t(stats_->blocked_s);  // ~0 on a device backend; a host backend's wait
      try {
        inner_->wait_stream();
      } catch (...) {
        if (inner_->completed()) mark_completed(inner_->error());
        throw;
      }
      // A host backend's op is complete now; a device backend's is ordered, not complete.
      if (inner_->completed()) mark_completed(inner_->error());
    }
    if (error()) std::rethrow_exception(error());
  }

 private:
  std::shared_ptr<Work> inner_;
  std::shared_ptr<CommStats> stats_;  // the communicator's (a Work may outlive it)
};

}  // namespace

void Communicator::start_op(const char* op, size_t bytes) { issuing_ = Issuing{op, stats_->ops, bytes}; }

std::shared_ptr<Work> Communicator::wrap_op(std::shared_ptr<Work> w) {
  // Counted once the backend has issued the op (an issue that throws gets no number).
  stats_->ops++;
  stats_->bytes += static_cast<double>(issuing_.bytes);
  return std::make_shared<TrackedWork>(std::move(w), stats_, issuing_.op, issuing_.seq, issuing_.bytes);
}

std::shared_ptr<Work> Communicator::iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  start_op("all_reduce", count * dtype_size(dtype));
  return wrap_op(do_iall_reduce(buf, count, dtype, op));
}

std::shared_ptr<Work> Communicator::ireduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                                    ReduceOp op) {
  start_op("reduce_scatter", recv_count * static_cast<size_t>(size()) * dtype_size(dtype));
  return wrap_op(do_ireduce_scatter(send, recv, recv_count, dtype, op));
}

std::shared_ptr<Work> Communicator::iall_gather(const void* send, void* recv, size_t send_count, DType dtype) {
  start_op("all_gather", send_count * static_cast<size_t>(size()) * dtype_size(dtype));
  return wrap_op(do_iall_gather(send, recv, send_count, dtype));
}

std::shared_ptr<Work> Communicator::ibroadcast(void* buf, size_t count, DType dtype, int root) {
  start_op("broadcast", count * dtype_size(dtype));
  return wrap_op(do_ibroadcast(buf, count, dtype, root));
}

std::shared_ptr<Work> Communicator::p2p(const char* op, const void* buf, size_t count, DType dtype, int peer,
                                        int tag) {
  check_p2p_args(op, buf, count, peer, tag, rank(), size(), name());
  const size_t bytes = count * dtype_size(dtype);
  issuing_ = Issuing{op, stats_->p2p_ops, bytes, peer, tag};
  std::shared_ptr<Work> inner;
  if (count == 0) {
    inner = std::make_shared<CompletedWork>();  // nothing on the wire (both sides pass 0)
  } else if (op[0] == 's') {
    inner = do_isend(buf, count, dtype, peer, tag);
  } else {
    inner = do_irecv(const_cast<void*>(buf), count, dtype, peer, tag);
  }
  // Counted once issued, like the collectives, but in their own numbering.
  stats_->p2p_ops++;
  stats_->p2p_bytes += static_cast<double>(bytes);
  stats_->bytes += static_cast<double>(bytes);
  auto w = std::make_shared<TrackedWork>(std::move(inner), stats_, op, issuing_.seq, bytes);
  w->set_peer(peer, tag);
  return w;
}

std::shared_ptr<Work> Communicator::isend(const void* buf, size_t count, DType dtype, int peer, int tag) {
  return p2p("send", buf, count, dtype, peer, tag);
}

std::shared_ptr<Work> Communicator::irecv(void* buf, size_t count, DType dtype, int peer, int tag) {
  return p2p("recv", buf, count, dtype, peer, tag);
}

void Communicator::barrier() {
  start_op("barrier", 0);
  BlockedTimer t(stats_->blocked_s);
  // Numbered whether or not it throws: a barrier that timed out was issued all the same.
  struct Count {
    CommStats& s;
    ~Count() { s.ops++; }
  } count{*stats_};
  do_barrier();
}

void Communicator::synchronize() {
  BlockedTimer t(stats_->blocked_s);
  do_synchronize();
}

std::string broadcast_string(Communicator& c, std::string s, int root) {
  int64_t n = static_cast<int64_t>(s.size());
  c.broadcast(&n, 1, DType::I64, root);
  s.resize(static_cast<size_t>(n));
  std::vector<int32_t> buf((n + 3) / 4, 0);
  std::memcpy(buf.data(), s.data(), s.size());
  c.broadcast(buf.data(), buf.size(), DType::I32, root);
  std::memcpy(s.data(), buf.data(), s.size());
  return s;
}

std::vector<std::string> all_gather_strings(Communicator& c, const std::string& mine, size_t max_bytes) {
  MT_CHECK(max_bytes >= 4 && max_bytes % 4 == 0, "all_gather_strings: max_bytes {} is not a positive multiple of 4",
           max_bytes);
  const size_t words = max_bytes / 4;  // records as I32 words (the communicator has no byte type)
  std::vector<int32_t> rec(words, 0), all(words * static_cast<size_t>(c.size()), 0);
  std::memcpy(rec.data(), mine.data(), std::min(mine.size(), max_bytes - 1));
  c.all_gather(rec.data(), all.data(), words, DType::I32);
  std::vector<std::string> out;
  for (int r = 0; r < c.size(); ++r) {
    const char* p = reinterpret_cast<const char*>(all.data() + static_cast<size_t>(r) * words);
    out.emplace_back(p, strnlen(p, max_bytes));
  }
  return out;
}

}  // namespace mt::parallel
