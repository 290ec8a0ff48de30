// What: NcclCommunicator (see the header): the bootstrap over a host communicator, the ops
// (issued through NcclState, nccl_state.h: own stream, completion events, the Work, error
// handling that aborts before raising), split, and the benchmark baselines.
// NOT RUN ON A GPU YET: on the dev machine (no GPU) only nccl_unique_id_over() and the
// construction error path (cudaSetDevice -> 35 on every rank) have run. Every CUDA and NCCL
// status is checked and turned into an Error with the op, the communicator and the rank.
#include "parallel/nccl_communicator.h"
#include "parallel/nccl_state.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "parallel/collective_args.h"
#include "parallel/cuda_util.h"
#include "parallel/mpi_env.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 18, 0)
#error "meshtrain's NCCL communicator needs NCCL 2.18 or newer (ncclCommSplit, nonblocking init)"
#endif

namespace mt::parallel {

using namespace nccl_internal;
using detail::NcclState;
using detail::NcclWork;
using detail::OpRecord;

namespace {

// Every rank learns whether any rank failed a local step; all throw if one did (the failing
// rank its own error), so no rank proceeds into NCCL calls that its peers never make.
void agree(Communicator& host, std::exception_ptr mine, const std::string& step) {
  int32_t failed = mine ? 1 : 0;
  host.all_reduce(&failed, 1, DType::I32, ReduceOp::Sum);
  if (mine) std::rethrow_exception(mine);
  if (failed > 0)
    throw core::Error(fmt::format("{} of {} rank(s) of group '{}' failed to {}; this rank (rank {}) did not", failed,
                                  host.size(), host.name(), step, host.rank()))
        .with_hint("the failing ranks print their own error");
}

// Runs f, capturing its exception for agree().
template <class F>
std::exception_ptr capture(F&& f) {
  try {
    f();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

ncclConfig_t nonblocking_config(const std::string& name) {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;  // init, split and finalize return at once and are polled against deadlines
  cfg.commName = name.c_str();
  return cfg;
}

}  // namespace

NcclUniqueIdBytes nccl_unique_id_over(Communicator& host) {
  // [status, 32 x int32 of id]: a failure on rank 0 reaches every rank through the broadcast.
  std::array<int32_t, 1 + NCCL_UNIQUE_ID_BYTES / 4> buf{};
  static_assert(sizeof(ncclUniqueId) == NCCL_UNIQUE_ID_BYTES && NCCL_UNIQUE_ID_BYTES == 128, "ncclUniqueId size");
  std::exception_ptr err;
  if (host.rank() == 0) {
    ncclUniqueId id;
    const ncclResult_t rc = ncclGetUniqueId(&id);
    if (rc == ncclSuccess) {
      buf[0] = 1;
      std::memcpy(&buf[1], id.internal, NCCL_UNIQUE_ID_BYTES);
    } else {
      err = std::make_exception_ptr(nccl_error(rc, fmt::format("ncclGetUniqueId for group '{}'", host.name())));
    }
  }
  host.broadcast(buf.data(), buf.size(), DType::I32, 0);
  if (buf[0] != 1) {
    if (err) std::rethrow_exception(err);
    throw core::Error(fmt::format("rank 0 of group '{}' could not create the NCCL unique id (see its error)",
                                  host.name()));
  }
  NcclUniqueIdBytes out;
  std::memcpy(out.data(), &buf[1], NCCL_UNIQUE_ID_BYTES);
  return out;
}

int nccl_library_version() {
  int v = 0;
  const ncclResult_t rc = ncclGetVersion(&v);
  if (rc != ncclSuccess) throw nccl_error(rc, "ncclGetVersion");
  return v;
}
int nccl_header_version() { return NCCL_VERSION_CODE; }

NcclCommunicator::NcclCommunicator(Communicator& host, int cuda_device, void* compute_stream, NcclOptions opt)
    : st_(std::make_shared<NcclState>()) {
  NcclState& s = *st_;
  s.name = host.name();
  s.rank = host.rank();
  s.size = host.size();
  s.device = cuda_device;
  s.compute = static_cast<cudaStream_t>(compute_stream);
  s.opt = opt;
  set_name(host.name());

  // 1. Local CUDA set-up on every rank, then agreement: a rank without a usable GPU must not
  //    leave the others waiting in ncclCommInitRank.
  agree(host, capture([&] { s.setup_cuda(); }), "set up CUDA for an NCCL communicator");
  // 2. The unique id from rank 0.
  const NcclUniqueIdBytes id = nccl_unique_id_over(host);
  // 3. ncclCommInitRankConfig (nonblocking, polled against init_timeout_s), then agreement.
  auto init = [&] {
    ncclUniqueId uid;
    std::memcpy(uid.internal, id.data(), NCCL_UNIQUE_ID_BYTES);
    ncclConfig_t cfg = nonblocking_config(s.name);
    const std::string what = fmt::format("ncclCommInitRankConfig for NCCL communicator '{}' (rank {} of {}, CUDA "
                                         "device {})",
                                         s.name, s.rank, s.size, s.device);
    const ncclResult_t rc = ncclCommInitRankConfig(&s.comm, s.size, uid, s.rank, &cfg);
    if (rc != ncclSuccess && rc != ncclInProgress) s.fail(nccl_error(rc, what));
    s.wait_ready(what, opt.init_timeout_s);
  };
  agree(host, capture(init), "initialise NCCL (ncclCommInitRankConfig)");
  core::log::debug("NCCL communicator '{}': rank {} of {} on CUDA device {} (NCCL {})", s.name, s.rank, s.size,
                   s.device, nccl_library_version());
}

NcclCommunicator::NcclCommunicator(std::shared_ptr<NcclState> st) : st_(std::move(st)) { set_name(st_->name); }

NcclCommunicator::~NcclCommunicator() {
  NcclState& s = *st_;
  if (s.aborted || !s.comm) return;  // the state's destructor frees what is left
  cudaSetDevice(s.device);
  // Graceful: in-flight ops, then ncclCommFinalize (nonblocking, polled) and ncclCommDestroy.
  // A destructor must not throw or hang: any failure or a deadline falls back to abort.
  const double limit = s.opt.timeout_s > 0 ? s.opt.timeout_s : 60.0;
  try {
    NcclOptions saved = s.opt;
    s.opt.timeout_s = limit;
    s.wait_all();
    const ncclResult_t rc = ncclCommFinalize(s.comm);
    if (rc != ncclSuccess && rc != ncclInProgress) s.fail(nccl_error(rc, "ncclCommFinalize of '" + s.name + "'"));
    s.wait_ready("ncclCommFinalize of '" + s.name + "'", limit);
    s.opt = saved;
    const ncclResult_t d = ncclCommDestroy(s.comm);
    s.comm = nullptr;
    if (d != ncclSuccess) core::log::warn("ncclCommDestroy of '{}' returned {}", s.name, ncclGetErrorString(d));
  } catch (const std::exception& e) {
    core::log::warn("NCCL communicator '{}' torn down with ncclCommAbort: {}", s.name, e.what());
    s.abort_comm(e.what());
  }
}

int NcclCommunicator::rank() const { return st_->rank; }
int NcclCommunicator::size() const { return st_->size; }
int NcclCommunicator::cuda_device() const { return st_->device; }
bool NcclCommunicator::aborted() const { return st_->aborted; }
void* NcclCommunicator::raw_comm() const { return st_->comm; }
void* NcclCommunicator::raw_stream() const { return st_->stream; }
size_t NcclCommunicator::in_flight() const {
  st_->prune();
  return st_->inflight.size();
}

namespace {

// Issue protocol shared by the collectives: order after the compute stream, enqueue on the
// own stream, record the completion event.
// Inside group_start()/group_end() the NCCL call only queues the op: its completion event is
// recorded at group_end(), after the launch (recorded now, it would complete at once).
template <class Enqueue>
std::shared_ptr<Work> issue(const std::shared_ptr<NcclState>& sp, uint64_t seq, const char* op, size_t bytes,
                            const char* call, Enqueue&& enqueue, int peer = -1) {
  NcclState& s = *sp;
  s.prune();
  s.cuda(cudaEventRecord(s.issue_ev, s.compute), "cudaEventRecord(compute stream)", op, seq, bytes, peer);
  s.cuda(cudaStreamWaitEvent(s.stream, s.issue_ev, 0), "cudaStreamWaitEvent(NCCL stream)", op, seq, bytes, peer);
  s.nccl(enqueue(s.comm, s.stream), call, op, seq, bytes, peer);
  std::shared_ptr<OpRecord> rec;
  try {
    rec = std::make_shared<OpRecord>(seq, op, bytes, s.events);
  } catch (core::Error& e) {
    s.fail(e);
  }
  rec->peer = peer;
  if (s.group_depth > 0) {
    rec->launched = false;
    s.group_pending.push_back(rec);
  } else {
    s.cuda(cudaEventRecord(rec->done, s.stream), "cudaEventRecord(NCCL stream)", op, seq, bytes, peer);
  }
  s.inflight.push_back(rec);
  return std::make_shared<NcclWork>(sp, std::move(rec));
}

}  // namespace

std::shared_ptr<Work> NcclCommunicator::do_iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  st_->ensure_usable("all_reduce");
  check_reduce_op("all_reduce", dtype, op);
  const size_t bytes = count * dtype_size(dtype);
  if (count == 0) return std::make_shared<CompletedWork>();  // every rank skips NCCL alike; still numbered
  check_buffer(buf, "all_reduce", count, name());
  const ncclDataType_t t = nccl_type(dtype);
  const ncclRedOp_t o = nccl_op(op);
  return issue(st_, issuing().seq, "all_reduce", bytes, "ncclAllReduce", [&](ncclComm_t c, cudaStream_t s) {
    return ncclAllReduce(buf, buf, count, t, o, c, s);
  });
}

std::shared_ptr<Work> NcclCommunicator::do_ireduce_scatter(const void* send, void* recv, size_t recv_count,
                                                           DType dtype, ReduceOp op) {
  st_->ensure_usable("reduce_scatter");
  check_reduce_op("reduce_scatter", dtype, op);
  const size_t block = recv_count * dtype_size(dtype), bytes = block * size();
  if (recv_count == 0) return std::make_shared<CompletedWork>();
  check_reduce_scatter_buffers(send, recv, block, rank(), size(), name());
  const ncclDataType_t t = nccl_type(dtype);
  const ncclRedOp_t o = nccl_op(op);
  return issue(st_, issuing().seq, "reduce_scatter", bytes, "ncclReduceScatter", [&](ncclComm_t c, cudaStream_t s) {
    return ncclReduceScatter(send, recv, recv_count, t, o, c, s);
  });
}

std::shared_ptr<Work> NcclCommunicator::do_iall_gather(const void* send, void* recv, size_t send_count, DType dtype) {
  st_->ensure_usable("all_gather");
  const size_t block = send_count * dtype_size(dtype), bytes = block * size();
  if (send_count == 0) return std::make_shared<CompletedWork>();
  check_all_gather_buffers(send, recv, block, rank(), size(), name());
  const ncclDataType_t t = nccl_type(dtype);
  return issue(st_, issuing().seq, "all_gather", bytes, "ncclAllGather", [&](ncclComm_t c, cudaStream_t s) {
    return ncclAllGather(send, recv, send_count, t, c, s);
  });
}

std::shared_ptr<Work> NcclCommunicator::do_ibroadcast(void* buf, size_t count, DType dtype, int root) {
  st_->ensure_usable("broadcast");
  const size_t bytes = count * dtype_size(dtype);
  check_broadcast_root(root, size(), name());
  if (count == 0) return std::make_shared<CompletedWork>();
  check_buffer(buf, "broadcast", count, name());
  const ncclDataType_t t = nccl_type(dtype);
  return issue(st_, issuing().seq, "broadcast", bytes, "ncclBroadcast", [&](ncclComm_t c, cudaStream_t s) {
    return ncclBroadcast(buf, buf, count, t, root, c, s);
  });
}

std::shared_ptr<Work> NcclCommunicator::do_isend(const void* buf, size_t count, DType dtype, int peer, int) {
  st_->ensure_usable("send");
  const ncclDataType_t t = nccl_type(dtype);
  return issue(
      st_, issuing().seq, "send", count * dtype_size(dtype), "ncclSend",
      [&](ncclComm_t c, cudaStream_t s) { return ncclSend(buf, count, t, peer, c, s); }, peer);
}

std::shared_ptr<Work> NcclCommunicator::do_irecv(void* buf, size_t count, DType dtype, int peer, int) {
  st_->ensure_usable("recv");
  const ncclDataType_t t = nccl_type(dtype);
  return issue(
      st_, issuing().seq, "recv", count * dtype_size(dtype), "ncclRecv",
      [&](ncclComm_t c, cudaStream_t s) { return ncclRecv(buf, count, t, peer, c, s); }, peer);
}

void NcclCommunicator::do_group_start() {
  NcclState& s = *st_;
  s.ensure_usable("group_start");
  s.nccl(ncclGroupStart(), "ncclGroupStart", "group_start", 0, 0);
  ++s.group_depth;
}

void NcclCommunicator::do_group_end() {
  NcclState& s = *st_;
  s.ensure_usable("group_end");
  if (s.group_depth == 0)
    throw core::Error(fmt::format("group_end() on NCCL communicator '{}' (rank {} of {}) without group_start()",
                                  s.name, s.rank, s.size));
  --s.group_depth;
  // The outermost ncclGroupEnd launches the group; nonblocking: ncclInProgress is polled away.
  s.nccl(ncclGroupEnd(), "ncclGroupEnd", "group_end", 0, 0);
  if (s.group_depth > 0) return;
  std::vector<std::shared_ptr<OpRecord>> ops;
  ops.swap(s.group_pending);
  for (auto& r : ops) {
    s.cuda(cudaEventRecord(r->done, s.stream), "cudaEventRecord(NCCL stream)", r->op, r->seq, r->bytes, r->peer);
    r->launched = true;
  }
}

void NcclCommunicator::do_barrier() {
  st_->ensure_no_group("barrier");
  st_->ensure_usable("barrier");
  void* scratch = st_->scratch;
  issue(st_, issuing().seq, "barrier", 4, "ncclAllReduce", [&](ncclComm_t c, cudaStream_t s) {
    return ncclAllReduce(scratch, scratch, 1, ncclInt32, ncclSum, c, s);
  });
  st_->wait_all();
}

void NcclCommunicator::do_synchronize() {
  st_->ensure_usable("synchronize");
  st_->wait_all();
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  NcclState& s = *st_;
  s.ensure_no_group("split");
  s.ensure_usable("split");
  auto child = std::make_shared<NcclState>();
  child->name = fmt::format("{}/split(color={},key={})", s.name, color, key);
  child->device = s.device;
  child->compute = s.compute;
  child->opt = s.opt;
  ncclConfig_t cfg = nonblocking_config(child->name);
  const std::string what = fmt::format("ncclCommSplit(color={}, key={}) on NCCL communicator '{}' (rank {} of {})",
                                       color, key, s.name, s.rank, s.size);
  ncclComm_t nc = nullptr;
  // GPU-UNVERIFIED: a nonblocking split is polled on the parent and on the child (NCCL's
  // documented rule is the child); that NOCOLOR ranks get nc == nullptr with the parent back
  // to ncclSuccess, and a split in which every rank passes NOCOLOR (SplitEvenOddAndBarrier).
  const ncclResult_t rc = ncclCommSplit(s.comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &nc, &cfg);
  if (rc != ncclSuccess && rc != ncclInProgress) s.fail(nccl_error(rc, what));
  child->comm = nc;  // the child's state frees it if anything below throws
  // Nonblocking split: poll the parent and the child (NOCOLOR ranks get no child).
  const auto start = Clock::now();
  const double limit = s.opt.init_timeout_s;
  for (int spin = 0;; ++spin) {
    const bool parent_busy = s.state(what) == ncclInProgress;
    bool child_busy = false;
    if (nc) {
      try {
        child_busy = child->state(what) == ncclInProgress;
      } catch (core::Error& e) {
        s.fail(e);  // abort the parent too: its peers are inside the same split
      }
    }
    if (!parent_busy && !child_busy) break;
    if (limit > 0 && (spin & 63) == 0 && seconds_since(start) > limit) {
      child->abort_comm("split timed out");
      s.fail(core::Error(fmt::format("timed out after {:.0f} s waiting for {}", seconds_since(start), what)));
    }
    backoff(spin);
  }
  if (color < 0) {
    MT_CHECK(nc == nullptr, "ncclCommSplit with NCCL_SPLIT_NOCOLOR returned a communicator");
    return nullptr;
  }
  MT_CHECK(nc != nullptr, "{} returned no communicator", what);
  try {
    child->setup_cuda();
    int r = 0, n = 0;
    ncclResult_t q = ncclCommUserRank(nc, &r);
    if (q != ncclSuccess) throw nccl_error(q, "ncclCommUserRank of '" + child->name + "'");
    q = ncclCommCount(nc, &n);
    if (q != ncclSuccess) throw nccl_error(q, "ncclCommCount of '" + child->name + "'");
    child->rank = r;
    child->size = n;
  } catch (core::Error& e) {
    child->abort_comm(e.message());
    s.fail(e);
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(child)));
}

void NcclCommunicator::abort(int code) {
  st_->abort_comm(fmt::format("abort({}) called", code));
  MpiEnv::abort_job(code);
}

void nccl_raw_all_reduce_f32_sum(NcclCommunicator& c, float* buf, size_t count) {
  auto comm = static_cast<ncclComm_t>(c.raw_comm());
  auto stream = static_cast<cudaStream_t>(c.raw_stream());
  MT_CHECK(comm != nullptr, "raw ncclAllReduce on communicator '{}': no NCCL communicator (aborted?)", c.name());
  ncclResult_t rc = ncclAllReduce(buf, buf, count, ncclFloat32, ncclSum, comm, stream);
  while (rc == ncclInProgress) {  // nonblocking communicator: poll until enqueued
    ncclResult_t st = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(comm, &st);
    if (q != ncclSuccess) throw nccl_error(q, "ncclCommGetAsyncError (raw baseline)");
    rc = st;
  }
  if (rc != ncclSuccess) throw nccl_error(rc, "ncclAllReduce (raw baseline)");
}

void nccl_raw_stream_synchronize(NcclCommunicator& c) {
  const cudaError_t rc = cudaStreamSynchronize(static_cast<cudaStream_t>(c.raw_stream()));
  if (rc != cudaSuccess) throw cuda_error(rc, "cudaStreamSynchronize (raw baseline)");
}

}  // namespace mt::parallel
