// What: ZeRO-2 and ZeRO-3 (fully sharded data parallelism, FSDP semantics) over the model's flat
// layout. The flat buffer is cut into units, one per layer (ParamUnit: embeddings, each block,
// the final norm/head), each aligned to 64 x dp elements (ModelContext::align_units), so unit u
// is dp equal pieces of piece_u elements and rank d owns piece d of every unit: those are its
// owned ranges, whose fp32 gradients (and AdamW state) it alone keeps.
//   ZeRO-2  every rank holds the full fp32 parameters (and working copy); gradients live in
//           per-unit buffers only while their backward produces them: the outer units' (the
//           non-block layers, whose gradients arrive at both ends of the backward) for the
//           whole backward, each block's in one of two block slots from its enter_block(l,
//           Backward). Once a unit's last parameter reports ready its buffer is reduce-scattered
//           (summed) into the rank's piece, added to the gradient shard, and the slot is free
//           again. After the update each unit's pieces are all-gathered in place.
//   ZeRO-3  the same gradients; the fp32 master parameters exist only as the rank's pieces. The
//           outer units are gathered (working dtype) after every update and stay; a block's
//           parameters are all-gathered into one of two block slots at enter_block(l, Forward),
//           and again at enter_block(l, Backward) if its slot was reused, while the gather of
//           the next block (l + 1 forward, l - 1 backward) is already in flight into the other
//           slot: communication overlaps the current block's compute.
// Every reduction happens in every micro-step (gradients do not stay whole between them), so
// all dp ranks run the same sequence of forwards and backwards (the trainer pads a rank with
// fewer micro-batches with empty ones): collectives are issued in the model's order.
// Why: per rank, parameters + gradients + optimizer state fall from 16 P bytes (fp32 AdamW) to
// ~16 P / dp plus a few layers' worth of buffers (DeepSpeed ZeRO-3, PyTorch FSDP2).
// Exposed communication: time waiting for a gather or a slot's reduction in enter_block, and
// in finish() / gather_params().
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

class ShardedSync final : public DataParallelSync, public ParamResidence {
 public:
  // zero: 2 or 3; dp of size > 1 (on the model's device memory); the model built with
  // model_context_for_zero(ctx, zero, dp size). Binds itself as the model's residence.
  ShardedSync(int zero, Communicator* dp, Model& model, kernels::Ops* ops);
  ~ShardedSync() override;

  // DataParallelSync
  bool reduces_every_micro_step() const override { return true; }
  void begin(Model& model) override;
  void on_grad_ready(int param_index) override;
  void finish() override;
  void gather_params() override;
  const std::vector<std::pair<int64_t, int64_t>>& owned_ranges() const override { return owned_; }
  std::vector<RangeData> owned_data(Model& model) override;
  int zero() const override { return zero_; }
  std::vector<float> master_host(Model& model) override;
  void load_master_stored(Model& model, const std::vector<float>& host) override;
  size_t buffer_bytes() const override { return 0; }
  double comm_ms() const override { return comm_ms_; }
  double exposed_ms() const override { return exposed_ms_; }

  // ParamResidence
  void enter_block(int layer, Pass pass) override;
  void load_master(const float* host_flat) override;
  void load_master_range(int64_t flat_begin, const float* host, int64_t n) override;
  void zero_grads() override;
  void refresh_working_params() override;

  size_t grad_bytes() const override;
  size_t param_bytes() const override;
  size_t param_piece_bytes() const override {
    return (master_.defined() ? master_.nbytes() : 0) + (wshard_.defined() ? wshard_.nbytes() : 0);
  }
  size_t grad_shard_bytes() const override { return gshard_.nbytes(); }

 private:
  struct UnitState {
    ParamUnit u;
    int64_t piece = 0;     // elements per rank
    int64_t shard_at = 0;  // offset of this rank's piece in the shards
    int pending = 0;       // parameters of this backward still to report
    int gslot = -1;        // block: the gradient slot it is bound to (-1: none)
    int outer = -1;        // outer units: index into outer_*
  };
  // One reduction in flight: unit, where its gradients are, where its piece lands.
  struct Reduce {
    int unit = -1;
    std::shared_ptr<Work> work;
  };
  struct ParamSlot {  // ZeRO-3 block parameters (working dtype)
    core::Tensor buf;
    int unit = -1;
    uint64_t gen = 0;  // gen_ when gathered (parameters change at every update)
    std::shared_ptr<Work> work;
  };
  struct GradSlot {  // a block's gradients, then its reduction's source
    core::Tensor buf, recv;
    int open = -1;  // the unit whose gradients accumulate here (-1: none)
    Reduce red;
  };

  int unit_of_layer(int layer) const;
  void* wshard_at(int64_t shard_at) const;  // the gather source of a piece (working dtype)
  void gather_into(int unit, void* dst, std::shared_ptr<Work>* work);
  void ensure_params(int unit, Pass pass);
  void launch_reduce(int unit);
  void complete(Reduce& r, core::Tensor& recv);  // waits, adds the piece into the shard
  void poll();
  void bind_outer_grads();
  void timed_wait(const std::shared_ptr<Work>& w);

  int zero_;
  Communicator* dp_;
  Model& model_;
  kernels::Ops* ops_;
  int dp_size_ = 1, dp_rank_ = 0;
  core::DType wdt_;
  size_t ws_ = 4;
  std::vector<UnitState> units_;
  std::vector<int> outer_units_;
  std::vector<int> block_unit_;  // block layer -> its unit
  std::vector<std::pair<int64_t, int64_t>> owned_;
  int64_t shard_elems_ = 0;
  core::Tensor master_;  // ZeRO-3: fp32 master pieces (shard_elems_)
  core::Tensor wshard_;  // ZeRO-3, working dtype != fp32: the pieces in the working dtype
  core::Tensor gshard_;  // fp32 gradient pieces (shard_elems_)
  std::vector<core::Tensor> outer_w_;     // ZeRO-3: gathered outer units (working dtype)
  std::vector<core::Tensor> outer_g_;     // outer units' gradients (fp32)
  std::vector<core::Tensor> outer_recv_;  // their pieces' landing buffers
  std::vector<Reduce> outer_red_;
  ParamSlot pslot_[2];
  GradSlot gslot_[2];
  uint64_t gen_ = 1;
  double comm_ms_ = 0, exposed_ms_ = 0;
};

}  // namespace mt::parallel
