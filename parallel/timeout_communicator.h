// What: a Communicator decorator that gives every collective and send/recv a deadline: a wait
// (Work::wait, barrier) that outlasts `timeout_s` throws mt::core::Error naming the rank, the
// communicator, the op, its sequence number and its bytes (send/recv: the peer rank instead
// of the number); launch/ turns that into
// MPI_Abort, so the whole job ends instead of hanging. The numbering, the bytes and the time
// blocked are the base class's (Communicator::stats()), as for every communicator.
// Why: a rank that dies under mpirun is reaped by mpirun, but a rank that stops progressing
// (a stuck GPU, a SIGSTOPped or swapping process, a deadlocked peer) leaves its peers
// blocked in a collective forever. Wrapping keeps the backends small and works for any
// host backend (MPI, and host staging of device buffers); over those, wait_stream() is wait()
// (with the deadline). The NCCL communicator is not wrapped: it applies the same deadline in
// its own host-side waits and calls ncclCommAbort before throwing (nccl_communicator.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace mt::parallel {

class TimeoutCommunicator final : public Communicator {
 public:
  TimeoutCommunicator(std::unique_ptr<Communicator> inner, double timeout_s);

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend_name() const override { return inner_->backend_name(); }
  std::unique_ptr<Communicator> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;

  double timeout_s() const { return timeout_s_; }
  void set_timeout_s(double s) { timeout_s_ = s; }  // for ops issued from now on
  Communicator& inner() { return *inner_; }  // the wrapped backend (benchmarks, factory)
  // Collective over this communicator, taken as the world: learn every rank's host name, so
  // that a timeout names the world ranks and hosts of the communicator's members (a job over
  // several hosts: which host to look at). Sub-communicators made by split() afterwards learn
  // their members' world ranks in split() (one small all-gather there).
  void learn_hosts();

 protected:
  std::shared_ptr<Work> do_iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) override;
  std::shared_ptr<Work> do_ireduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                           ReduceOp op) override;
  std::shared_ptr<Work> do_iall_gather(const void* send, void* recv, size_t send_count, DType dtype) override;
  std::shared_ptr<Work> do_ibroadcast(void* buf, size_t count, DType dtype, int root) override;
  std::shared_ptr<Work> do_isend(const void* buf, size_t count, DType dtype, int peer, int tag) override;
  std::shared_ptr<Work> do_irecv(void* buf, size_t count, DType dtype, int peer, int tag) override;
  void do_group_start() override { inner_->group_start(); }
  void do_group_end() override { inner_->group_end(); }
  void do_barrier() override;  // as a 1-element all-reduce, so it has a deadline too
  void do_synchronize() override { inner_->synchronize(); }

 private:
  // The inner op's Work with this op's deadline (named after issuing()).
  std::shared_ptr<Work> deadline(std::shared_ptr<Work> w);
  std::unique_ptr<Communicator> inner_;
  double timeout_s_;
  // After learn_hosts(): the host of each world rank, and this communicator's members as
  // world ranks (index = rank here); empty before.
  std::shared_ptr<const std::vector<std::string>> world_hosts_;
  std::vector<int> world_ranks_;

 public:
  // "world rank 2 (h2)" for rank `r` here; "" when the hosts are not known.
  std::string where(int r) const;
  // "world ranks 0 (h1), 2 (h2)" for all members (at most 16 listed); "" when not known.
  std::string members() const;
};

// The backend under any TimeoutCommunicator decorators of `c` (c itself when it has none).
Communicator& backend_of(Communicator& c);

}  // namespace mt::parallel
