// What: TimeoutCommunicator (see the header). Waits poll the inner Work (which also drives
// the backend's progress), yielding the core after a while, and check the deadline.
#include "parallel/timeout_communicator.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace mt::parallel {

namespace {

class DeadlineWork final : public Work {
 public:
  // `comm` must outlive the Work (as the buffers must); the message is built only on timeout.
  DeadlineWork(std::shared_ptr<Work> inner, const TimeoutCommunicator* comm, const char* op, uint64_t seq, size_t bytes,
               int peer, int tag, double timeout_s)
      : inner_(std::move(inner)), comm_(comm), timeout_s_(timeout_s) {
    describe(op, seq, bytes);
    describe_peer(peer, tag);
    if (inner_->completed()) mark_completed(inner_->error());
  }

  bool test() override {
    if (completed()) return true;
    if (inner_->test()) {
      mark_completed(inner_->error());
      return true;
    }
    return false;
  }

  // wait_stream() is the default (wait()): the inner backends are host backends, and the
  // deadline must apply to it too.
  void wait() override {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    for (int spin = 0; !test(); ++spin) {
      if (spin > 1000) std::this_thread::yield();  // let a co-scheduled peer rank run
      if ((spin & 63) == 0) {
        const double waited = std::chrono::duration<double>(Clock::now() - start).count();
        if (waited > timeout_s_) {
          if (peer() >= 0)  // send/recv: the one peer that did not show up
            throw core::Error(fmt::format("{} {} rank {} (tag {}, {} bytes) on communicator '{}' (rank {} of {}) timed "
                                          "out after {:.0f} s: the peer is dead or stuck, or never posted the "
                                          "matching {}",
                                          op(), op()[0] == 's' ? "to" : "from", peer(), tag(), bytes(), comm_->name(),
                                          comm_->rank(), comm_->size(), waited, op()[0] == 's' ? "recv" : "send"))
                .with_hint("look at what rank " + std::to_string(peer()) + " of this communicator" +
                           paren(comm_->where(peer())) + " was doing (parallel.timeout_s sets the limit)");
          const std::string members = comm_->members();
          throw core::Error(fmt::format("timed out after {:.0f} s waiting in {} #{} ({} bytes) on communicator '{}' "
                                        "(rank {} of {}{})",
                                        waited, op(), seq(), bytes(), comm_->name(), comm_->rank(), comm_->size(),
                                        members.empty() ? "" : "; members: " + members))
              .with_hint("a peer rank probably died or stopped progressing, or its host became unreachable "
                         "(parallel.timeout_s sets the limit)");
        }
      }
    }
    if (error()) std::rethrow_exception(error());
  }

 private:
  static std::string paren(const std::string& s) { return s.empty() ? s : " (" + s + ")"; }

  std::shared_ptr<Work> inner_;
  const TimeoutCommunicator* comm_;
  double timeout_s_;
};

}  // namespace

TimeoutCommunicator::TimeoutCommunicator(std::unique_ptr<Communicator> inner, double timeout_s)
    : inner_(std::move(inner)), timeout_s_(timeout_s) {
  set_name(inner_->name());
}

std::shared_ptr<Work> TimeoutCommunicator::deadline(std::shared_ptr<Work> w) {
  const Issuing& op = issuing();
  return std::make_shared<DeadlineWork>(std::move(w), this, op.op, op.seq, op.bytes, op.peer, op.tag, timeout_s_);
}

std::shared_ptr<Work> TimeoutCommunicator::do_isend(const void* buf, size_t count, DType dtype, int peer, int tag) {
  return deadline(inner_->isend(buf, count, dtype, peer, tag));
}
std::shared_ptr<Work> TimeoutCommunicator::do_irecv(void* buf, size_t count, DType dtype, int peer, int tag) {
  return deadline(inner_->irecv(buf, count, dtype, peer, tag));
}

std::shared_ptr<Work> TimeoutCommunicator::do_iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  return deadline(inner_->iall_reduce(buf, count, dtype, op));
}
std::shared_ptr<Work> TimeoutCommunicator::do_ireduce_scatter(const void* send, void* recv, size_t recv_count,
                                                              DType dtype, ReduceOp op) {
  return deadline(inner_->ireduce_scatter(send, recv, recv_count, dtype, op));
}
std::shared_ptr<Work> TimeoutCommunicator::do_iall_gather(const void* send, void* recv, size_t send_count,
                                                          DType dtype) {
  return deadline(inner_->iall_gather(send, recv, send_count, dtype));
}
std::shared_ptr<Work> TimeoutCommunicator::do_ibroadcast(void* buf, size_t count, DType dtype, int root) {
  return deadline(inner_->ibroadcast(buf, count, dtype, root));
}
void TimeoutCommunicator::do_barrier() {
  int32_t one = 1;
  deadline(inner_->iall_reduce(&one, 1, DType::I32, ReduceOp::Sum))->wait();
}
void TimeoutCommunicator::abort(int code) {
  inner_->abort(code);
  std::abort();  // not reached: the backend's abort does not return
}

std::unique_ptr<Communicator> TimeoutCommunicator::split(int color, int key) {
  auto sub = inner_->split(color, key);
  if (!sub) return nullptr;
  auto out = std::make_unique<TimeoutCommunicator>(std::move(sub), timeout_s_);
  if (world_hosts_) {  // known on every rank of this communicator alike (learn_hosts is collective)
    const int32_t me = world_ranks_[static_cast<size_t>(rank())];
    std::vector<int32_t> ranks(static_cast<size_t>(out->size()));
    out->all_gather(&me, ranks.data(), 1, DType::I32);
    out->world_hosts_ = world_hosts_;
    out->world_ranks_.assign(ranks.begin(), ranks.end());
  }
  return out;
}

void TimeoutCommunicator::learn_hosts() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) std::strcpy(name, "?");
  world_hosts_ = std::make_shared<const std::vector<std::string>>(all_gather_strings(*this, name));
  world_ranks_.resize(static_cast<size_t>(size()));
  for (int r = 0; r < size(); ++r) world_ranks_[static_cast<size_t>(r)] = r;
}

std::string TimeoutCommunicator::where(int r) const {
  if (!world_hosts_ || r < 0 || r >= static_cast<int>(world_ranks_.size())) return "";
  const int w = world_ranks_[static_cast<size_t>(r)];
  return fmt::format("world rank {} on {}", w, (*world_hosts_)[static_cast<size_t>(w)]);
}

std::string TimeoutCommunicator::members() const {
  if (!world_hosts_) return "";
  std::string s;
  const size_t n = world_ranks_.size(), shown = std::min<size_t>(n, 16);
  for (size_t i = 0; i < shown; ++i) {
    const int w = world_ranks_[i];
    s += fmt::format("{}{} ({})", i ? ", " : "world ranks ", w, (*world_hosts_)[static_cast<size_t>(w)]);
  }
  if (shown < n) s += fmt::format(", ... ({} in all)", n);
  return s;
}

Communicator& backend_of(Communicator& c) {
  Communicator* p = &c;
  while (auto* t = dynamic_cast<TimeoutCommunicator*>(p)) p = &t->inner();
  return *p;
}

}  // namespace mt::parallel
