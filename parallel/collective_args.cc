// What: the argument checks shared by the communicator backends (see the header).
#include "parallel/collective_args.h"

#include "core/error.h"

namespace mt::parallel {

namespace {
bool overlaps(const void* a, size_t an, const void* b, size_t bn) {
  const auto* pa = static_cast<const std::byte*>(a);
  const auto* pb = static_cast<const std::byte*>(b);
  return an > 0 && bn > 0 && pa < pb + bn && pb < pa + an;
}
}  // namespace

void check_reduce_op(const char* op_name, DType dt, ReduceOp op) {
  if (op == ReduceOp::Avg && !is_floating(dt))
    throw core::Error(fmt::format("{} with op avg needs a floating-point dtype, got {}", op_name, dtype_name(dt)))
        .with_hint("use sum and divide yourself, or reduce in f64")
        .with_where(__FILE__, __LINE__);
}

void check_buffer(const void* buf, const char* op_name, size_t count, const std::string& comm_name) {
  MT_CHECK(buf != nullptr, "{} of {} elements on communicator '{}' got a null buffer", op_name, count, comm_name);
}

bool check_reduce_scatter_buffers(const void* send, const void* recv, size_t block_bytes, int rank, int size,
                                  const std::string& comm_name) {
  MT_CHECK(send && recv, "reduce_scatter on communicator '{}' got a null buffer", comm_name);
  const bool in_place = recv == static_cast<const std::byte*>(send) + rank * block_bytes;
  MT_CHECK(in_place || !overlaps(send, block_bytes * size, recv, block_bytes),
           "reduce_scatter: recv overlaps send; the only overlap allowed is recv == send + rank * recv_count");
  return in_place;
}

bool check_all_gather_buffers(const void* send, const void* recv, size_t block_bytes, int rank, int size,
                              const std::string& comm_name) {
  MT_CHECK(send && recv, "all_gather on communicator '{}' got a null buffer", comm_name);
  const bool in_place = send == static_cast<const std::byte*>(recv) + rank * block_bytes;
  MT_CHECK(in_place || !overlaps(send, block_bytes, recv, block_bytes * size),
           "all_gather: send overlaps recv; the only overlap allowed is send == recv + rank * send_count");
  return in_place;
}

void check_broadcast_root(int root, int size, const std::string& comm_name) {
  if (root < 0 || root >= size)
    throw core::Error(fmt::format("broadcast root {} is out of range for communicator '{}' of size {}", root,
                                  comm_name, size))
        .with_where(__FILE__, __LINE__);
}

void check_p2p_args(const char* op_name, const void* buf, size_t count, int peer, int tag, int rank, int size,
                    const std::string& comm_name) {
  const char* dir = op_name[0] == 's' ? "to" : "from";
  if (peer < 0 || peer >= size || peer == rank)
    throw core::Error(fmt::format("{} {} rank {} on communicator '{}' (rank {} of {}): {}", op_name, dir, peer,
                                  comm_name, rank, size,
                                  peer == rank ? "a rank cannot send to or receive from itself"
                                               : "the peer is not a rank of this communicator"))
        .with_hint("peers are ranks of the communicator the op is issued on (e.g. the pp group), not world ranks")
        .with_where(__FILE__, __LINE__);
  if (tag < 0 || tag > kMaxP2pTag)
    throw core::Error(fmt::format("{} {} rank {} on communicator '{}': tag {} is outside 0..{}", op_name, dir, peer,
                                  comm_name, tag, kMaxP2pTag))
        .with_where(__FILE__, __LINE__);
  MT_CHECK(count == 0 || buf != nullptr, "{} {} rank {} of {} elements on communicator '{}' got a null buffer",
           op_name, dir, peer, count, comm_name);
}

}  // namespace mt::parallel
