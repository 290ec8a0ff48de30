// What: the Communicator interface (all_reduce, reduce_scatter, all_gather, broadcast,
// barrier, split, abort), its async Work handle, and the factory that picks a backend.
// Why: the model, the gradient sync and the trainer talk to one small interface in the spirit
// of PyTorch's c10d ProcessGroup, so the MPI backend (CPU, built everywhere) and the NCCL
// backend (GPU, later) are interchangeable without changing any caller.
//
// ---- Contract: every backend honours these rules ----------------------------------------
// Ordering. All ranks of a communicator issue the same collectives (same op, count, dtype,
//   reduce op, root) in the same order. Waits (Work::wait/test) may happen in any order:
//   waiting on one Work progresses every outstanding operation of the backend, so a rank
//   waiting on op B while its peer waits on op A does not deadlock.
// Buffers. Pointers are in the backend's memory space: host memory for MPI, device memory
//   for NCCL (callers pass what their Device allocated). Counts are in elements of `dtype`.
//   A buffer passed to a nonblocking op must stay alive and must not be read or written by
//   the caller until its Work completes (wait() returned or test() returned true). Dropping a
//   Work does not cancel the operation: it still completes during later calls on the
//   communicator, so the buffers must outlive it regardless (call wait()).
// In place. all_reduce and broadcast work in place. reduce_scatter: `recv` must not overlap
//   `send` unless recv == send + rank() * recv_count. all_gather: `send` must not overlap
//   `recv` unless send == recv + rank() * send_count (the in-place form).
// Results. Every rank receives bitwise-identical results from all_reduce (each element is
//   reduced once, in one order, and then distributed). Avg is Sum divided by size() and is
//   defined for floating-point dtypes only. Zero counts are valid no-ops that still count as
//   a collective call (they complete immediately).
// Threads. A communicator is used by one thread at a time: the thread that owns it (the
//   training loop). It is not thread-safe. Nonblocking ops make progress only inside calls on
//   the backend (any collective, Work::test(), Work::wait()), so code that overlaps
//   communication with compute should call test() now and then (GradSync does on every
//   gradient-ready hook).
// Errors. Failures throw mt::core::Error naming the op, the bytes, the rank and the library's
//   own message. Blocking ops throw directly; nonblocking ops may throw when issued (bad
//   arguments) or complete with an error, which Work::error() holds and Work::wait()
//   rethrows (test() then returns true without throwing). An error on one rank usually
//   leaves its peers blocked: the caller aborts the job (abort(), MpiEnv::abort_job).
// Timeouts. Host backends do not time out on their own: a peer that never joins a collective
//   blocks wait() forever; TimeoutCommunicator (timeout_communicator.h) gives them deadlines.
//   The NCCL backend has its own (its host-side waits: synchronize(), barrier(), split()),
//   because its wait() does not block the host. The job-level guards remain the launcher's
//   (mpirun/srun time limits, ctest TIMEOUT) and abort() from a rank that failed.
// Device backends (NCCL: nccl_communicator.h). Ops are enqueued on the communicator's own
//   stream, ordered after the compute stream's pending work by an event recorded at issue
//   time; Work::wait() makes the compute stream wait for the op's completion event (it does
//   not block the host: later kernels on the compute stream see the result), and Work::test()
//   queries that event. synchronize() blocks the host until every op issued so far is done,
//   polling for asynchronous failures (ncclCommGetAsyncError) and the deadline; failures
//   surface through Work::error()/wait()/synchronize(), always after ncclCommAbort so that
//   this rank's kernels stop. abort() maps to ncclCommAbort + MPI_Abort. Pointers are device
//   pointers; nothing in the caller changes, except one rule: before the host blocks on the
//   device (Device::copy, Device::synchronize) behind device-backend ops, call synchronize():
//   otherwise a dead peer leaves the host in cudaStreamSynchronize with no deadline (Gpt and
//   GradSync do so). Host staging (staging_communicator.h) presents
//   a host backend to device pointers: its ops copy device -> pinned host, reduce over MPI and
//   copy back, so its waits block the host like the MPI backend's.
// ------------------------------------------------------------------------------------------
#pragma once

#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <utility>

namespace mt::core {
class Device;
}

namespace mt::parallel {

enum class ReduceOp { Sum, Avg, Max };

// Element types a communicator moves. BF16 reductions (sum, avg, max) accumulate each pair of
// operands in f32 and round the pair's result to bf16, in NCCL and in the MPI backend alike:
// a sum over p ranks is rounded once per step of the algorithm (p-1 times in a ring), not
// once at the end. Callers that want one rounding reduce in f32 (mixed-precision gradients).
enum class DType { F32, F64, I32, I64, BF16 };

inline size_t dtype_size(DType t) {  // bytes per element
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::BF16: return 2;
  }
  return 0;
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::BF16: return "bf16";
  }
  return "?";
}
inline const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
  }
  return "?";
}
inline bool is_floating(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

// Handle of a nonblocking operation.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the operation completes (progressing every outstanding op of the backend);
  // rethrows the error the operation failed with. Calling it again returns (or rethrows) at once.
  virtual void wait() = 0;
  // Progresses outstanding ops; true once this one has completed (successfully or not).
  // Does not throw for a failed operation: see error().
  virtual bool test() = 0;
  // The error the operation completed with, or null.
  virtual std::exception_ptr error() const { return error_; }
  bool completed() const { return completed_; }

 protected:
  // Backends call this exactly once when the operation is over.
  void mark_completed(std::exception_ptr err = nullptr) {
    error_ = std::move(err);
    completed_ = true;
  }

 private:
  bool completed_ = false;
  std::exception_ptr error_;
};

// A Work that is already complete (zero-size ops, single-rank communicators, backends that
// only have blocking calls).
class CompletedWork final : public Work {
 public:
  explicit CompletedWork(std::exception_ptr err = nullptr) { mark_completed(std::move(err)); }
  void wait() override {
    if (error()) std::rethrow_exception(error());
  }
  bool test() override { return true; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend_name() const = 0;  // "mpi", "nccl"
  // A readable name used in error messages: "world", "world/split(color=1,key=0)", "dp", ...
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }

  // In place: buf[0..count) becomes the reduction over ranks.
  virtual std::shared_ptr<Work> iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) = 0;
  void all_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
    iall_reduce(buf, count, dtype, op)->wait();
  }

  // send holds size() * recv_count elements; rank r receives the reduction of block r.
  virtual std::shared_ptr<Work> ireduce_scatter(const void* send, void* recv, size_t recv_count,
                                                DType dtype, ReduceOp op) = 0;
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op) {
    ireduce_scatter(send, recv, recv_count, dtype, op)->wait();
  }

  // recv holds size() * send_count elements; block r comes from rank r. In place when
  // send == recv + rank() * send_count.
  virtual std::shared_ptr<Work> iall_gather(const void* send, void* recv, size_t send_count, DType dtype) = 0;
  void all_gather(const void* send, void* recv, size_t send_count, DType dtype) {
    iall_gather(send, recv, send_count, dtype)->wait();
  }

  // buf on `root` is copied to every rank.
  virtual std::shared_ptr<Work> ibroadcast(void* buf, size_t count, DType dtype, int root) = 0;
  void broadcast(void* buf, size_t count, DType dtype, int root) { ibroadcast(buf, count, dtype, root)->wait(); }

  virtual void barrier() = 0;

  // Blocks the host until every operation issued so far on this communicator has completed
  // (for device backends: on the device), rethrowing the first failure. Host backends whose
  // wait() already blocks the host need not override it: the default does nothing, so it
  // does not wait for dropped Works there. Device backends poll their deadline here.
  virtual void synchronize() {}

  // Like MPI_Comm_split: ranks with the same color form a new communicator, ordered by key
  // (ties by this communicator's rank). Collective over this communicator. color < 0 means
  // "no group": that rank gets nullptr. Outstanding ops of this communicator complete first.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // Ends the whole job now (MPI_Abort / ncclCommAbort + exit). Use when this rank cannot
  // continue and peers may be blocked in a collective.
  [[noreturn]] virtual void abort(int code) = 0;

 private:
  std::string name_ = "world";
};

// The world communicator: the host communicator of every rank, for control traffic on host
// memory (config, metrics, barriers, checkpoints) and the bootstrap of device communicators.
// It is always MPI: `backend` is parallel.backend ("auto", "mpi" or "nccl") and only
// validated here ("nccl" in a build without NCCL is an error, so a bad config fails early);
// NCCL carries device tensors, through make_device_communicator. Needs a live MpiEnv.
// communicator_factory.cc is the only file that knows the list of backends.
std::unique_ptr<Communicator> make_world_communicator(const std::string& backend);

// The communicator for tensors that live on `device`, over the same ranks as `host` (an MPI
// group such as the mesh's dp or tp group, or the world; collective over it). `host` must
// outlive the result.
//   CPU device: nullptr, meaning "use `host` itself" (any backend).
//   CUDA device, backend "nccl": NCCL bootstrapped over `host` (ncclUniqueId broadcast),
//     ordered after device.stream(); an error if two ranks of the group share a GPU.
//   "auto": NCCL, unless this build has no NCCL or two ranks of the group share one GPU
//     (found by gathering the devices' UUIDs over `host`): then host staging, with a log line.
//   "mpi": host staging around `host` (device -> pinned host copies, MPI, copies back).
// timeout_s > 0 is the deadline of the NCCL communicator's host-side waits and of the staging
// communicator's waits; 0 takes `host`'s when it is a TimeoutCommunicator (parallel.timeout_s),
// else no deadline. The result is named after `host`.
// Lives in communicator_factory.cc with the backend list.
std::unique_ptr<Communicator> make_device_communicator(Communicator& host, core::Device& device,
                                                       const std::string& backend, double timeout_s = 0);

}  // namespace mt::parallel
