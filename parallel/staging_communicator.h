// What: StagingCommunicator, a Communicator for buffers on a device that is served by a host
// communicator (MPI): each operation copies the device buffer into a page-locked host buffer,
// runs the wrapped communicator's operation on it, and copies the result back when that
// operation completes. Point-to-point likewise: a send stages out at issue, a recv copies in
// when the host recv completes.
// Why: NCCL cannot put two ranks of one communicator on one GPU ("one GPU cannot host two
// NCCL ranks"), and Debian's Open MPI is not CUDA-aware, so runs with several ranks per GPU
// (a 1-GPU development box, oversubscribed CI) exchange device tensors through host memory.
// It is also the fallback of parallel.backend=auto when a group shares a GPU.
//
// Semantics (the contract of communicator.h, host flavour):
//  - Issue: the device's pending work is waited for (an Event recorded on its compute stream
//    and synchronised: the gradients a backward pass is still writing are complete), then
//    Device::copy moves the input to host memory; the host operation is then in flight.
//  - Completion: when the host operation completes (noticed in any call on this communicator
//    or on a Work of it: issue, test, wait, synchronize), the result is copied back with
//    Device::copy. wait() blocks the host like the MPI backend's, and so does wait_stream()
//    (the default: the copy back is what orders the device); dropped Works still copy back
//    during later calls, as the contract asks.
//  - Device::copy must return when the bytes are at their destination (and, for host ->
//    device, be ordered before later work on the compute stream). The CPU device's memcpy
//    does; the CUDA device must (cudaMemcpyAsync on its compute stream + synchronize, or a
//    synchronous cudaMemcpy with a blocking compute stream).
//  - bf16 sums are reduced by the wrapped communicator (the MPI backend reduces bf16 pairwise
//    in f32, like NCCL); the bytes on the wire stay bf16.
//  - Errors come from the wrapped communicator (argument errors at issue, MPI errors and
//    TimeoutCommunicator deadlines from wait()); buffers of a failed op are not copied back.
//  - Host buffers come from a BufferPool (buffer_pool.h) that grows to the working set and
//    never shrinks (page-locking memory costs about as much as copying it once), allocated
//    with the device's alloc_host() (page-locked on CUDA, plain aligned memory on the CPU).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace mt::core {
class Device;
class Event;
}

namespace mt::parallel {

namespace detail {
class StagingEngine;
}

class StagingCommunicator final : public Communicator {
 public:
  // Over `host` (not owned: must outlive this communicator and its Works).
  StagingCommunicator(Communicator& host, core::Device& device);
  // Over an owned host communicator (what split() returns).
  StagingCommunicator(std::unique_ptr<Communicator> host, core::Device& device);
  ~StagingCommunicator() override;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string backend_name() const override { return "mpi-staging"; }

  std::unique_ptr<Communicator> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;

  Communicator& host() { return *host_; }
  core::Device& device() { return device_; }
  size_t staging_bytes() const;  // host bytes held by the pool (shared with splits)
  size_t outstanding() const;    // operations not yet copied back (this communicator and its splits)

 protected:
  std::shared_ptr<Work> do_iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) override;
  std::shared_ptr<Work> do_ireduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                           ReduceOp op) override;
  std::shared_ptr<Work> do_iall_gather(const void* send, void* recv, size_t send_count, DType dtype) override;
  std::shared_ptr<Work> do_ibroadcast(void* buf, size_t count, DType dtype, int root) override;
  // send: device -> pinned host at issue, then the host's isend; recv: the host's irecv into a
  // pinned buffer, copied to the device when it completes (at wait/test/any later call).
  std::shared_ptr<Work> do_isend(const void* buf, size_t count, DType dtype, int peer, int tag) override;
  std::shared_ptr<Work> do_irecv(void* buf, size_t count, DType dtype, int peer, int tag) override;
  void do_group_start() override { host_->group_start(); }
  void do_group_end() override { host_->group_end(); }
  void do_barrier() override { host_->barrier(); }
  void do_synchronize() override;  // waits for every operation issued so far and copies back

 private:
  StagingCommunicator(std::unique_ptr<Communicator> owned, Communicator* host, core::Device& device,
                      std::shared_ptr<detail::StagingEngine> engine);
  void ready_device();  // the device's queued work is complete

  std::unique_ptr<Communicator> owned_;
  Communicator* host_;
  core::Device& device_;
  std::shared_ptr<detail::StagingEngine> engine_;
  std::unique_ptr<core::Event> ready_;  // recorded on the device's stream before each copy out
};

}  // namespace mt::parallel
