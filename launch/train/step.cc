// What: Stepper (see step.h).
#include "launch/train/step.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "launch/train/train_util.h"
#include "parallel/timeout_communicator.h"

namespace mt::launch {

Stepper::Stepper(const StepParts& parts) : p_(parts) {
  dp_ = p_.mesh.dp();
  tp_ = p_.mesh.tp();
  dp_rank_ = p_.comms.dp->rank();
  tp_rank_ = p_.comms.tp->rank();
  pp_ = p_.mesh.pp();
  pp_rank_ = pp_ > 1 ? p_.comms.pp->rank() : 0;
  const parallel::StageLayers& st = p_.model.stage();
  if (pp_ > 1 && st.embed != st.head) {
    for (size_t i = 0; i < p_.model.params_info().size(); ++i)
      if (p_.model.params_info()[i].tied_head) tied_ = static_cast<int>(i);
    if (tied_ >= 0)
      tied_recv_ = core::Tensor::empty({p_.model.params_info()[static_cast<size_t>(tied_)].numel}, core::DType::F32,
                                       p_.device);
  }
  // Gradient-norm ranges: each element counted once in the mesh (elements replicated across
  // tp, whole tensors or shared k/v heads, on their first holder only), per parameter, counted
  // row run and owned range, in this fixed order.
  // Pipeline: stages hold different parameters; the last stage's copy of a tied embedding is
  // not counted (the first stage's is). Without ZeRO dp replicas hold the same gradients: dp
  // rank 0 counts them and the sum goes over the world.
  const bool counts = !(pp_ > 1 && p_.sync.zero() == 0 && dp_rank_ > 0);
  for (const auto& p : p_.model.params_info()) {
    if (!counts || (p.tied_head && !st.embed)) continue;
    const int64_t cols = parallel::shape_cols(p.local_shape);
    for (const auto& [r0, r1] : p.partition.counted_rows(p.full_shape, tp_, tp_rank_)) {
      for (const auto& [b, e] : p_.sync.owned_ranges()) {
        const int64_t lo = std::max(b, p.offset + r0 * cols), hi = std::min(e, p.offset + r1 * cols);
        if (lo < hi) norm_ranges_.push_back({lo, hi});
      }
    }
  }
  owned_ = p_.sync.owned_data(p_.model);
  for (const auto& [lo, hi] : norm_ranges_) norm_ptrs_.push_back(p_.sync.grad_at(p_.model, lo));
  norm_host_.resize(norm_ranges_.size());
  norm_partials_ = core::Tensor::zeros({std::max<int64_t>(1, static_cast<int64_t>(norm_ranges_.size()))},
                                       core::DType::F64, p_.device);
}

StepStats Stepper::step(int64_t s, std::optional<double> lr) {
  const auto t0 = Clock::now();
  const double tp_blocked0 = tp_blocked_s();
  StepStats st;
  st.step = s;
  p_.device.reset_memory_window();
  const io::Batch& batch = p_.loader.next(s, &st.data_ms);  // (the time this thread waited for it)
  st.tokens = batch.global_targets;                         // the same on every rank
  st.pad_fraction = batch.global_positions > 0
                        ? 1.0 - static_cast<double>(batch.global_targets) / static_cast<double>(batch.global_positions)
                        : 0.0;
  double compute_ms = 0;
  double kd[2] = {0, 0};  // distillation: the share's cross-entropy and KL sums
  double loss_sum = forward_backward(batch, &compute_ms, kd);  // this replica's share
  p_.sync.finish();
  st.imbalance = exchange_work(s, batch, compute_ms, &st.replica_tokens);
  if (p_.pipe) st.pp = pipeline_stats();
  p_.faults.before_norm(s, p_.device, owned_.front().grads);
  st.grad_norm = std::sqrt(grad_sumsq());  // identical on every rank
  st.lr = lr ? *lr : parallel::learning_rate(p_.cfg.optim, s, p_.cfg.train.steps);
  st.skipped = !std::isfinite(st.grad_norm);
  if (st.skipped && p_.cfg.train.nonfinite == "stop") {
    throw core::Error(fmt::format("non-finite gradient norm at step {}; stopping with the last checkpoint kept", s))
        .with_hint("lower optim.lr, check the data, or set train.nonfinite=skip to drop such updates");
  }
  // skip: no update; the step still counts (its batch is consumed) and is reported
  if (!st.skipped) update(s, st.grad_norm, st.lr);
  if (pp_ > 1) {  // the head's stage has the losses (every tp rank of it: count one)
    if (pp_rank_ != pp_ - 1 || tp_rank_ != 0) loss_sum = 0;
    p_.world.all_reduce(&loss_sum, 1, parallel::DType::F64, parallel::ReduceOp::Sum);
  } else if (dp_ > 1) {
    double sums[3] = {loss_sum, kd[0], kd[1]};
    p_.comms.dp->all_reduce(sums, p_.teacher ? 3 : 1, parallel::DType::F64, parallel::ReduceOp::Sum);
    loss_sum = sums[0], kd[0] = sums[1], kd[1] = sums[2];
  }
  st.loss = loss_sum / static_cast<double>(st.tokens);
  if (p_.teacher) {
    st.ce_loss = kd[0] / static_cast<double>(st.tokens);
    st.kd_loss = kd[1] / static_cast<double>(st.tokens);
  }
  st.mem = p_.device.memory_stats().window_peak;
  if (st.skipped) {  // (reported without the communication figures)
    st.ms = ms_between(t0, Clock::now());
    st.tokens_per_s = st.tokens / (st.ms / 1000.0);
    return st;
  }
  p_.device.synchronize();  // the step's device work is done (timings are real)
  st.ms = ms_between(t0, Clock::now());
  st.tokens_per_s = st.tokens / (st.ms / 1000.0);
  // tensor-parallel all-reduces block the step: all of their time is exposed
  const double tp_ms = (tp_blocked_s() - tp_blocked0) * 1e3;
  st.comm_ms = p_.sync.comm_ms() + tp_ms;
  st.exposed_comm_ms = p_.sync.exposed_ms() + tp_ms;
  st.compute_ms = st.ms - st.exposed_comm_ms - st.data_ms;
  return st;
}

double Stepper::forward_backward(const io::Batch& batch, double* compute_ms, double* kd) {
  if (p_.pipe) {
    const auto tc = Clock::now();
    const double loss_sum = pipeline_forward_backward(batch);
    p_.device.synchronize();
    *compute_ms = p_.faults.after_compute(dp_rank_, ms_between(tc, Clock::now()));
    return loss_sum;
  }
  TrainModel& model = p_.model;
  model.zero_grads();
  const float loss_weight = 1.0f / static_cast<float>(batch.global_targets);
  double loss_sum = 0;  // sum of token losses of this rank's share
  const auto tc = Clock::now();
  // what the forward/backward allocates (activations, scratch, logits, token buffers)
  core::MemoryScope scope(core::MemCat::Activations);
  const auto hook = [this](int i) { p_.sync.on_grad_ready(i); };
  // ZeRO-2/3 reduce (and ZeRO-3 gathers) in every micro-step, in the model's order: every dp
  // rank must run as many micro-steps; one with fewer samples (dynamic schedule, documents)
  // pads with empty ones (one position, no target: zero gradients)
  const bool every = p_.sync.reduces_every_micro_step();
  int n_steps = batch.n_micro;
  if (every && dp_ > 1) p_.comms.dp->all_reduce(&n_steps, 1, parallel::DType::I32, parallel::ReduceOp::Max);
  // a replica with no samples this step (dynamic schedule) runs no backward; begin() lets
  // finish() join every bucket's collective with zero gradients
  if (!every && batch.n_micro == 0) p_.sync.begin(model);
  for (int m = 0; m < n_steps; ++m) {
    if (m >= batch.n_micro) {
      const int32_t tok = 0, no_target = -1;
      model.clear_distill();  // (no target: no loss of either kind)
      model.forward(&tok, &no_target, 1, 1);
      p_.sync.begin(model);
      model.backward(loss_weight, hook);
      continue;
    }
    const io::MicroBatch& mb = batch.micro[static_cast<size_t>(m)];
    const int32_t* doc_ids = mb.doc_ids.empty() ? nullptr : mb.doc_ids.data();
    if (p_.teacher) model.set_distill(p_.teacher->forward(mb.inputs.data(), mb.B, mb.T, doc_ids));
    loss_sum += model.forward(mb.inputs.data(), mb.targets.data(), mb.B, mb.T, doc_ids) * model.loss_tokens();
    kd[0] += model.distill_ce_sum();
    kd[1] += model.distill_kl_sum();
    const bool last = m == batch.n_micro - 1;
    if (every || last) {
      p_.sync.begin(model);
      model.backward(loss_weight, hook);
    } else {
      model.backward(loss_weight);
    }
  }
  model.clear_distill();  // (evals are plain cross-entropy)
  p_.device.synchronize();  // a GPU's backward is queued: the schedule needs its real compute time
  *compute_ms = p_.faults.after_compute(dp_rank_, ms_between(tc, Clock::now()));
  return loss_sum;
}

double Stepper::pipeline_forward_backward(const io::Batch& batch) {
  TrainModel& model = p_.model;
  model.zero_grads();
  const float loss_weight = 1.0f / static_cast<float>(batch.global_targets);
  core::MemoryScope scope(core::MemCat::Activations);
  std::vector<parallel::PipeMicro> micro;
  for (int m = 0; m < batch.n_micro; ++m) {
    const io::MicroBatch& mb = batch.micro[static_cast<size_t>(m)];
    micro.push_back({mb.inputs.data(), mb.targets.data(), mb.doc_ids.empty() ? nullptr : mb.doc_ids.data(), mb.B, mb.T});
  }
  // the tied embedding's gradient is final only once both stages' parts are summed (after
  // the schedule): its data-parallel bucket waits for it
  const auto hook = [this](int i) {
    if (i != tied_) p_.sync.on_grad_ready(i);
  };
  if (batch.n_micro == 0) p_.sync.begin(model);  // (no backward: finish() joins with zeros)
  const double loss_sum = p_.pipe->train(micro, loss_weight, [&] { p_.sync.begin(model); }, hook);
  if (tied_ >= 0) {
    sum_tied_grads();
    if (batch.n_micro > 0) p_.sync.on_grad_ready(tied_);
  }
  return loss_sum;
}

std::vector<PipeStageStats> Stepper::pipeline_stats() {
  const parallel::PipeTiming& t = p_.pipe->last_timing();
  const double mine[4] = {t.run_ms, t.idle_ms, static_cast<double>(t.slots),
                          static_cast<double>(p_.pipe->activation_bytes())};
  std::vector<double> all(4 * static_cast<size_t>(p_.world.size()));
  p_.world.all_gather(mine, all.data(), 4, parallel::DType::F64);
  std::vector<PipeStageStats> v(static_cast<size_t>(pp_));
  for (int s = 0; s < pp_; ++s) {
    const size_t i = 4 * static_cast<size_t>(p_.mesh.rank_of(0, s, 0));
    v[static_cast<size_t>(s)] = {all[i], all[i + 1], static_cast<int>(all[i + 2]), all[i + 3]};
  }
  return v;
}

void Stepper::sum_tied_grads() {
  // both ends send their copy's gradient and add the other's: a + b on one, b + a on the
  // other, bitwise the same
  const parallel::ParamInfo& p = p_.model.params_info()[static_cast<size_t>(tied_)];
  float* g = p_.model.grad(tied_);
  const int peer = p_.model.stage().embed ? pp_ - 1 : 0;
  p_.pp_dev->group_start();  // (NCCL: the crossing pair in one group)
  auto recv = p_.pp_dev->irecv(tied_recv_.raw(), static_cast<size_t>(p.numel), parallel::DType::F32, peer, 32001);
  auto send = p_.pp_dev->isend(g, static_cast<size_t>(p.numel), parallel::DType::F32, peer, 32001);
  p_.pp_dev->group_end();
  recv->wait();
  send->wait();
  p_.ops.add_f32(g, tied_recv_.f32(), p.numel);
}

void Stepper::update(int64_t s, double norm, double lr) {
  const std::vector<parallel::RangeData>& data = owned_;
  const auto& ranges = p_.sync.owned_ranges();
  if (p_.cfg.optim.grad_clip > 0 && norm > p_.cfg.optim.grad_clip) {
    const float scale = static_cast<float>(p_.cfg.optim.grad_clip / (norm + 1e-6));
    for (size_t k = 0; k < ranges.size(); ++k) p_.ops.scale(data[k].grads, ranges[k].second - ranges[k].first, scale);
  }
  p_.optim.step(data, static_cast<float>(lr), s + 1);
  p_.sync.gather_params();  // (and the working copy: ZeRO-1/2 gather the master, ZeRO-3 its pieces)
}

// After a step: every rank's modelled cost and compute time to every rank (a small
// all-gather on this thread; the loader's thread never calls MPI). A dp replica's time is its
// slowest tp rank's. Feeds the dynamic schedule and returns the imbalance (max / mean time).
double Stepper::exchange_work(int64_t s, const io::Batch& batch, double compute_ms, std::vector<int64_t>* tokens) {
  tokens->assign(static_cast<size_t>(dp_), batch.targets);
  if (dp_ == 1) return 1.0;
  const double mine[3] = {batch.cost, compute_ms, static_cast<double>(batch.targets)};
  std::vector<double> all(3 * static_cast<size_t>(p_.world.size()));
  p_.world.all_gather(mine, all.data(), 3, parallel::DType::F64);
  std::vector<double> c(static_cast<size_t>(dp_), 0.0), t(static_cast<size_t>(dp_), 0.0);
  for (int r = 0; r < p_.world.size(); ++r) {
    const auto co = p_.mesh.coords(r);
    const size_t d = static_cast<size_t>(co.dp), i = 3 * static_cast<size_t>(r);
    if (co.tp == 0 && co.pp == 0) c[d] = all[i], (*tokens)[d] = static_cast<int64_t>(all[i + 2]);
    t[d] = std::max(t[d], all[i + 1]);
  }
  p_.loader.report(s, c, t);
  double mx = 0, mean = 0;
  for (double v : t) mx = std::max(mx, v), mean += v / dp_;
  return mean > 0 ? mx / mean : 1.0;
}

// Each element counted once in the mesh (parameters replicated across tp are counted on tp
// rank 0 only). Each range's sum of squares lands in a device double; the host adds them in
// range order (deterministic on every device).
double Stepper::grad_sumsq() {
  double* partial = static_cast<double*>(norm_partials_.raw());
  for (size_t i = 0; i < norm_ranges_.size(); ++i) {
    const auto [lo, hi] = norm_ranges_[i];
    p_.ops.sum_squares(partial + i, norm_ptrs_[i], hi - lo);
  }
  p_.device.copy(norm_host_.data(), partial, norm_host_.size() * sizeof(double));
  double local = 0;
  for (double v : norm_host_) local += v;
  if (p_.sync.zero() >= 1 || pp_ > 1) {
    p_.world.all_reduce(&local, 1, parallel::DType::F64, parallel::ReduceOp::Sum);
  } else if (tp_ > 1) {
    p_.comms.tp->all_reduce(&local, 1, parallel::DType::F64, parallel::ReduceOp::Sum);
  }
  return local;
}

double Stepper::tp_blocked_s() const {
  return tp_ > 1 ? p_.model.tp().comm()->stats().blocked_s : 0.0;  // the model's tp communicator
}

}  // namespace mt::launch
