// What: a Communicator decorator that gives every collective a deadline. It numbers the
// operations of its communicator (a sequence number), and a wait that outlasts `timeout_s`
// throws mt::core::Error naming the rank, the communicator, the op, its sequence number and
// its bytes; launch/ turns that into MPI_Abort, so the whole job ends instead of hanging.
// Why: a rank that dies under mpirun is reaped by mpirun, but a rank that stops progressing
// (a stuck GPU, a SIGSTOPped or swapping process, a deadlocked peer) leaves its peers
// blocked in a collective forever. Wrapping keeps the backends small and works for any
// host backend (MPI, and host staging of device buffers). The NCCL communicator is not wrapped:
// its wait() does not block the host, so it applies the same deadline in its own host-side
// waits and calls ncclCommAbort before throwing (nccl_communicator.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace mt::parallel {

class TimeoutCommunicator final : public Communicator {
 public:
  TimeoutCommunicator(std::unique_ptr<Communicator> inner, double timeout_s);

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend_name() const override { return inner_->backend_name(); }

  std::shared_ptr<Work> iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) override;
  std::shared_ptr<Work> ireduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                        ReduceOp op) override;
  std::shared_ptr<Work> iall_gather(const void* send, void* recv, size_t send_count, DType dtype) override;
  std::shared_ptr<Work> ibroadcast(void* buf, size_t count, DType dtype, int root) override;
  void barrier() override;  // as a 1-element all-reduce, so it has a deadline too
  void synchronize() override { inner_->synchronize(); }
  std::unique_ptr<Communicator> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;

  double timeout_s() const { return timeout_s_; }
  void set_timeout_s(double s) { timeout_s_ = s; }  // for ops issued from now on
  uint64_t ops_issued() const { return seq_; }
  // Seconds this rank has spent blocked in wait() on this communicator's operations (the
  // exposed communication time; launch/ reports the tensor-parallel share per step).
  double blocked_s() const { return blocked_s_; }
  Communicator& inner() { return *inner_; }  // the wrapped backend (benchmarks, factory)

 private:
  std::shared_ptr<Work> wrap(std::shared_ptr<Work> w, const char* op, size_t bytes);
  std::unique_ptr<Communicator> inner_;
  double timeout_s_;
  uint64_t seq_ = 0;
  double blocked_s_ = 0;
};

}  // namespace mt::parallel
