// What: the argument checks of the Communicator contract (communicator.h) that every backend
// applies when an operation is issued: avg only for floating-point dtypes, non-null buffers,
// reduce_scatter / all_gather buffers that overlap only in the in-place form, a broadcast
// root in range, a send/recv peer and tag in range.
// Why: the MPI, staging and NCCL backends must reject the same calls with the same messages
// (tests check them on every backend); one copy keeps them from drifting apart.
// Each throws mt::core::Error naming the operation and the communicator.
#pragma once

#include <cstddef>
#include <string>

#include "parallel/communicator.h"

namespace mt::parallel {

// Avg of an integer dtype has no exact meaning: an error with a hint.
void check_reduce_op(const char* op_name, DType dt, ReduceOp op);

// all_reduce / broadcast of count > 0 elements: `buf` is not null.
void check_buffer(const void* buf, const char* op_name, size_t count, const std::string& comm_name);

// reduce_scatter: `send` holds size blocks of block_bytes, `recv` one. Throws if either is
// null or they overlap other than as recv == send + rank * block_bytes; returns whether
// that in-place form is used. For block_bytes > 0.
bool check_reduce_scatter_buffers(const void* send, const void* recv, size_t block_bytes, int rank, int size,
                                  const std::string& comm_name);

// all_gather: `send` holds one block of block_bytes, `recv` size blocks. Throws if either
// is null or they overlap other than as send == recv + rank * block_bytes; returns whether
// that in-place form is used. For block_bytes > 0.
bool check_all_gather_buffers(const void* send, const void* recv, size_t block_bytes, int rank, int size,
                              const std::string& comm_name);

// broadcast: 0 <= root < size.
void check_broadcast_root(int root, int size, const std::string& comm_name);

// send / recv ("send" or "recv" in op_name): a peer of this communicator other than `rank`,
// 0 <= tag <= kMaxP2pTag, a buffer unless count is 0.
inline constexpr int kMaxP2pTag = 32767;  // the least MPI_TAG_UB MPI guarantees
void check_p2p_args(const char* op_name, const void* buf, size_t count, int peer, int tag, int rank, int size,
                    const std::string& comm_name);

}  // namespace mt::parallel
