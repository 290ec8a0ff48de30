// What: TpGroup (see tp_group.h).
#include "parallel/models/tp_group.h"

#include "core/error.h"
#include "parallel/communicator.h"

namespace mt::parallel {

namespace {
DType comm_dtype(core::DType t) {
  switch (t) {
    case core::DType::F32: return DType::F32;
    case core::DType::BF16: return DType::BF16;
    default: MT_FAIL("no communicator type for {}", core::dtype_name(t));
  }
}
}  // namespace

TpGroup::TpGroup(Communicator* comm, int size, int rank) : comm_(comm), size_(size), rank_(rank) {
  MT_CHECK(size >= 1 && rank >= 0 && rank < size, "tensor-parallel rank {} of {}", rank, size);
  MT_CHECK(size == 1 || comm != nullptr, "tp = {} needs a tensor-parallel communicator", size);
  MT_CHECK(comm == nullptr || comm->size() == size, "tensor-parallel communicator '{}' has {} ranks, the model {}",
           comm ? comm->name() : "", comm ? comm->size() : 0, size);
}

void TpGroup::sum(void* x, int64_t n, core::DType dtype) const {
  if (size_ == 1) return;
  last_ = comm_->iall_reduce(x, static_cast<size_t>(n), comm_dtype(dtype), ReduceOp::Sum);
  last_->wait_stream();
}

void TpGroup::max_f32(float* x, int64_t n) const {
  if (size_ == 1) return;
  last_ = comm_->iall_reduce(x, static_cast<size_t>(n), DType::F32, ReduceOp::Max);
  last_->wait_stream();
}

void TpGroup::gather(const void* part, void* full, int64_t n, core::DType dtype) const {
  if (size_ == 1) return;
  last_ = comm_->iall_gather(part, full, static_cast<size_t>(n), comm_dtype(dtype));
  last_->wait_stream();
}

void TpGroup::scatter_sum(const void* full, void* part, int64_t n, core::DType dtype) const {
  if (size_ == 1) return;
  last_ = comm_->ireduce_scatter(full, part, static_cast<size_t>(n), comm_dtype(dtype), ReduceOp::Sum);
  last_->wait_stream();
}

void TpGroup::gather_f32(const float* send, float* recv, int64_t n) const {
  MT_CHECK(size_ > 1, "gather_f32 on a tensor-parallel group of 1 (read the send buffer)");
  host_wait();
  comm_->all_gather(send, recv, static_cast<size_t>(n), DType::F32);
}

void TpGroup::host_wait() const {
  if (!last_) return;
  const std::shared_ptr<Work> w = std::move(last_);
  last_.reset();
  w->wait();
}

}  // namespace mt::parallel
