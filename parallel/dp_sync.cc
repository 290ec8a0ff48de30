// What: make_dp_sync, model_context_for_zero and the shared helpers of DataParallelSync (see
// dp_sync.h): the one place that knows which sync serves which ZeRO level.
#include "parallel/dp_sync.h"

#include <algorithm>

#include "core/error.h"
#include "parallel/grad_sync.h"
#include "parallel/sharded_sync.h"

namespace mt::parallel {

float* DataParallelSync::grad_at(Model& model, int64_t i) {
  const auto& r = owned_ranges();
  const auto it = std::upper_bound(r.begin(), r.end(), std::pair<int64_t, int64_t>{i, INT64_MAX});
  MT_CHECK(it != r.begin() && i < std::prev(it)->second, "flat element {} is not in an owned range", i);
  const size_t k = static_cast<size_t>(std::prev(it) - r.begin());
  return owned_data(model)[k].grads + (i - r[k].first);
}

void model_context_for_zero(ModelContext& ctx, int zero, int dp) {
  ctx.flat_align = dp_flat_alignment(dp);
  const bool sharded = zero >= 2 && dp > 1;
  ctx.align_units = sharded;
  ctx.own_grads = !sharded;
  ctx.own_params = !(sharded && zero == 3);
}

std::unique_ptr<DataParallelSync> make_dp_sync(int zero, Communicator* dp, Model& model, double bucket_mb,
                                               kernels::Ops* ops, DType reduce_dtype) {
  MT_CHECK(zero >= 0 && zero <= 3, "parallel.zero = {} is not 0, 1, 2 or 3", zero);
  const bool multi = dp != nullptr && dp->size() > 1;
  if (zero >= 2 && multi) {
    if (reduce_dtype != DType::F32) {
      throw core::Error(fmt::format("parallel.zero = {} reduce-scatters fp32 gradients; bf16 reduction is built for "
                                    "ZeRO 0 and 1 only", zero))
          .with_yaml("parallel.grad_reduce_dtype")
          .with_hint("parallel.grad_reduce_dtype=fp32, or parallel.zero=1");
    }
    return std::make_unique<ShardedSync>(zero, dp, model, ops);
  }
  return std::make_unique<GradSync>(dp, model.params_info(), model.num_local_params(), bucket_mb, zero == 1, ops,
                                    reduce_dtype);
}

}  // namespace mt::parallel
