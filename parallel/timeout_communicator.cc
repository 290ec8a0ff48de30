// What: TimeoutCommunicator (see the header). Waits poll the inner Work (which also drives
// the backend's progress), yielding the core after a while, and check the deadline.
#include "parallel/timeout_communicator.h"

#include <chrono>
#include <cstdlib>
#include <thread>

#include "core/error.h"

namespace mt::parallel {

namespace {

class DeadlineWork final : public Work {
 public:
  // `comm` must outlive the Work (as the buffers must); the message is built only on timeout.
  DeadlineWork(std::shared_ptr<Work> inner, const Communicator* comm, const char* op, uint64_t seq, size_t bytes,
               double timeout_s, double* blocked_s)
      : inner_(std::move(inner)), comm_(comm), op_(op), seq_(seq), bytes_(bytes), timeout_s_(timeout_s),
        blocked_s_(blocked_s) {}

  bool test() override {
    if (completed()) return true;
    if (inner_->test()) {
      mark_completed(inner_->error());
      return true;
    }
    return false;
  }

  void wait() override {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    for (int spin = 0; !test(); ++spin) {
      if (spin > 1000) std::this_thread::yield();  // let a co-scheduled peer rank run
      if ((spin & 63) == 0) {
        const double waited = std::chrono::duration<double>(Clock::now() - start).count();
        if (waited > timeout_s_) {
          throw core::Error(fmt::format("timed out after {:.0f} s waiting in {} #{} ({} bytes) on communicator '{}' "
                                        "(rank {} of {})",
                                        waited, op_, seq_, bytes_, comm_->name(), comm_->rank(), comm_->size()))
              .with_hint("a peer rank probably died or stopped progressing (parallel.timeout_s sets the limit)");
        }
      }
    }
    *blocked_s_ += std::chrono::duration<double>(Clock::now() - start).count();
    if (error()) std::rethrow_exception(error());
  }

 private:
  std::shared_ptr<Work> inner_;
  const Communicator* comm_;
  const char* op_;
  uint64_t seq_;
  size_t bytes_;
  double timeout_s_;
  double* blocked_s_;  // the communicator's total
};

}  // namespace

TimeoutCommunicator::TimeoutCommunicator(std::unique_ptr<Communicator> inner, double timeout_s)
    : inner_(std::move(inner)), timeout_s_(timeout_s) {
  set_name(inner_->name());
}

std::shared_ptr<Work> TimeoutCommunicator::wrap(std::shared_ptr<Work> w, const char* op, size_t bytes) {
  return std::make_shared<DeadlineWork>(std::move(w), this, op, seq_++, bytes, timeout_s_, &blocked_s_);
}

std::shared_ptr<Work> TimeoutCommunicator::iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  return wrap(inner_->iall_reduce(buf, count, dtype, op), "all_reduce", count * dtype_size(dtype));
}
std::shared_ptr<Work> TimeoutCommunicator::ireduce_scatter(const void* send, void* recv, size_t recv_count,
                                                           DType dtype, ReduceOp op) {
  return wrap(inner_->ireduce_scatter(send, recv, recv_count, dtype, op), "reduce_scatter",
              recv_count * size() * dtype_size(dtype));
}
std::shared_ptr<Work> TimeoutCommunicator::iall_gather(const void* send, void* recv, size_t send_count, DType dtype) {
  return wrap(inner_->iall_gather(send, recv, send_count, dtype), "all_gather", send_count * size() * dtype_size(dtype));
}
std::shared_ptr<Work> TimeoutCommunicator::ibroadcast(void* buf, size_t count, DType dtype, int root) {
  return wrap(inner_->ibroadcast(buf, count, dtype, root), "broadcast", count * dtype_size(dtype));
}
void TimeoutCommunicator::barrier() {
  int32_t one = 1;
  wrap(inner_->iall_reduce(&one, 1, DType::I32, ReduceOp::Sum), "barrier", 4)->wait();
}
void TimeoutCommunicator::abort(int code) {
  inner_->abort(code);
  std::abort();  // not reached: the backend's abort does not return
}

std::unique_ptr<Communicator> TimeoutCommunicator::split(int color, int key) {
  auto sub = inner_->split(color, key);
  if (!sub) return nullptr;
  return std::make_unique<TimeoutCommunicator>(std::move(sub), timeout_s_);
}

}  // namespace mt::parallel
