// What: data-parallel gradient synchronisation in buckets, overlapped with backward.
// The flat gradient buffer is cut into contiguous buckets (parallel.bucket_mb) from its END,
// because backward finalises gradients in reverse order of the forward (the buffer's order).
// Each bucket's collective starts as soon as the last parameter overlapping it reports its
// gradient final (Model::backward's on_ready), and all are waited for only in finish(), just
// before the optimizer step. Without ZeRO each bucket is all-reduced (sum); with ZeRO-1 it is
// reduce-scattered so rank d owns slice d of every bucket, the optimizer updates only those
// slices, and gather_params() all-gathers the updated parameters.
// Why: hides communication behind the remaining backward work (Megatron/DDP buckets); MPI's
// nonblocking collectives progress only inside MPI calls, so every on_ready polls them.
// Gradients are summed (not averaged): the loss is already normalised by the global token
// count, so the sum over ranks is exactly the full-batch gradient.
// Devices: the buffers are the model's (device memory of the Ops); `dp` must work on that
// memory (the NCCL or host-staging communicator for CUDA). reduce_dtype BF16 (CUDA) casts
// each bucket to bf16 before the collective and back to fp32 after it (half the bytes on
// the wire, bf16 rounding of the summed gradient); F32 reduces the fp32 buffer in place.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "kernels/ops.h"
#include "parallel/communicator.h"
#include "parallel/dp_sync.h"
#include "parallel/models/model.h"

namespace mt::parallel {

class GradSync final : public DataParallelSync {
 public:
  // dp may be null or of size 1 (then every call is a no-op). `total` must be a multiple of
  // flat_alignment(dp size) (Model pads its flat buffers for that).
  // ops: the device and kernels of the buffers (null = CPU); reduce_dtype: F32 or BF16.
  GradSync(Communicator* dp, const std::vector<ParamInfo>& params, int64_t total,
           double bucket_mb, bool zero1, kernels::Ops* ops = nullptr, DType reduce_dtype = DType::F32);
  static int64_t flat_alignment(int dp_size) { return dp_flat_alignment(dp_size); }

  // Call before the backward of the last micro-step (or before finish() on a rank that runs
  // no backward this step).
  void begin(float* grads, float* params);
  void begin(Model& model) override;  // the model's flat buffers; gather_params refreshes its working copy
  // Model::backward hook: parameter i's gradient is final.
  void on_grad_ready(int param_index) override;
  // Wait for all buckets (and, for ZeRO-1, place the reduced slices into grads).
  void finish() override;
  // ZeRO-1: all-gather every bucket's updated parameter slices (no-op otherwise).
  void gather_params() override;

  // The [begin, end) ranges of the flat buffer whose gradients are fully reduced here and
  // which this rank's optimizer updates: everything without ZeRO, own slices with ZeRO-1.
  const std::vector<std::pair<int64_t, int64_t>>& owned_ranges() const override { return owned_; }
  std::vector<RangeData> owned_data(Model& model) override;
  int zero() const override { return zero1_ && dp_size_ > 1 ? 1 : 0; }
  std::vector<float> master_host(Model& model) override;
  void load_master_stored(Model& model, const std::vector<float>& host) override;
  size_t buffer_bytes() const override {
    return (shard_.defined() ? shard_.nbytes() : 0) + (wire_.defined() ? wire_.nbytes() : 0);
  }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }

  // Timings of the last step, milliseconds.
  double comm_ms() const override { return comm_ms_; }          // wall time inside collectives
  double exposed_ms() const override { return exposed_ms_; }    // finish() waiting after backward

 private:
  struct Bucket {
    int64_t begin, end;
    int pending = 0;   // parameters still to report
    int total = 0;
    std::shared_ptr<Work> work;
  };
  void launch(Bucket& b);
  void poll();

  // Element i of the buffer the collectives run on (the gradients, or their bf16 copy).
  void* wire(int64_t i) const;
  void* shard(int64_t i) const;

  Communicator* dp_;
  kernels::Ops* ops_;
  DType reduce_dtype_;
  int dp_size_ = 1, dp_rank_ = 0;
  bool zero1_;
  std::vector<Bucket> buckets_;
  std::vector<std::vector<int>> param_buckets_;  // param -> buckets it overlaps
  std::vector<std::pair<int64_t, int64_t>> owned_;
  core::Tensor wire_;   // BF16 reduction: the bf16 copy of the gradients (device memory)
  core::Tensor shard_;  // ZeRO-1: reduce-scatter output, one slice per bucket (device memory)
  std::vector<int64_t> shard_offset_;
  float* grads_ = nullptr;
  float* params_ = nullptr;
  Model* model_ = nullptr;
  double comm_ms_ = 0, exposed_ms_ = 0;
};

}  // namespace mt::parallel
