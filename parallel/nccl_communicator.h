// What: NcclCommunicator, the Communicator for tensors on CUDA devices (NCCL 2.18+), and the
// ncclUniqueId bootstrap over a host (MPI) communicator.
// Why: gradients and tensor-parallel activations live on the GPU; NCCL moves them over
// NVLink / InfiniBand at link speed and overlaps with compute on its own stream.
//
// NOT RUN ON A GPU YET. It compiles and links against NCCL 2.28 / CUDA 13 on the dev machine,
// which has no GPU: there, only the bootstrap (ncclGetUniqueId + broadcast over MPI) and the
// error paths of construction (cudaSetDevice -> error 35, agreed on by every rank) have run.
// tests/cuda_mpi/nccl_communicator_test.cc exercises every op on a GPU machine.
//
// How it behaves (the device-backend part of the contract in communicator.h):
//  - Construction is collective over `host`: every rank sets its device and creates its
//    stream; the ranks agree over `host` that all succeeded (else all throw, none hangs);
//    rank 0 calls ncclGetUniqueId and broadcasts it; ncclCommInitRankConfig runs with
//    blocking = 0 and is polled (ncclCommGetAsyncError) against init_timeout_s; the ranks
//    agree again. The caller must have made `cuda_device` current already or accept that
//    the constructor makes it current (cudaSetDevice) on this thread.
//  - Each op: record an event on the compute stream, make the communicator's own stream wait
//    for it (so the op reads what the compute stream wrote), enqueue the NCCL call on the
//    own stream (polling ncclInProgress away), record a completion event. The Work's test()
//    queries that event; wait_stream() makes the compute stream wait for it and returns at
//    once; wait() blocks the host until it has completed.
//  - Work::wait(), synchronize() (and barrier(), split()) block the host, polling the
//    completion events and ncclCommGetAsyncError; past timeout_s they call ncclCommAbort and
//    throw an Error naming the rank, the op, its sequence number (the base class's, see
//    Communicator::stats()) and bytes, like TimeoutCommunicator's.
//  - Every CUDA/NCCL failure once a communicator exists calls ncclCommAbort first (this
//    rank's kernels stop, so nothing blocks at exit) and then throws; later calls throw
//    "aborted after an earlier error". The caller ends the job: launch/main.cc catches the
//    Error and calls MpiEnv::abort_job (MPI_Abort), which makes mpirun/srun kill every rank,
//    including peers blocked inside NCCL kernels. ncclCommAbort alone would not free them.
//  - Argument errors (null buffers, overlaps, bad root, avg of integers) throw at issue
//    without aborting, as in the MPI backend.
//  - Dtypes: f32, f64, i32, i64, bf16; sum, avg (ncclAvg: floating types), max.
//  - send/recv: ncclSend/ncclRecv through the same issue protocol; no tags (a pair's messages
//    match in issue order); ops run in issue order on the one stream, so an exchange where
//    both ranks send first must sit in one group_start()/group_end() (ncclGroupStart/End,
//    which are per thread: a group must hold only this communicator's ops). Their deadline
//    errors name the peer. GPU-UNVERIFIED like the rest.
//  - Threads: one thread uses it; CUDA calls assume its device is current on that thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace mt::parallel {

struct NcclOptions {
  double timeout_s = 0;         // deadline of host-side waits (Work::wait, synchronize, barrier, split); 0 = none
  double init_timeout_s = 600;  // deadline of ncclCommInitRankConfig (minutes at scale); 0 = none
};

namespace detail {
struct NcclState;
}

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `host` (a host communicator over the same ranks; used only here).
  // `compute_stream` is the cudaStream_t of the caller's compute work (nullptr: the legacy
  // default stream). Takes `host`'s name.
  NcclCommunicator(Communicator& host, int cuda_device, void* compute_stream, NcclOptions opt = {});
  // Waits (bounded by timeout_s, else 60 s) for in-flight ops, then ncclCommFinalize +
  // ncclCommDestroy; ncclCommAbort instead if anything failed or the wait ran out.
  ~NcclCommunicator() override;

  int rank() const override;
  int size() const override;
  std::string backend_name() const override { return "nccl"; }

  // ncclCommSplit (collective over this communicator); the child shares the device and the
  // compute stream and has its own stream.
  std::unique_ptr<Communicator> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;  // ncclCommAbort, then MpiEnv::abort_job

  int cuda_device() const;
  size_t in_flight() const;    // ops whose completion has not been observed yet
  bool aborted() const;
  void* raw_comm() const;      // ncclComm_t (benchmarks)
  void* raw_stream() const;    // the communicator's cudaStream_t (benchmarks)

 protected:
  std::shared_ptr<Work> do_iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) override;
  std::shared_ptr<Work> do_ireduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                           ReduceOp op) override;
  std::shared_ptr<Work> do_iall_gather(const void* send, void* recv, size_t send_count, DType dtype) override;
  std::shared_ptr<Work> do_ibroadcast(void* buf, size_t count, DType dtype, int root) override;
  // ncclSend / ncclRecv on the own stream, like the collectives (the tag is not used: NCCL
  // matches a pair's sends and recvs in issue order).
  std::shared_ptr<Work> do_isend(const void* buf, size_t count, DType dtype, int peer, int tag) override;
  std::shared_ptr<Work> do_irecv(void* buf, size_t count, DType dtype, int peer, int tag) override;
  // ncclGroupStart / ncclGroupEnd; the completion events of the ops issued in between are
  // recorded after the outermost ncclGroupEnd (their Works cannot be waited for before).
  void do_group_start() override;
  void do_group_end() override;
  void do_barrier() override;      // a 1-element all-reduce, then synchronize()
  void do_synchronize() override;  // host waits for every op issued so far (deadline, async errors)

 private:
  explicit NcclCommunicator(std::shared_ptr<detail::NcclState> st);
  std::shared_ptr<detail::NcclState> st_;
};

// The bootstrap: rank 0 of `host` calls ncclGetUniqueId and broadcasts its 128 bytes together
// with its status, so that a failure on rank 0 is an error on every rank instead of a hang.
// Collective over `host` (host memory). Needs no GPU.
using NcclUniqueIdBytes = std::array<char, 128>;
NcclUniqueIdBytes nccl_unique_id_over(Communicator& host);

int nccl_library_version();  // ncclGetVersion: e.g. 22809 for 2.28.9
int nccl_header_version();   // NCCL_VERSION_CODE this file was compiled against

// Benchmark baselines: the bare library call on `c`'s comm and stream (no events, no Work,
// no bookkeeping; ncclInProgress polled away as the nonblocking API requires), and a
// cudaStreamSynchronize of that stream.
void nccl_raw_all_reduce_f32_sum(NcclCommunicator& c, float* buf, size_t count);
void nccl_raw_stream_synchronize(NcclCommunicator& c);

}  // namespace mt::parallel
