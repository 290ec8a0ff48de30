// What: the inside of one NcclCommunicator, internal to nccl_communicator.cc: NcclState (the
// comm, its own high-priority stream, the issue event, the in-flight op records with their
// completion events), the deadline-checked waits that poll ncclCommGetAsyncError and abort
// before raising, NcclWork (wait = host wait with the deadline, wait_stream = the compute
// stream waits for the completion event), and the NCCL/CUDA status helpers.
// Why: nccl_communicator.cc keeps the Communicator API, the bootstrap and split; the state
// machine every op goes through lives here, one concern per file.
// NOT RUN ON A GPU YET (see nccl_communicator.cc).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "parallel/collective_args.h"
#include "parallel/cuda_util.h"
#include "parallel/nccl_communicator.h"

namespace mt::parallel {

namespace nccl_internal {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Polling back-off: spin briefly (an op about to finish), then yield, then sleep so a rank
// waiting on a slow peer does not burn the core its data loader or a co-located rank needs.
inline void backoff(int spin) {
  if (spin < 64) return;
  if (spin < 1024) std::this_thread::yield();
  else std::this_thread::sleep_for(std::chrono::microseconds(50));
}

inline ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::BF16: return ncclBfloat16;
  }
  MT_FAIL("dtype {} has no NCCL type", static_cast<int>(t));
}

inline ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;  // floating types: NCCL pre-multiplies by 1/n
    case ReduceOp::Max: return ncclMax;
  }
  MT_FAIL("reduce op {} has no NCCL op", static_cast<int>(op));
}

inline const char* nccl_hint(ncclResult_t rc) {
  switch (rc) {
    case ncclUnhandledCudaError:
      return "a CUDA call inside NCCL failed (NCCL_DEBUG=WARN prints which); check the GPU with nvidia-smi";
    case ncclSystemError:
      return "a system call or the network failed: NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET shows which; "
             "NCCL_SOCKET_IFNAME / NCCL_IB_HCA select the interfaces";
    case ncclRemoteError:
      return "a peer rank failed or disconnected: look for the first error of the job on another rank";
    case ncclInvalidUsage:
    case ncclInvalidArgument:
      return "NCCL rejected the call (two ranks on one GPU? mismatched collectives across ranks?); "
             "NCCL_DEBUG=WARN prints its reason";
    default:
      return "NCCL_DEBUG=WARN (or INFO) prints NCCL's own account of the failure";
  }
}

inline core::Error nccl_error(ncclResult_t rc, const std::string& what) {
  core::Error e(fmt::format("{} failed: {}", what, ncclGetErrorString(rc)));
  const char* last = ncclGetLastError(nullptr);
  e.with_library(fmt::format("NCCL {} (code {}){}{}", ncclGetErrorString(rc), static_cast<int>(rc),
                             last && *last ? ": " : "", last ? last : ""));
  e.with_hint(nccl_hint(rc));
  return e;
}

inline core::Error cuda_error(cudaError_t rc, const std::string& what) {
  try {
    cuda::throw_error(rc, what);
  } catch (core::Error& e) {
    return e;
  }
  return core::Error(what);  // not reached
}

// Completion events are reused: creating one per op costs a driver call.
class EventPool {
 public:
  ~EventPool() {
    for (cudaEvent_t e : free_) cudaEventDestroy(e);  // best effort at teardown
  }
  cudaEvent_t get() {
    if (free_.empty()) {
      cudaEvent_t e = nullptr;
      const cudaError_t rc = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
      if (rc != cudaSuccess) throw cuda_error(rc, "cudaEventCreateWithFlags");
      return e;
    }
    cudaEvent_t e = free_.back();
    free_.pop_back();
    return e;
  }
  void put(cudaEvent_t e) { free_.push_back(e); }

 private:
  std::vector<cudaEvent_t> free_;
};

}  // namespace nccl_internal

namespace detail {

using namespace nccl_internal;

// One issued op: what it was (for messages) and its completion event on the own stream.
struct OpRecord {
  OpRecord(uint64_t s, const char* o, size_t b, std::shared_ptr<EventPool> p)
      : seq(s), op(o), bytes(b), pool(std::move(p)) {
    done = pool->get();
  }
  ~OpRecord() {
    if (done) pool->put(done);
  }
  OpRecord(const OpRecord&) = delete;
  OpRecord& operator=(const OpRecord&) = delete;
  uint64_t seq;
  const char* op;
  size_t bytes;
  std::shared_ptr<EventPool> pool;
  cudaEvent_t done = nullptr;
  bool finished = false;
  int peer = -1;          // send/recv: the peer rank
  bool launched = true;   // false while inside group_start()/group_end(): `done` not recorded yet
};

struct NcclState {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;   // own, non-blocking, highest priority
  cudaStream_t compute = nullptr;  // the caller's; not owned
  cudaEvent_t issue_ev = nullptr;  // recorded on `compute` at each issue
  void* scratch = nullptr;         // 16 device bytes for barrier()
  int device = 0, rank = 0, size = 1;
  std::string name;
  NcclOptions opt;
  bool aborted = false;
  std::string abort_reason;
  std::shared_ptr<EventPool> events = std::make_shared<EventPool>();
  std::deque<std::shared_ptr<OpRecord>> inflight;
  int group_depth = 0;                                   // open group_start()s
  std::vector<std::shared_ptr<OpRecord>> group_pending;  // issued in the open group, not launched

  ~NcclState() { release(); }

  std::string where(const char* op, uint64_t s, size_t bytes, int peer = -1) const {
    if (peer >= 0)  // send/recv: the peer says more than the local p2p number
      return fmt::format("{} {} rank {} ({} bytes) on NCCL communicator '{}' (rank {} of {})", op,
                         op[0] == 's' ? "to" : "from", peer, bytes, name, rank, size);
    return fmt::format("{} #{} ({} bytes) on NCCL communicator '{}' (rank {} of {})", op, s, bytes, name, rank, size);
  }

  // Host waits inside an open group would wait for ops that are launched only at group_end().
  void ensure_no_group(const char* op) const {
    if (group_depth > 0)
      throw core::Error(fmt::format("{} on NCCL communicator '{}' (rank {} of {}) inside group_start()/group_end(): "
                                    "the group's ops are launched only at group_end()",
                                    op, name, rank, size))
          .with_hint("call group_end() before waiting");
  }

  // Own stream, issue event and barrier scratch on `device` (made current).
  void setup_cuda() {
    auto check = [&](cudaError_t rc, const std::string& call) {
      if (rc != cudaSuccess)
        throw cuda_error(rc, fmt::format("{} for NCCL communicator '{}' (rank {} of {}, CUDA device {})", call, name,
                                         rank, size, device));
    };
    check(cudaSetDevice(device), fmt::format("cudaSetDevice({})", device));
    int lo = 0, hi = 0;
    check(cudaDeviceGetStreamPriorityRange(&lo, &hi), "cudaDeviceGetStreamPriorityRange");
    check(cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, hi), "cudaStreamCreateWithPriority");
    check(cudaEventCreateWithFlags(&issue_ev, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check(cudaMalloc(&scratch, 16), "cudaMalloc(16 bytes)");
    check(cudaMemset(scratch, 0, 16), "cudaMemset");
  }

  // Frees CUDA resources; aborts the comm if it still exists (teardown without ceremony).
  void release() {
    if (comm) {
      ncclCommAbort(comm);
      comm = nullptr;
    }
    inflight.clear();
    if (scratch) cudaFree(scratch);
    if (issue_ev) cudaEventDestroy(issue_ev);
    if (stream) cudaStreamDestroy(stream);
    scratch = nullptr;
    issue_ev = nullptr;
    stream = nullptr;
  }

  // ncclCommAbort once: this rank's NCCL kernels stop and its resources are freed.
  // GPU-UNVERIFIED: that ncclCommAbort returns while this rank's kernel spins on a peer that
  // never arrives (the late-peer case of tests/cuda_mpi/nccl_communicator_test.cc, Deadline...),
  // and that the op's completion event then completes, so a compute stream that waits on it
  // (Work::wait_stream) drains and the Error reaches main (MPI_Abort) instead of a hang.
  void abort_comm(const std::string& reason) {
    if (aborted) return;
    aborted = true;
    abort_reason = reason;
    if (comm) {
      const ncclResult_t rc = ncclCommAbort(comm);
      if (rc != ncclSuccess && rc != ncclInProgress)
        core::log::warn("ncclCommAbort on communicator '{}' returned {}", name, ncclGetErrorString(rc));
      comm = nullptr;
    }
  }

  // Abort, then throw `e`, saying the abort happened (the job must end: launch/ calls
  // MPI_Abort for any error that reaches it).
  [[noreturn]] void fail(const core::Error& e) {
    abort_comm(e.message());
    throw core::Error(e.message() + " [ncclCommAbort called on this rank]", e.context());
  }

  void ensure_usable(const char* op) const {
    if (aborted)
      throw core::Error(fmt::format("{} on NCCL communicator '{}' (rank {} of {}): the communicator was aborted "
                                    "after an earlier error: {}",
                                    op, name, rank, size, abort_reason))
          .with_hint("the first error of this rank is the one to look at");
    if (!comm)
      throw core::Error(fmt::format("{} on NCCL communicator '{}': the communicator has been destroyed", op, name));
  }

  void cuda(cudaError_t rc, const char* call, const char* op, uint64_t s, size_t bytes, int peer = -1) {
    if (rc != cudaSuccess) fail(cuda_error(rc, fmt::format("{} in {}", call, where(op, s, bytes, peer))));
  }

  // The communicator's asynchronous state; a failure aborts and throws.
  ncclResult_t state(const std::string& what) {
    ncclResult_t st = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm, &st);
    if (rc != ncclSuccess) fail(nccl_error(rc, "ncclCommGetAsyncError in " + what));
    if (st != ncclSuccess && st != ncclInProgress) fail(nccl_error(st, what + " (asynchronous NCCL error)"));
    return st;
  }

  // After a nonblocking-mode call returned ncclInProgress: poll until the communicator is
  // ready again (the op is then enqueued), within `deadline_s` (0 = none).
  void wait_ready(const std::string& what, double deadline_s) {
    const auto start = Clock::now();
    for (int spin = 0; state(what) == ncclInProgress; ++spin) {
      if (deadline_s > 0 && (spin & 63) == 0 && seconds_since(start) > deadline_s)
        fail(core::Error(fmt::format("timed out after {:.0f} s waiting for {} (ncclInProgress)", seconds_since(start),
                                     what)));
      backoff(spin);
    }
  }

  void nccl(ncclResult_t rc, const char* call, const char* op, uint64_t s, size_t bytes, int peer = -1) {
    if (rc == ncclSuccess) return;
    const std::string what = fmt::format("{} in {}", call, where(op, s, bytes, peer));
    if (rc == ncclInProgress) return wait_ready(what, opt.timeout_s);
    fail(nccl_error(rc, what));
  }

  // true once `r` completed; a CUDA error (the event's, or a sticky one) or an asynchronous
  // NCCL error aborts and throws.
  bool poll(OpRecord& r) {
    if (r.finished) return true;
    if (!r.launched) return false;  // in an open group: an unrecorded event would read as complete
    const cudaError_t q = cudaEventQuery(r.done);
    if (q == cudaSuccess) return r.finished = true;
    if (q != cudaErrorNotReady) fail(cuda_error(q, "cudaEventQuery in " + where(r.op, r.seq, r.bytes, r.peer)));
    clear_not_ready();
    state(where(r.op, r.seq, r.bytes, r.peer));
    return false;
  }

  // cudaErrorNotReady is a status, not an error, but whether the runtime also leaves it as
  // the thread's last error is not documented; PyTorch clears it after every query. The CUDA
  // kernels' launchers return cudaGetLastError() and would report a stale one as their own
  // launch failure (GradSync polls these events between backward kernels), so clear it here.
  // Launch errors are checked right after each launch, so nothing else is pending to lose.
  static void clear_not_ready() { (void)cudaGetLastError(); }

  // Forgets completed ops at the front (one stream: they complete in order).
  void prune() {
    while (!inflight.empty()) {
      OpRecord& r = *inflight.front();
      if (!r.launched) return;  // an open group's ops (and everything after them)
      if (!r.finished) {
        const cudaError_t q = cudaEventQuery(r.done);
        if (q == cudaErrorNotReady) clear_not_ready();
        if (q != cudaSuccess) return;  // errors are reported by poll()
        r.finished = true;
      }
      inflight.pop_front();
    }
  }

  // Host waits until `r` has completed, polling its event and the communicator's
  // asynchronous errors; past timeout_s (counted from `start`) it aborts and throws.
  void wait_for(OpRecord& r, Clock::time_point start) {
    if (!r.launched) ensure_no_group(r.op);
    for (int spin = 0; !poll(r); ++spin) {
      if (opt.timeout_s > 0 && (spin & 63) == 0 && seconds_since(start) > opt.timeout_s && r.peer >= 0)
        fail(core::Error(fmt::format("{} {} rank {} ({} bytes) on communicator '{}' (rank {} of {}) timed out after "
                                     "{:.0f} s, NCCL backend: the peer is dead or stuck, or never posted the "
                                     "matching {} (or issued its ops in another order)",
                                     r.op, r.op[0] == 's' ? "to" : "from", r.peer, r.bytes, name, rank, size,
                                     seconds_since(start), r.op[0] == 's' ? "recv" : "send"))
                 .with_hint("look at what rank " + std::to_string(r.peer) +
                            " of this communicator was doing (parallel.timeout_s sets the limit)"));
      if (opt.timeout_s > 0 && (spin & 63) == 0 && seconds_since(start) > opt.timeout_s)
        fail(core::Error(fmt::format("timed out after {:.0f} s waiting in {} #{} ({} bytes) on communicator '{}' "
                                     "(rank {} of {}), NCCL backend",
                                     seconds_since(start), r.op, r.seq, r.bytes, name, rank, size))
                 .with_hint("a peer rank probably died or stopped progressing (parallel.timeout_s sets the "
                            "limit)"));
      backoff(spin);
    }
  }

  // Host waits for every op issued so far, one deadline for all of them.
  void wait_all() {
    ensure_no_group("synchronize");
    const auto start = Clock::now();
    while (!inflight.empty()) {
      wait_for(*inflight.front(), start);
      inflight.pop_front();
    }
  }
};

// The Work of an op: test() queries its completion event; wait() blocks the host until it has
// completed (deadline, asynchronous errors, ncclCommAbort before raising, as synchronize());
// wait_stream() orders the compute stream after it and returns without blocking the host.
class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclState> st, std::shared_ptr<OpRecord> rec) : st_(std::move(st)), rec_(std::move(rec)) {}

  bool test() override {
    if (completed()) return true;
    if (!rec_->launched) return false;  // issued in a group that has not ended yet
    try {
      st_->ensure_usable(rec_->op);
      if (!st_->poll(*rec_)) return false;
      mark_completed();
    } catch (...) {
      mark_completed(std::current_exception());
    }
    return true;
  }

  void wait() override {
    if (!completed()) {
      if (!rec_->launched) st_->ensure_no_group("wait");  // a usage error: the op stays valid
      try {
        st_->ensure_usable(rec_->op);
        st_->wait_for(*rec_, Clock::now());
        mark_completed();
      } catch (...) {
        // A timeout or a failure has aborted the communicator: the op will not complete.
        mark_completed(std::current_exception());
      }
    }
    if (error()) std::rethrow_exception(error());
  }

  void wait_stream() override {
    if (!completed()) {
      if (!rec_->launched) st_->ensure_no_group("wait_stream");
      try {
        st_->ensure_usable(rec_->op);
        if (st_->poll(*rec_)) {
          mark_completed();  // already done: nothing to order
        } else {
          // Later work on the compute stream sees the result; the host goes on at once.
          st_->cuda(cudaStreamWaitEvent(st_->compute, rec_->done, 0), "cudaStreamWaitEvent(compute stream)",
                    rec_->op, rec_->seq, rec_->bytes, rec_->peer);
        }
      } catch (...) {
        mark_completed(std::current_exception());
      }
    }
    if (error()) std::rethrow_exception(error());
  }

 private:
  std::shared_ptr<NcclState> st_;
  std::shared_ptr<OpRecord> rec_;
};

}  // namespace detail

}  // namespace mt::parallel
