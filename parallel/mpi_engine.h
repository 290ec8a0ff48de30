// What: the MPI backend's internals, shared by its two source files and included by nothing
// else: the progress engine (MpiEngine) that a world communicator and its splits share, the
// base of every operation (MpiOp: a Work the engine advances), what an operation is for
// error messages (OpInfo), the framework's algorithms (mpi_algorithms.cc: recursive doubling
// and the ring) as factories, and the reductions they and the library path apply.
// Why a header: mpi_communicator.cc picks an algorithm per call and issues the library's
// collectives; mpi_algorithms.cc implements the framework's own. Both drive the same engine.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "parallel/buffer_pool.h"
#include "parallel/communicator.h"
#include "parallel/mpi_communicator.h"

namespace mt::parallel::detail {

inline constexpr size_t kMaxMessageBytes = size_t(1) << 30;  // one MPI message (int counts of MPI_BYTE)

class MpiOp;

// Outstanding operations of a world communicator and all communicators split from it.
class MpiEngine {
 public:
  MpiEngine();  // its scratch pool: plain aligned host memory
  void start(const std::shared_ptr<MpiOp>& op);
  void progress();
  void wait_for(const MpiOp& op);
  void drain() {
    while (!active_.empty()) progress();
  }
  size_t outstanding(MPI_Comm c) const;
  size_t outstanding() const { return active_.size(); }
  BufferPool& pool() { return pool_; }

 private:
  std::vector<std::shared_ptr<MpiOp>> active_;
  BufferPool pool_;  // reused for the life of the engine: fresh pages are slow here (buffer_pool.h)
};

// What an operation is, for error messages (formatted only when an error happens).
struct OpInfo {
  const char* op = "";  // "all_reduce", ...
  size_t bytes = 0;     // bytes of the whole array involved
  DType dtype = DType::F32;
  int reduce = -1;      // ReduceOp as int, -1 if none
  int root = -1;        // broadcast root, -1 if none
  std::string comm_name;
  int rank = 0, size = 1;
  MPI_Comm comm = MPI_COMM_NULL;  // the communicator's (outstanding() counts by it)
  int peer = -1;                  // send/recv: the peer rank, else -1
  int tag = 0;                    // send/recv: the caller's tag

  std::string detail() const {
    if (bytes == 0 && root < 0 && peer < 0) return "";
    std::string s = fmt::format(" of {}", dtype_name(dtype));
    if (reduce >= 0) s += fmt::format(", {}", reduce_op_name(static_cast<ReduceOp>(reduce)));
    if (root >= 0) s += fmt::format(", root {}", root);
    if (peer >= 0) s += fmt::format(", {} rank {}, tag {}", op[0] == 's' ? "to" : "from", peer, tag);
    return s;
  }
};

class MpiOp : public Work {
 public:
  MpiOp(std::shared_ptr<MpiEngine> engine, OpInfo info) : engine_(std::move(engine)), info_(std::move(info)) {}
  void wait() override {
    engine_->wait_for(*this);
    if (error()) std::rethrow_exception(error());
  }
  bool test() override {
    engine_->progress();
    return completed();
  }
  // Engine side: advance without blocking; an exception completes the op with that error.
  void step() {
    if (completed()) return;
    try {
      advance();
    } catch (...) {
      release();
      mark_completed(std::current_exception());
    }
  }
  MPI_Comm comm() const { return info_.comm; }

 protected:
  virtual void advance() = 0;
  virtual void release() {}
  void finish() {
    release();
    mark_completed();
  }
  void check(int rc, const char* call) const {
    if (rc != MPI_SUCCESS)
      throw_mpi_error(rc, fmt::format("{} ({})", info_.op, call), info_.bytes, info_.detail(), info_.comm_name,
                      info_.rank, info_.size);
  }
  // One MPI_Test; true when the request is done (it is then MPI_REQUEST_NULL).
  bool test_request(MPI_Request& q) const {
    if (q == MPI_REQUEST_NULL) return true;
    int flag = 0;
    check(MPI_Test(&q, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    return flag != 0;
  }
  bool test_all(std::vector<MPI_Request>& qs) const {
    for (auto& q : qs)
      if (!test_request(q)) return false;
    return true;
  }

  std::shared_ptr<MpiEngine> engine_;
  OpInfo info_;
};

// ---- the framework's algorithms (mpi_algorithms.cc) ----

// Recursive doubling all-reduce of buf[0..count) in place, in messages of at most
// piece_bytes (latency-optimal: for small messages).
std::shared_ptr<MpiOp> make_recursive_doubling(std::shared_ptr<MpiEngine> engine, OpInfo info, DType dt, ReduceOp op,
                                               void* buf, size_t count, uint32_t tag, size_t piece_bytes);

// The ring, in segment_bytes pieces. AllReduce: data = buf (count elements), send unused.
// ReduceScatter: send = p*count elements, data = recv (count). AllGather: data = recv
// (p*count) with block rank already in place, send unused. AllReduceRS / AllReduceAG: the
// two halves of AllReduce on its block layout (ring_block), in place in buf (count elements):
// after AllReduceRS rank r holds the reduction of block r (others: partial sums); AllReduceAG
// sends block r to everyone (the hierarchical all-reduce runs its inter-host step between).
enum class RingKind { AllReduce, ReduceScatter, AllGather, AllReduceRS, AllReduceAG };
// Block b of the AllReduce layout of `count` elements of es bytes over p ranks: {offset, length}
// in elements (lengths may differ; the last ones may be 0).
std::pair<size_t, size_t> ring_block(size_t count, int p, size_t es, int b);

// An operation made of stages run one after the other (the hierarchical all-reduce:
// reduce-scatter inside the host, all-reduce across hosts, all-gather inside the host). Each
// stage is created when the previous one has completed (its tags drawn at issue time by the
// caller) and advanced by this op, not by the engine; an error in a stage completes the op.
std::shared_ptr<MpiOp> make_staged(std::shared_ptr<MpiEngine> engine, OpInfo info,
                                   std::vector<std::function<std::shared_ptr<MpiOp>()>> stages);
// Operations (not started) run `window` at a time in order, the next one starting when the
// oldest has completed: the hierarchical all-reduce in chunks, so that one chunk's inter-host
// stage overlaps the next one's intra-host stages.
std::shared_ptr<MpiOp> make_windowed(std::shared_ptr<MpiEngine> engine, OpInfo info,
                                     std::vector<std::shared_ptr<MpiOp>> ops, size_t window);
std::shared_ptr<MpiOp> make_ring(std::shared_ptr<MpiEngine> engine, OpInfo info, RingKind kind, DType dt, ReduceOp op,
                                 const void* send, void* data, size_t count, uint32_t tag, size_t segment_bytes);

// ---- reductions (mpi_algorithms.cc) ----
// dst[i] = a[i] (op) b[i] for op Sum or Max; dst may alias a. bf16 is reduced in f32 and
// rounded once per pair.
void reduce(DType t, ReduceOp op, void* dst, const void* a, const void* b, size_t n);
// Avg = Sum / d, element-wise (floating-point dtypes; others are left as they are).
void divide(DType t, void* p, size_t n, int d);

}  // namespace mt::parallel::detail
