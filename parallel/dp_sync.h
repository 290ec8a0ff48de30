// What: DataParallelSync, what the trainer asks of data-parallel gradient exchange whatever the
// ZeRO level: GradSync (grad_sync.h: buckets of the flat gradient buffer, all-reduced or, with
// ZeRO-1, reduce-scattered) and ShardedSync (sharded_sync.h: ZeRO-2 sharded gradients, ZeRO-3
// sharded parameters too). make_dp_sync is the one place that picks.
// Why: the step, the optimizer, the gradient norm and the checkpoints see only "the ranges of
// the flat buffer this rank updates, and where their elements live", so a ZeRO level is a
// different residence of the same flat layout, not a different trainer.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/ops.h"
#include "parallel/communicator.h"
#include "parallel/models/model.h"

namespace mt::parallel {

// Where the elements of one owned range [begin, end) of the flat buffer live: the fp32 master
// parameters, the working copy (null: the sync refreshes it after the update) and the fp32
// gradients, each pointing at element `begin`.
struct RangeData {
  float* params = nullptr;
  void* working = nullptr;
  float* grads = nullptr;
};

class DataParallelSync {
 public:
  virtual ~DataParallelSync() = default;
  // True: every micro-step's backward reports gradients (call begin() before each of them);
  // false: only the last micro-step's (begin() before it alone).
  virtual bool reduces_every_micro_step() const { return false; }
  // Before a backward that reports ready gradients (see above); on a rank that runs no
  // backward this step, once before finish().
  virtual void begin(Model& model) = 0;
  // Model::backward hook: parameter i's gradient is final for this backward.
  virtual void on_grad_ready(int param_index) = 0;
  // Waits for every reduction: the owned ranges' gradients are final.
  virtual void finish() = 0;
  // After the optimizer updated the owned ranges: every rank's parameters (or, ZeRO-3, what
  // the next forward gathers) and the working copy are current.
  virtual void gather_params() = 0;

  // The [begin, end) ranges of the flat buffer whose gradients are fully reduced here and which
  // this rank's optimizer updates, sorted.
  virtual const std::vector<std::pair<int64_t, int64_t>>& owned_ranges() const = 0;
  // Their elements, one per owned range.
  virtual std::vector<RangeData> owned_data(Model& model) = 0;
  // The gradient of flat element i of an owned range.
  float* grad_at(Model& model, int64_t i);
  // ZeRO level in effect (0 at dp 1), and whether the master parameters are sharded (ZeRO-3:
  // a checkpoint stores this rank's owned ranges of them, in order).
  virtual int zero() const = 0;
  bool shards_params() const { return zero() == 3; }
  // Host copy of the master parameters this rank stores: the whole flat buffer, or (ZeRO-3)
  // the owned ranges' elements one after the other; and loading such a copy.
  virtual std::vector<float> master_host(Model& model) = 0;
  virtual void load_master_stored(Model& model, const std::vector<float>& host) = 0;
  // Bytes the sync itself holds, for the memory report: parameters (ZeRO-3 pieces, gathered
  // units and slots), gradients (ZeRO-2/3 shard, units and slots, their reductions' landing
  // buffers), and other communication buffers (ZeRO-1 shard, bf16 wire copy).
  virtual size_t param_bytes() const { return 0; }
  virtual size_t grad_bytes() const { return 0; }
  // ... of which the rank's persistent pieces (ZeRO-3 master pieces + their working-dtype copy;
  // ZeRO-2/3 gradient shard); the rest are the gathered layers and slots
  virtual size_t param_piece_bytes() const { return 0; }
  virtual size_t grad_shard_bytes() const { return 0; }
  virtual size_t buffer_bytes() const = 0;

  // Timings of the last step, milliseconds.
  virtual double comm_ms() const = 0;      // wall time inside collectives
  virtual double exposed_ms() const = 0;   // waiting on communication not hidden by compute
};

// Elements per flat-buffer alignment unit at data-parallel size dp (buckets and ZeRO pieces are
// multiples of it).
inline int64_t dp_flat_alignment(int dp_size) { return 64 * static_cast<int64_t>(dp_size); }

// The sync for `zero` (0..3) over dp (null or size 1: nothing to exchange). bucket_mb: GradSync's
// buckets (ZeRO 0/1); reduce_dtype F32 or BF16 (ZeRO 0/1 only). The model must have been built
// with model_context_for_zero's settings; ZeRO-2/3 bind its buffers here.
std::unique_ptr<DataParallelSync> make_dp_sync(int zero, Communicator* dp, Model& model, double bucket_mb,
                                               kernels::Ops* ops, DType reduce_dtype);
// ModelContext fields for a ZeRO level at data-parallel size dp (flat_align, align_units,
// own_params, own_grads).
void model_context_for_zero(ModelContext& ctx, int zero, int dp);

}  // namespace mt::parallel
