// What: the Communicator interface (all_reduce, reduce_scatter, all_gather, broadcast,
// barrier, split, abort; point-to-point send/recv), its async Work handle (wait, wait_stream, test), the statistics
// every communicator keeps (CommStats: ops, bytes, time blocked), and the factory that picks
// a backend.
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
//   the caller until its Work completes (wait() returned or test() returned true; for work
//   queued on the device's compute stream, wait_stream() returned). Dropping a
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
// Waits. Work::wait() blocks the host until the operation is complete, on every backend (on
//   a device backend: complete on the device, so the host may then read the buffers, e.g. with
//   Device::copy, and later device work sees the result), and rethrows its error. It is where
//   deadlines apply. Work::wait_stream() only orders the device's compute stream after the
//   operation, without blocking the host: kernels queued on the compute stream afterwards see
//   the result, the host must not read the buffers. Host backends have no stream to order, so
//   there wait_stream() is wait(). Rule of thumb: wait_stream() for a result that only later
//   device work consumes (a tensor-parallel all-reduce in the middle of the forward), wait()
//   for one the host reads or blocks behind (a loss, a norm, the end of a step). There is no
//   other rule for callers: no synchronize() is needed before a host wait on the device if
//   the last op was waited with wait(). synchronize() still exists (every op issued so far;
//   on device backends dropped Works included).
// Numbering and statistics. The base class numbers the operations of each communicator (a
//   sequence number per collective or barrier, 0, 1, ... in issue order, identical on all
//   ranks), counts their bytes and adds the host time spent blocked in Work::wait() /
//   wait_stream(), synchronize() and barrier() to stats() (CommStats), for every backend.
//   The public collectives are non-virtual; backends implement the protected do_* hooks.
//   Each Work a communicator returns knows its op(), seq() and bytes().
// Timeouts. Host backends do not time out on their own: a peer that never joins a collective
//   blocks wait() forever; TimeoutCommunicator (timeout_communicator.h) gives them deadlines.
//   The NCCL backend has its own, applied in every host-side wait: Work::wait(),
//   synchronize(), barrier(), split(). The job-level guards remain the launcher's
//   (mpirun/srun time limits, ctest TIMEOUT) and abort() from a rank that failed.
// Device backends (NCCL: nccl_communicator.h). Ops are enqueued on the communicator's own
//   stream, ordered after the compute stream's pending work by an event recorded at issue
//   time, and record a completion event. Work::wait() polls that event on the host, with the
//   communicator's deadline and its checks for asynchronous failures (ncclCommGetAsyncError);
//   Work::wait_stream() makes the compute stream wait for it (cudaStreamWaitEvent) and returns
//   at once; Work::test() queries it. synchronize() blocks the host until every op issued so
//   far is done, with the same polling. Failures surface through Work::error()/wait()/
//   synchronize(), always after ncclCommAbort so that this rank's kernels stop. abort() maps
//   to ncclCommAbort + MPI_Abort. Pointers are device pointers; nothing else in the caller
//   changes. A host wait on the device (Device::copy, Device::synchronize) behind ops that
//   were only wait_stream()ed has no deadline: wait() the last of them first (the ops of one
//   NCCL communicator complete in issue order, on its stream) or synchronize(). Host staging
//   (staging_communicator.h) presents a host backend to device pointers: its ops copy
//   device -> pinned host, reduce over MPI and copy back, so its waits block the host like
//   the MPI backend's.
// Point-to-point (isend/irecv/send/recv; pipeline parallelism). Not collective: only the two
//   ranks involved call them, and they take no collective sequence number. `peer` is a rank
//   of this communicator other than rank(); 0 <= tag <= 32767 (the least MPI guarantees);
//   anything else is an error at issue. Matching: a recv matches a send from `peer` with the
//   same tag; messages between one pair of ranks with the same tag are matched in issue
//   order (MPI's non-overtaking rule). The receiver's count and dtype must equal the
//   sender's (a size mismatch is an error on the receiving side where the backend can see
//   it: MPI, staging). Count 0 is a valid no-op on both sides (both must pass 0: nothing goes
//   over the wire). Buffers follow the rules above: a send's buffer must not be written, a
//   recv's not read or written, until the Work completes. Issue never waits for the peer.
//   Host backends (MPI, staging): tags separate messages (different tags do not constrain
//   each other's order), p2p ops may interleave with collectives differently on the two
//   ranks, and every posted send and recv progresses in any call on the backend, so any set
//   of p2p ops posted on all ranks before anyone waits completes whatever the order of the
//   waits (a ring, a pairwise exchange in both directions: post both, then wait). But a
//   send's wait() may block until the receiver has posted its recv (large messages go by
//   rendezvous), so two ranks that each wait on (or call the blocking) send() to the other
//   before posting their recv deadlock, as in MPI.
//   Device backends (NCCL) are stricter: NCCL has no tags (they are only checked and
//   reported), and ops run in issue order on the communicator's one stream, where a send
//   waits for its recv and a collective for every rank. So each rank's sequence of p2p ops
//   and collectives must match its peers' in order, like blocking MPI calls (rank a: send,
//   recv; rank b: recv, send), and recvs from one peer are matched to its sends in issue
//   order whatever the tags. An exchange in which both ranks send first (or any set of p2p
//   ops that must progress together) must be issued inside one group_start()/group_end()
//   (ncclGroupStart/End: they become one launch). group_start()/group_end() are no-ops on
//   host backends, so code written for NCCL runs unchanged there. Nothing issued inside a
//   group may be waited for (wait, wait_stream, synchronize, barrier, split) before the
//   outermost group_end(): the ops are launched only then.
//   Statistics: p2p ops count into stats().bytes (count x dtype size, sent or received) and
//   blocked_s like collectives, and into their own p2p_ops / p2p_bytes; a p2p Work's seq() is
//   its number among this communicator's p2p ops on this rank (0, 1, ...: local, not matched
//   across ranks), its peer() and tag() say where it goes. Deadlines (TimeoutCommunicator,
//   NCCL) apply to p2p waits; their errors name the op and the peer ("recv from rank 2").
// ------------------------------------------------------------------------------------------
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>
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
  // Blocks the host until the operation is complete (on a device backend: on the device),
  // progressing every outstanding op of the backend, and rethrows the error the operation
  // failed with. Deadlines apply here (TimeoutCommunicator, NCCL): past one it throws, and the
  // operation may still be in flight (NCCL: aborted first). Calling it again returns (or
  // rethrows) at once.
  virtual void wait() = 0;
  // Orders the device's compute stream after the operation without blocking the host (NCCL:
  // cudaStreamWaitEvent); later kernels on that stream see the result, the host must not
  // read the buffers before wait() or test() says the op is complete. Rethrows an error
  // already known. Host backends have no stream to order: the default is wait().
  virtual void wait_stream() { wait(); }
  // Progresses outstanding ops; true once this one has completed (successfully or not).
  // Does not throw for a failed operation: see error().
  virtual bool test() = 0;
  // The error the operation completed with, or null.
  virtual std::exception_ptr error() const { return error_; }
  bool completed() const { return completed_; }

  // What the operation is, on the Works a Communicator returns (a backend's own inner Works
  // leave them empty): "all_reduce", "reduce_scatter", "all_gather", "broadcast", "send" or
  // "recv"; its sequence number on its communicator (collectives: 0, 1, ... in issue order,
  // the same on every rank; send/recv: 0, 1, ... among this rank's p2p ops, local); its
  // bytes, as counted in CommStats; for send/recv the peer rank and the tag (else -1, 0).
  const char* op() const { return op_; }
  uint64_t seq() const { return seq_; }
  size_t bytes() const { return bytes_; }
  int peer() const { return peer_; }
  int tag() const { return tag_; }

 protected:
  // Backends call this exactly once when the operation is over.
  void mark_completed(std::exception_ptr err = nullptr) {
    error_ = std::move(err);
    completed_ = true;
  }
  void describe(const char* op, uint64_t seq, size_t bytes) {
    op_ = op;
    seq_ = seq;
    bytes_ = bytes;
  }
  void describe_peer(int peer, int tag) {
    peer_ = peer;
    tag_ = tag;
  }

 private:
  bool completed_ = false;
  std::exception_ptr error_;
  const char* op_ = "";
  uint64_t seq_ = 0;
  size_t bytes_ = 0;
  int peer_ = -1;
  int tag_ = 0;
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

// What a communicator has done so far (Communicator::stats()); kept by the base class, so
// every backend reports the same quantities.
struct CommStats {
  uint64_t ops = 0;      // collectives and barriers issued: the next sequence number
  double bytes = 0;      // their bytes: all_reduce and broadcast count x dtype size,
                         // reduce_scatter and all_gather the whole array (count x size() x
                         // dtype size), barrier 0; plus the p2p bytes below
  uint64_t p2p_ops = 0;  // sends and recvs issued (not in `ops`): the next p2p number
  double p2p_bytes = 0;  // their bytes, count x dtype size each (sent + received)
  double blocked_s = 0;  // host seconds spent in Work::wait() / wait_stream() of its Works,
                         // synchronize() and barrier() (the exposed communication time)
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

  // The collectives are non-virtual: they number the op, count it in stats() and return a
  // Work that knows its op, sequence number and bytes and adds the host time blocked in
  // wait()/wait_stream() to stats(); the backend's do_* hook does the op. An op whose issue
  // throws (bad arguments) gets no number.

  // In place: buf[0..count) becomes the reduction over ranks.
  std::shared_ptr<Work> iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op);
  void all_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
    iall_reduce(buf, count, dtype, op)->wait();
  }

  // send holds size() * recv_count elements; rank r receives the reduction of block r.
  std::shared_ptr<Work> ireduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op);
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op) {
    ireduce_scatter(send, recv, recv_count, dtype, op)->wait();
  }

  // recv holds size() * send_count elements; block r comes from rank r. In place when
  // send == recv + rank() * send_count.
  std::shared_ptr<Work> iall_gather(const void* send, void* recv, size_t send_count, DType dtype);
  void all_gather(const void* send, void* recv, size_t send_count, DType dtype) {
    iall_gather(send, recv, send_count, dtype)->wait();
  }

  // buf on `root` is copied to every rank.
  std::shared_ptr<Work> ibroadcast(void* buf, size_t count, DType dtype, int root);
  void broadcast(void* buf, size_t count, DType dtype, int root) { ibroadcast(buf, count, dtype, root)->wait(); }

  // Point-to-point (see "Point-to-point" in the contract above). Nonblocking: the Work
  // completes when the buffer may be reused (send) or holds the message (recv).
  std::shared_ptr<Work> isend(const void* buf, size_t count, DType dtype, int peer, int tag = 0);
  std::shared_ptr<Work> irecv(void* buf, size_t count, DType dtype, int peer, int tag = 0);
  void send(const void* buf, size_t count, DType dtype, int peer, int tag = 0) {
    isend(buf, count, dtype, peer, tag)->wait();
  }
  void recv(void* buf, size_t count, DType dtype, int peer, int tag = 0) { irecv(buf, count, dtype, peer, tag)->wait(); }
  // Brackets ops to be launched together (NCCL: ncclGroupStart/End, needed for crossing
  // sends and recvs); no-ops on host backends. Nestable; nothing issued inside may be waited
  // for before the outermost group_end().
  void group_start() { do_group_start(); }
  void group_end() { do_group_end(); }

  // Blocks the host until every rank has entered the barrier (with the backend's deadline).
  // Numbered and timed like a collective of 0 bytes.
  void barrier();

  // Blocks the host until every operation issued so far on this communicator has completed
  // (for device backends: on the device; NCCL and host staging include dropped Works, the
  // MPI backend, whose waits already block the host, does nothing), rethrowing the first
  // failure. Timed into stats().blocked_s.
  void synchronize();

  // Like MPI_Comm_split: ranks with the same color form a new communicator, ordered by key
  // (ties by this communicator's rank). Collective over this communicator. color < 0 means
  // "no group": that rank gets nullptr. Outstanding ops of this communicator complete first.
  // The new communicator numbers its ops from 0 and has its own stats().
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // Ends the whole job now (MPI_Abort / ncclCommAbort + exit). Use when this rank cannot
  // continue and peers may be blocked in a collective.
  [[noreturn]] virtual void abort(int code) = 0;

  const CommStats& stats() const { return *stats_; }

 protected:
  // The backends' operations, called by the public functions above with the same arguments.
  // They return the backend's own Work (the base wraps it).
  virtual std::shared_ptr<Work> do_iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) = 0;
  virtual std::shared_ptr<Work> do_ireduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                                   ReduceOp op) = 0;
  virtual std::shared_ptr<Work> do_iall_gather(const void* send, void* recv, size_t send_count, DType dtype) = 0;
  virtual std::shared_ptr<Work> do_ibroadcast(void* buf, size_t count, DType dtype, int root) = 0;
  virtual void do_barrier() = 0;
  // Point-to-point: called with valid arguments only (the base checks peer, tag and buffer)
  // and count > 0 (the base completes zero counts itself).
  virtual std::shared_ptr<Work> do_isend(const void* buf, size_t count, DType dtype, int peer, int tag) = 0;
  virtual std::shared_ptr<Work> do_irecv(void* buf, size_t count, DType dtype, int peer, int tag) = 0;
  virtual void do_group_start() {}
  virtual void do_group_end() {}
  // Host backends whose wait() already blocks the host need not override it: the default does
  // nothing (it does not wait for dropped Works there). Device backends poll their deadline.
  virtual void do_synchronize() {}

  // The op being issued, valid inside the do_* hooks (for the backends' error messages): its
  // name, its sequence number and its bytes as above; for send/recv the peer and tag.
  struct Issuing {
    const char* op = "";
    uint64_t seq = 0;
    size_t bytes = 0;
    int peer = -1;
    int tag = 0;
  };
  const Issuing& issuing() const { return issuing_; }

 private:
  // Wraps the backend's Work: numbered, counted, its waits timed.
  std::shared_ptr<Work> wrap_op(std::shared_ptr<Work> w);
  void start_op(const char* op, size_t bytes);
  std::shared_ptr<Work> p2p(const char* op, const void* buf, size_t count, DType dtype, int peer, int tag);

  std::string name_ = "world";
  std::shared_ptr<CommStats> stats_ = std::make_shared<CommStats>();  // shared with the Works
  Issuing issuing_;
};

// The world communicator: the host communicator of every rank, for control traffic on host
// memory (config, metrics, barriers, checkpoints) and the bootstrap of device communicators.
// It is always MPI: `backend` is parallel.backend ("auto", "mpi" or "nccl") and only
// validated here ("nccl" in a build without NCCL is an error, so a bad config fails early);
// NCCL carries device tensors, through make_device_communicator. Needs a live MpiEnv.
// communicator_factory.cc is the only file that knows the list of backends.
// Collective over MPI_COMM_WORLD: its ranks are ordered host by host (placement.h:
// host_major_order of the ranks' hostnames; launcher rank 0 stays rank 0), so that the mesh's
// adjacent tp ranks share a host whatever order the launcher numbered them in; log lines and
// errors are stamped with this rank.
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

// `root`'s string on every rank of `c` (its length, then its bytes): collective.
std::string broadcast_string(Communicator& c, std::string s, int root = 0);
// Collective: every rank's `mine`, index = rank (host names and the like: each compared and
// kept up to its first max_bytes - 1 bytes; max_bytes a multiple of 4).
std::vector<std::string> all_gather_strings(Communicator& c, const std::string& mine, size_t max_bytes = 256);

}  // namespace mt::parallel
