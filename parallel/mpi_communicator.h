// What: the MPI backend of Communicator (CPU, host pointers). Every operation is
// nonblocking underneath and wrapped in a Work: the framework's own algorithms over
// MPI_Isend/MPI_Irecv (all_reduce: recursive doubling for small messages, ring
// reduce-scatter + all-gather for large ones; reduce_scatter and all_gather: the ring), or,
// by option, the library's MPI_Iallreduce / MPI_Ireduce_scatter_block / MPI_Iallgather for
// small ones; broadcast is MPI_Ibcast and barrier MPI_Ibarrier; send/recv are MPI_Isend /
// MPI_Irecv on a communicator of their own. A communicator whose ranks span hosts sends in
// pieces below the TCP eager limit (set_spans_hosts) and can run its all_reduce
// hierarchically (enable_hierarchy; parallel.allreduce, hierarchical.h).
// Why: Open MPI 4.1's nonblocking collectives (libnbc) run at half the speed of its blocking
// ones, and all of its collectives allocate a temporary per call, which from 32 MiB is a fresh
// mmap (~0.4 GB/s first touch here). The framework's algorithms keep their scratch in a pool
// that grows but never shrinks, pipeline receive + reduce, and send small messages in pieces
// under vader's eager limit. The measurements behind the defaults are in mpi_communicator.cc.
//
// All communicators split from one world share a progress engine: every call on any of them
// (and every Work::test/wait) advances every outstanding operation, which is what makes
// waiting in any order deadlock-free (see the contract in communicator.h). MPI errors come
// back as codes (MPI_ERRORS_RETURN on every communicator) and become mt::core::Error.
// bf16 (which MPI has no type for) is reduced by the framework's algorithms only, converting
// each pair to f32 and rounding back (see communicator.h): SmallAlgorithm::Library does not
// apply to it.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace mt::parallel {

// Who runs collectives smaller than ring_min_bytes.
enum class SmallAlgorithm {
  Framework,  // default: all_reduce by recursive doubling, reduce_scatter/all_gather by the ring,
              // both in eager-sized pieces (small_piece_bytes)
  Library,    // MPI_Iallreduce / MPI_Ireduce_scatter_block / MPI_Iallgather (libnbc in Open MPI 4.1)
};

// Algorithm choices. They must be identical on all ranks (all ranks must run the same
// algorithm for a collective); the defaults are measured, see mpi_communicator.cc.
struct MpiCommOptions {
  // all_reduce / reduce_scatter / all_gather whose whole array (count x size() for the latter
  // two) has at least this many bytes run as the framework's ring in segment_bytes pieces.
  size_t ring_min_bytes = 256u << 10;
  SmallAlgorithm small_algorithm = SmallAlgorithm::Framework;
  // Piece size of the framework's small collectives: below Open MPI vader's 4 KiB eager limit
  // (which includes its header), each piece is sent eagerly, without a rendezvous round trip.
  size_t small_piece_bytes = 4000;
  // Pipeline segment of the ring: a received segment is reduced while it is still in cache.
  size_t segment_bytes = 1u << 20;
  // Hierarchical communicators (enable_hierarchy): all_reduces of fewer bytes stay flat.
  // Small ones are latency-bound: recursive doubling takes log2(p) steps (with hosts in rank
  // order, the first ones inside a host), the hierarchical all-reduce one step more.
  size_t hier_min_bytes = 64u << 10;
  // ... and larger ones run in chunks of this many bytes, two in flight, so that one chunk
  // crosses the network while the next is reduced inside the host (0: one piece).
  size_t hier_chunk_bytes = 4u << 20;
  // Communicators whose ranks span hosts (set_spans_hosts; TCP between them) use these instead
  // of segment_bytes and small_piece_bytes: below Open MPI's TCP eager limit (64 KiB with its
  // header), so no message waits for a rendezvous round trip, which on a busy host costs a
  // scheduling delay of the receiver per message (measured: 1 MiB segments made the ring 1.5x
  // slower than MPI_Allreduce at 256 KiB - 4 MiB across 2 simulated hosts; 65000 B, faster).
  size_t net_segment_bytes = 65000;
  size_t net_piece_bytes = 65000;
};

// Overrides from the environment (tuning runs): MT_MPI_RING_MIN_BYTES, MT_MPI_SEGMENT_BYTES,
// MT_MPI_SMALL_PIECE_BYTES, MT_MPI_SMALL_ALGORITHM (framework | library), MT_MPI_HIER_MIN_BYTES,
// MT_MPI_NET_SEGMENT_BYTES, MT_MPI_NET_PIECE_BYTES, MT_MPI_HIER_CHUNK_BYTES.
// Every rank must see the same values (mpirun -x).
MpiCommOptions mpi_comm_options_from_env(MpiCommOptions base = {});

namespace detail {
class MpiEngine;
class MpiOp;
struct OpInfo;
}

class MpiCommunicator final : public Communicator {
 public:
  // A communicator over a duplicate of `comm` (the caller keeps `comm`); MPI must be active.
  MpiCommunicator(MPI_Comm comm, std::string name, MpiCommOptions opt = {});
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend_name() const override { return "mpi"; }

  std::unique_ptr<Communicator> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;

  MPI_Comm raw() const { return comm_; }  // the duplicated communicator (benchmarks, tests)
  const MpiCommOptions& options() const { return opt_; }
  // Operations issued on this communicator or its engine-mates that have not completed.
  size_t outstanding() const;
  // Bytes held by the engine's scratch pool (grows to the working set, never shrinks).
  size_t scratch_bytes() const;

  // Hierarchical all-reduce (parallel.allreduce; hierarchical.h decides and calls this).
  // Collective over this communicator: splits it into this rank's host group ("intra-host":
  // the ranks with the same `host` value, by rank) and its peers across hosts ("inter-host":
  // the ranks with the same `local_rank`, by rank). Every host must hold the same number of
  // ranks (the caller checks). From then on an all_reduce of at least hier_min_bytes runs as
  // reduce-scatter inside the host (shared memory), all-reduce of the rank's 1/local_size of
  // the array across hosts, all-gather inside the host: each element is still reduced in one
  // order, so every rank gets identical bits (which may differ in the last bits from the flat
  // algorithms': another summation order). Other collectives stay flat.
  void enable_hierarchy(int host, int local_rank);
  bool hierarchical() const { return intra_ != nullptr; }
  // The ranks sit on more than one host (hierarchical.h sets it from the host layout): the
  // flat algorithms then send in net_segment_bytes / net_piece_bytes pieces. Same on all ranks.
  void set_spans_hosts(bool v) { spans_hosts_ = v; }
  bool spans_hosts() const { return spans_hosts_; }
  const MpiCommunicator* intra_host() const { return intra_.get(); }  // null unless hierarchical
  const MpiCommunicator* inter_host() const { return inter_.get(); }

 protected:
  std::shared_ptr<Work> do_iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) override;
  std::shared_ptr<Work> do_ireduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                           ReduceOp op) override;
  std::shared_ptr<Work> do_iall_gather(const void* send, void* recv, size_t send_count, DType dtype) override;
  std::shared_ptr<Work> do_ibroadcast(void* buf, size_t count, DType dtype, int root) override;
  void do_barrier() override;
  // MPI_Isend / MPI_Irecv (in pieces of at most 1 GiB) on a duplicate of the communicator
  // reserved for them, so that the framework's algorithms' tags never match user messages.
  std::shared_ptr<Work> do_isend(const void* buf, size_t count, DType dtype, int peer, int tag) override;
  std::shared_ptr<Work> do_irecv(void* buf, size_t count, DType dtype, int peer, int tag) override;

 private:
  struct Adopt {};
  MpiCommunicator(Adopt, MPI_Comm owned, std::string name, MpiCommOptions opt,
                  std::shared_ptr<detail::MpiEngine> engine);
  bool large(size_t total_bytes, size_t count) const;
  // The flat all-reduce for this size (ring, recursive doubling or the library), not started.
  // library = false: the framework's algorithms only (their tags keep ops apart; the library's
  // nonblocking collectives must be issued in the same order on every rank).
  std::shared_ptr<detail::MpiOp> flat_all_reduce(void* buf, size_t count, DType dtype, ReduceOp op, uint32_t tag,
                                                 const char* what, bool library = true);
  std::shared_ptr<Work> hierarchical_all_reduce(void* buf, size_t count, DType dtype, ReduceOp op);
  std::shared_ptr<detail::MpiOp> hierarchical_piece(void* buf, size_t count, DType dtype, ReduceOp op);
  void dup_p2p();  // p2p_comm_ (collective)
  uint32_t next_tag();

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm p2p_comm_ = MPI_COMM_NULL;  // a duplicate of comm_ for send/recv only
  int rank_ = 0;
  int size_ = 1;
  MpiCommOptions opt_;
  uint64_t tag_seq_ = 0;  // collectives and splits issued so far (the tags); identical on all ranks
  std::shared_ptr<detail::MpiEngine> engine_;
  std::unique_ptr<MpiCommunicator> intra_, inter_;  // enable_hierarchy: same engine
  bool spans_hosts_ = false;
  size_t segment() const { return spans_hosts_ ? opt_.net_segment_bytes : opt_.segment_bytes; }
  size_t piece() const { return spans_hosts_ ? opt_.net_piece_bytes : opt_.small_piece_bytes; }
};

// Turns an MPI return code into mt::core::Error: "<op> failed: <bytes> bytes of <dtype> on
// communicator '<name>' (rank r of n)" + MPI_Error_string as the library message.
[[noreturn]] void throw_mpi_error(int code, const std::string& op, size_t bytes, const std::string& detail,
                                  const std::string& comm_name, int comm_rank, int comm_size);

}  // namespace mt::parallel
