// What: GradSync (see grad_sync.h).
#include "parallel/grad_sync.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace mt::parallel {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
}  // namespace

GradSync::GradSync(Communicator* dp, const std::vector<ParamInfo>& params, int64_t total,
                   double bucket_mb, bool zero1, kernels::Ops* ops, DType reduce_dtype)
    : dp_(dp), ops_(ops ? ops : &kernels::cpu_ops()), reduce_dtype_(reduce_dtype), zero1_(zero1) {
  MT_CHECK(reduce_dtype == DType::F32 || reduce_dtype == DType::BF16,
           "gradient reduction dtype must be f32 or bf16, not {}", dtype_name(reduce_dtype));
  if (reduce_dtype == DType::BF16 && ops_->device().kind() == core::DeviceKind::CPU) {
    throw core::Error("bf16 gradient all-reduce needs the CUDA device (the CPU kernels have no f32 <-> bf16 cast)")
        .with_yaml("parallel.grad_reduce_dtype")
        .with_hint("use parallel.grad_reduce_dtype=fp32 with train.device=cpu");
  }
  if (dp_ && dp_->size() > 1) {
    dp_size_ = dp_->size();
    dp_rank_ = dp_->rank();
  }
  if (dp_size_ == 1) {
    owned_.push_back({0, total});
    return;
  }
  const int64_t align = flat_alignment(dp_size_);
  MT_CHECK(total % align == 0, "flat gradient buffer of {} elements is not a multiple of {}", total, align);
  int64_t elems = static_cast<int64_t>(bucket_mb * 1048576.0 / sizeof(float));
  elems = std::max(align, (elems + align - 1) / align * align);
  for (int64_t end = total; end > 0; end -= elems) {
    Bucket b;
    b.begin = std::max<int64_t>(0, end - elems);
    b.end = end;
    buckets_.push_back(b);
  }
  param_buckets_.resize(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t pb = params[i].offset, pe = pb + params[i].numel;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (pb < buckets_[b].end && buckets_[b].begin < pe && pe > pb) {
        param_buckets_[i].push_back(static_cast<int>(b));
        buckets_[b].total++;
      }
    }
  }
  for (auto& b : buckets_) {
    MT_CHECK(b.total > 0, "gradient bucket [{}, {}) holds no parameter", b.begin, b.end);
  }
  core::MemoryScope scope(core::MemCat::Comm);  // the shard and the bf16 wire copy
  if (zero1_) {
    int64_t off = 0;
    for (auto& b : buckets_) {
      const int64_t chunk = (b.end - b.begin) / dp_size_;
      shard_offset_.push_back(off);
      off += chunk;
      owned_.push_back({b.begin + dp_rank_ * chunk, b.begin + (dp_rank_ + 1) * chunk});
    }
    const core::DType st = reduce_dtype_ == DType::BF16 ? core::DType::BF16 : core::DType::F32;
    shard_ = core::Tensor::zeros({off}, st, ops_->device());
    std::sort(owned_.begin(), owned_.end());
  } else {
    owned_.push_back({0, total});
  }
  if (reduce_dtype_ == DType::BF16) wire_ = core::Tensor::zeros({total}, core::DType::BF16, ops_->device());
}

void* GradSync::wire(int64_t i) const {
  if (reduce_dtype_ == DType::BF16) return static_cast<char*>(wire_.raw()) + i * 2;
  return grads_ + i;
}

void* GradSync::shard(int64_t i) const {
  return static_cast<char*>(shard_.raw()) + i * static_cast<int64_t>(dtype_size(reduce_dtype_));
}

void GradSync::begin(float* grads, float* params) {
  MT_CHECK(grads != nullptr && params != nullptr, "GradSync::begin needs the flat buffers");
  grads_ = grads;
  params_ = params;
  comm_ms_ = 0;
  exposed_ms_ = 0;
  for (auto& b : buckets_) {
    b.pending = b.total;
    b.work.reset();
  }
}

void GradSync::begin(Model& model) {
  model_ = &model;
  begin(model.grads().f32(), model.params().f32());
}

std::vector<RangeData> GradSync::owned_data(Model& model) {
  std::vector<RangeData> d;
  const size_t ws = core::dtype_size(model.working_dtype());
  for (const auto& [b, e] : owned_) {
    RangeData r;
    r.params = model.params().f32() + b;
    r.grads = model.grads().f32() + b;
    // the fused update writes the working copy too, unless ZeRO-1 gathers the master after it
    if (model.working_copy() && zero() == 0) r.working = static_cast<char*>(model.working_copy()) + b * static_cast<int64_t>(ws);
    d.push_back(r);
  }
  return d;
}

std::vector<float> GradSync::master_host(Model& model) {
  std::vector<float> h(static_cast<size_t>(model.num_local_params()));
  ops_->device().copy(h.data(), model.params().raw(), h.size() * sizeof(float));
  return h;
}

void GradSync::load_master_stored(Model& model, const std::vector<float>& host) {
  MT_CHECK(static_cast<int64_t>(host.size()) == model.num_local_params(), "{} parameters for a slice of {}",
           host.size(), model.num_local_params());
  model.load_master(host.data());
}

void GradSync::launch(Bucket& b) {
  const auto t0 = Clock::now();
  const size_t n = static_cast<size_t>(b.end - b.begin);
  if (reduce_dtype_ == DType::BF16) {  // queued on the compute stream, before the collective
    ops_->cast(wire(b.begin), core::DType::BF16, grads_ + b.begin, core::DType::F32, b.end - b.begin);
  }
  if (zero1_) {
    const size_t idx = static_cast<size_t>(&b - buckets_.data());
    b.work = dp_->ireduce_scatter(wire(b.begin), shard(shard_offset_[idx]), n / dp_size_, reduce_dtype_,
                                  ReduceOp::Sum);
  } else {
    b.work = dp_->iall_reduce(wire(b.begin), n, reduce_dtype_, ReduceOp::Sum);
  }
  comm_ms_ += ms_since(t0);
}

void GradSync::poll() {
  const auto t0 = Clock::now();
  for (auto& b : buckets_)
    if (b.work) b.work->test();
  comm_ms_ += ms_since(t0);
}

void GradSync::on_grad_ready(int i) {
  if (dp_size_ == 1) return;
  for (int b : param_buckets_[i]) {
    MT_CHECK(buckets_[b].pending > 0, "parameter {} reported ready twice in one step", i);
    if (--buckets_[b].pending == 0) launch(buckets_[b]);
  }
  poll();
}

void GradSync::finish() {
  if (dp_size_ == 1) return;
  // A rank that ran no backward this step (e.g. it got no samples under a dynamic schedule)
  // still takes part: its buckets (zero gradients) start here, in bucket order, which is the
  // order in which backward completes them on the other ranks.
  for (auto& b : buckets_)
    if (!b.work) launch(b);
  const auto t0 = Clock::now();
  // Host waits (every backend: on NCCL until the op is complete on the device), under the
  // communicator's deadline and asynchronous-error polling: the next host wait on the device
  // (the gradient norm's readback) then cannot hang behind a dead peer, and exposed_ms is the
  // real exposed communication on every backend.
  for (auto& b : buckets_) b.work->wait();
  const double waited = ms_since(t0);
  exposed_ms_ = waited;
  comm_ms_ += waited;
  // The reduced values back into the fp32 gradients (queued after the waits above: the
  // collectives are complete, so the compute stream's work reads their results).
  if (zero1_) {
    for (size_t i = 0; i < buckets_.size(); ++i) {
      const Bucket& b = buckets_[i];
      const int64_t chunk = (b.end - b.begin) / dp_size_;
      float* dst = grads_ + b.begin + dp_rank_ * chunk;
      if (reduce_dtype_ == DType::BF16) {
        ops_->cast(dst, core::DType::F32, shard(shard_offset_[i]), core::DType::BF16, chunk);
      } else {
        ops_->device().copy_async(dst, shard(shard_offset_[i]), chunk * sizeof(float));
      }
    }
  } else if (reduce_dtype_ == DType::BF16) {
    for (const Bucket& b : buckets_)
      ops_->cast(grads_ + b.begin, core::DType::F32, wire(b.begin), core::DType::BF16, b.end - b.begin);
  }
}

void GradSync::gather_params() {
  if (dp_size_ == 1 || !zero1_) return;
  const auto t0 = Clock::now();
  std::vector<std::shared_ptr<Work>> works;
  for (auto& b : buckets_) {
    const int64_t chunk = (b.end - b.begin) / dp_size_;
    float* base = params_ + b.begin;
    works.push_back(dp_->iall_gather(base + dp_rank_ * chunk, base, static_cast<size_t>(chunk), DType::F32));
  }
  // Host waits, as in finish(): the updated parameters are complete for the next forward and
  // for any host read (checkpoint), under the communicator's deadline.
  for (auto& w : works) w->wait();
  comm_ms_ += ms_since(t0);
  exposed_ms_ += ms_since(t0);
  if (model_) model_->refresh_working_params();  // the gathered master -> the working copy
}

}  // namespace mt::parallel
