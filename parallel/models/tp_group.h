// What: TpGroup, the tensor-parallel group as a model's layers see it: its size, this rank's
// index, and the all-reduces Megatron-style layers need (sum of working-dtype activations,
// sum and max of fp32 pieces; the all-gather and reduce-scatter of sequence parallelism), each
// a no-op at size 1.
// Why: one place decides how a model waits for its collectives. Inside forward and backward
// an all-reduce only has to be ordered before the kernels that read it (stream order on a
// device backend); before the host reads a device result (losses, the end of backward) the
// host waits for the group with its deadline, so a dead peer raises an error instead of
// hanging in a device synchronisation.
#pragma once

#include <cstdint>
#include <memory>

#include "core/tensor.h"

namespace mt::parallel {

class Communicator;
class Work;

class TpGroup {
 public:
  TpGroup() = default;
  // comm may be null when size == 1; it must work on the model's device memory.
  TpGroup(Communicator* comm, int size, int rank);

  int size() const { return size_; }
  int rank() const { return rank_; }
  Communicator* comm() const { return comm_; }

  // x: (n) in place, summed over the group; dtype F32 or BF16 (activations). Ordered before
  // the kernels queued after it (Work::wait_stream: the host does not wait on a device
  // backend; host backends complete it here).
  void sum(void* x, int64_t n, core::DType dtype) const;
  void sum_f32(float* x, int64_t n) const { sum(x, n, core::DType::F32); }
  void max_f32(float* x, int64_t n) const;
  // Sequence parallelism (parallel.sp), ordered like sum(): full holds size() blocks of n
  // elements, block r rank r's. gather: every rank's `part` (n) into full (size() * n);
  // scatter_sum: part (n) = block rank() of full summed over the group.
  void gather(const void* part, void* full, int64_t n, core::DType dtype) const;
  void scatter_sum(const void* full, void* part, int64_t n, core::DType dtype) const;
  // recv: (size() * n) fp32, block r = rank r's send: (n); the host waits for it (decoding
  // reads the result on the host right after). Size > 1 only.
  void gather_f32(const float* send, float* recv, int64_t n) const;
  // Blocks the host until every collective issued so far is complete: Work::wait() of the
  // last one (a communicator completes its ops in order), with the communicator's deadline.
  // Call before the host waits on device results that follow them.
  void host_wait() const;

 private:
  Communicator* comm_ = nullptr;
  int size_ = 1, rank_ = 0;
  mutable std::shared_ptr<Work> last_;  // the last collective not yet host-waited
};

}  // namespace mt::parallel
