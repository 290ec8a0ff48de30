// What: Trainer (see trainer.h): construction, the eval, and the small queries; run() is in
// run_loop.cc, step() in step.cc, the checkpoints in checkpoint_manager.cc.
#include "launch/train/trainer.h"

#include <malloc.h>

#include <algorithm>

#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "io/hf/hf_import.h"
#include "launch/blas_env.h"
#include "launch/signals.h"
#include "launch/train/checkpoint_manager.h"
#include "launch/train/step.h"
#include "parallel/hierarchical.h"
#include "parallel/models/accuracy.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/stages.h"

namespace mt::launch {

namespace {
// concat mode splits the global batch evenly (static, round_robin, balanced): whole
// micro-batches of the same shape on every rank
void check_batch_split(const core::Config& cfg, const io::LoaderOptions& lopt, int dp) {
  const int denom = cfg.train.micro_batch * dp;
  if (lopt.mode == io::SampleMode::Concat && lopt.policy != io::SchedulePolicy::Dynamic &&
      cfg.train.batch_size % denom != 0) {
    throw core::Error(fmt::format("train.batch_size = {} is not divisible by train.micro_batch x dp = {} x {}",
                                  cfg.train.batch_size, cfg.train.micro_batch, dp))
        .with_yaml("train.batch_size")
        .with_hint(fmt::format("the global batch is split into dp ranks x gradient-accumulation steps x "
                               "micro-batches; e.g. train.batch_size={}, or data.schedule=dynamic (uneven shares)",
                               (cfg.train.batch_size + denom - 1) / denom * denom));
  }
}

// train.micro_batch: auto as a number for this world (a no-op where start_run resolved it)
core::Config with_micro_batch(const core::Config& cfg, int world) {
  core::Config c = cfg;
  core::resolve_micro_batch(c, world);
  return c;
}

// Micro-batch shapes vary (documents: rows as long as their longest document; packed
// (balanced, dynamic) and dynamic: shares that change), and the model re-allocates its
// activations for every new shape. By default glibc hands those pages back to the OS and the next allocation faults them in
// again (first touch runs at ~0.45 GB/s here: 178k instead of 96k page faults over 6 steps
// of examples/small.yaml). Keep freed memory in the heap for reuse instead.
void keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}
}  // namespace

Trainer::Trainer(const core::Config& config, parallel::Communicator& world, core::Device* device,
                 kernels::OpProfile* profile)
    : cfg_(with_micro_batch(config, world.size())), world_(world),
      device_(device ? device : &core::get_device(config.train.device)), faults_(cfg_) {
  const core::Config& cfg = cfg_;
  kernels::OpsOptions opt;
  opt.working = working_dtype(cfg, *device_);
  opt.attention = cfg.train.attention;
  ops_ = kernels::make_ops(*device_, opt);
  if (profile) ops_ = kernels::profile_ops(std::move(ops_), profile);
  const int world_size = world.size();
  tp_ = cfg.parallel.tp;
  const int pp = cfg.parallel.pp;
  dp_ = cfg.parallel.dp > 0 ? cfg.parallel.dp : std::max(1, world_size / (tp_ * pp));
  const auto arch = parallel::make_architecture(cfg.model);  // model.arch: the mesh rule, then the model
  parallel::Mesh::validate(world_size, dp_, tp_, pp, parallel::tp_rule(*arch));
  mesh_ = std::make_unique<parallel::Mesh>(world_size, dp_, tp_, pp);
  comms_ = parallel::make_mesh_comms(world, *mesh_);
  dp_rank_ = comms_.dp->rank();
  tp_rank_ = comms_.tp->rank();
  pp_ = pp;
  pp_rank_ = comms_.pp->rank();

  const io::LoaderOptions lopt = io::LoaderOptions::from_config(cfg, dp_, dp_rank_);
  check_batch_split(cfg, lopt, dp_);
  // the pipeline's stages and schedule, checked before anything is written
  const int virtual_stages = pp > 1 ? cfg.parallel.pp_virtual : 1;  // (one stage: nothing to interleave)
  const parallel::PipeSchedule schedule = parallel::parse_pipe_schedule(cfg.parallel.pp_schedule);
  vstages_ = parallel::split_layers(*arch, pp_, virtual_stages, cfg.parallel.pp_layers);
  if (pp_ > 1) {
    if (cfg.parallel.zero >= 2) {
      throw core::Error(fmt::format("parallel.zero = {} does not compose with parallel.pp = {} yet", cfg.parallel.zero, pp_))
          .with_yaml("parallel.zero")
          .with_hint("use parallel.zero = 1 (optimizer state sharded over dp) with a pipeline; ZeRO-2/3 reduce and "
                     "gather per layer in every micro-batch, which the pipeline's interleaved micro-batches break");
    }
    if (lopt.mode == io::SampleMode::Concat && lopt.policy != io::SchedulePolicy::Dynamic)
      parallel::check_pipeline(schedule, pp_, virtual_stages, cfg.train.batch_size / (cfg.train.micro_batch * dp_));
  }
  const parallel::StageLayers stage = parallel::stage_layers(vstages_, pp_, pp_rank_);
  if (lopt.mode != io::SampleMode::Concat || lopt.policy == io::SchedulePolicy::Dynamic) keep_freed_memory();

  // Device buffers need a communicator that works on them (null back on the CPU: use MPI's).
  // Groups of one rank exchange nothing, so they need none.
  if (dp_ > 1) dp_dev_ = parallel::make_device_communicator(*comms_.dp, *device_, cfg.parallel.backend);
  if (tp_ > 1) tp_dev_ = parallel::make_device_communicator(*comms_.tp, *device_, cfg.parallel.backend);
  if (dp_ > 1) {  // parallel.allreduce: the host group's all-reduce (staging reduces over it too)
    const parallel::AllreducePlan plan =
        dp_dev_ && dp_dev_->backend_name() == "nccl"
            ? parallel::configure_allreduce(*dp_dev_, cfg.parallel.allreduce)
            : parallel::configure_allreduce(*comms_.dp, cfg.parallel.allreduce, cfg.parallel.fake_hosts);
    if (world.rank() == 0) core::log::info("dp all-reduce: {}", plan.note);
  }
  parallel::Communicator* dp_comm = dp_dev_ ? dp_dev_.get() : comms_.dp.get();
  parallel::Communicator* tp_comm = tp_dev_ ? tp_dev_.get() : comms_.tp.get();

  if (pp_ > 1) {  // activations and gradients on two communicators (runner.h: NCCL's in-order p2p)
    pp_dev_ = parallel::make_device_communicator(*comms_.pp, *device_, cfg.parallel.backend);
    pp_bwd_ = parallel::make_device_communicator(*comms_.pp, *device_, cfg.parallel.backend);
  }
  const parallel::ModelContext mctx =
      model_context(cfg, tp_, tp_rank_, tp_ > 1 ? tp_comm : nullptr, dp_, ops_.get(), stage);
  model_ = arch->build(mctx);
  parallel::Communicator* pp_fwd = pp_dev_ ? pp_dev_.get() : comms_.pp.get();  // (CPU: the MPI group, tags apart)
  parallel::Communicator* pp_bwd = pp_bwd_ ? pp_bwd_.get() : comms_.pp.get();
  if (pp_ > 1)
    pipe_ = std::make_unique<parallel::PipelineRunner>(*arch, mctx, *model_, *pp_fwd, *pp_bwd, schedule, virtual_stages);
  const auto reduce_dtype =
      cfg.parallel.grad_reduce_dtype == "bf16" ? parallel::DType::BF16 : parallel::DType::F32;
  sync_ = parallel::make_dp_sync(cfg.parallel.zero, dp_comm, *model_, cfg.parallel.bucket_mb, ops_.get(), reduce_dtype);
  model_->init_weights(cfg.train.seed);  // (ZeRO-3: into the sync's shards)
  optim_ = std::make_unique<parallel::Optimizer>(cfg.optim, model_->params_info(), sync_->owned_ranges(),
                                                 ops_.get());
  data_ = io::make_data_source(cfg, world.rank(), world.size());  // the ranks share the dataset's verification
  MT_CHECK(data_->vocab_size() <= cfg.model.vocab_size, "data vocabulary {} exceeds model.vocab_size {}",
           data_->vocab_size(), cfg.model.vocab_size);
  loader_ = std::make_unique<io::Loader>(*data_, lopt, cfg.data.source == "hdf5" ? cfg.data.path : "");
  if (!cfg.train.distill.teacher.empty()) {  // (the config refuses it at pp > 1)
    teacher_ = std::make_unique<Teacher>(cfg, *model_, world, *ops_, tp_ > 1 ? tp_comm : nullptr);
    if (world.rank() == 0) core::log::info("distill: teacher {}", teacher_->describe());
  }
  stepper_ = std::make_unique<Stepper>(
      StepParts{cfg_, world_, *mesh_, comms_, *device_, *ops_, *model_, *sync_, *optim_, *loader_, faults_,
                pipe_.get(), pp_fwd, teacher_.get()});
  io::CheckpointPipeline pipeline = io::CheckpointPipeline::none(cfg_.model.n_layer);
  if (pp_ > 1) pipeline = {pp_, virtual_stages, cfg.parallel.pp_schedule, vstages_};
  checkpoints_ = std::make_unique<CheckpointManager>(cfg_, world_, *mesh_, *device_, *model_, *optim_, *sync_,
                                                     *loader_, started_, pipeline);
  verify_identical_init();
}

Trainer::~Trainer() = default;

int64_t Trainer::tokens_per_step() const {
  return loader_->options().mode == io::SampleMode::Documents
             ? loader_->options().batch_tokens
             : static_cast<int64_t>(cfg_.train.batch_size) * cfg_.model.seq_len;
}

double Trainer::peak_gflops_per_rank() const {
  if (cfg_.run.peak_gflops > 0) return cfg_.run.peak_gflops;
  if (const double peak = default_peak_gflops(device_->kind(), cfg_.train.precision); peak > 0) return peak;
  return measure_sgemm_gflops(512, 2);
}

uint64_t Trainer::param_checksum() const {
  if (!model_->owns_params()) {  // ZeRO-3: this rank's pieces (they differ across dp ranks)
    const auto h = sync_->master_host(const_cast<TrainModel&>(*model_));
    return core::fnv1a64(reinterpret_cast<const unsigned char*>(h.data()), h.size() * sizeof(float));
  }
  core::Tensor& params = const_cast<TrainModel&>(*model_).params();
  const size_t n = params.nbytes();
  std::vector<unsigned char> host;  // device parameters are read through a host copy
  const unsigned char* p = static_cast<const unsigned char*>(params.raw());
  if (device_->kind() != core::DeviceKind::CPU) {
    host.resize(n);
    device_->copy(host.data(), params.raw(), n);
    p = host.data();
  }
  return core::fnv1a64(p, n);
}

// Every dp replica must start from the same parameters: compare checksums across the dp group.
void Trainer::verify_identical_init() {
  // (ZeRO-3 ranks hold different pieces; their init draws each element from its full index)
  if (dp_ == 1 || !model_->owns_params()) return;
  int64_t mine = static_cast<int64_t>(param_checksum() >> 1);
  int64_t mx = mine, mn = -mine;
  comms_.dp->all_reduce(&mx, 1, parallel::DType::I64, parallel::ReduceOp::Max);
  comms_.dp->all_reduce(&mn, 1, parallel::DType::I64, parallel::ReduceOp::Max);
  if (mx != mine || -mn != mine) {
    throw core::Error("parameters differ across data-parallel ranks after initialisation")
        .with_hint("all ranks must use the same train.seed and model config");
  }
}

StepStats Trainer::step(int64_t s, std::optional<double> lr) { return stepper_->step(s, lr); }

void Trainer::save_checkpoint(int64_t steps_done) { checkpoints_->save(steps_done, state_); }
int64_t Trainer::restore_checkpoint() { return checkpoints_->restore(&state_); }
std::string Trainer::checkpoint_dir() const { return checkpoints_->dir(); }

void Trainer::load_initial_weights() {
  if (cfg_.model.init_from.empty() || checkpoints_->restored()) return;
  const auto t0 = Clock::now();
  io::hf::load_weights(io::hf::hf_dir(cfg_.model.init_from), *model_);
  if (world_.rank() == 0) {
    core::log::info("model: weights from {} ({:.0f} ms, this rank's slices only)", cfg_.model.init_from,
                    ms_between(t0, Clock::now()));
  }
  verify_identical_init();
}

double Trainer::evaluate() { return *evaluate_unless_preempted(false); }

bool Trainer::agree_preemption() {
  int32_t preempt = preemption_requested() ? 1 : 0;
  if (world_.size() > 1) world_.all_reduce(&preempt, 1, parallel::DType::I32, parallel::ReduceOp::Max);
  return preempt != 0;
}

std::optional<double> Trainer::evaluate_unless_preempted(bool interruptible) {
  double acc[2] = {0, 0};  // sum of token losses, tokens with a target
  parallel::TopkCounts hits;  // accuracy (parallel/models/accuracy.h): every tp rank's are the same
  core::MemoryScope scope(core::MemCat::Activations);
  for (int64_t k = 0; k < cfg_.train.eval_batches; ++k) {
    if (interruptible && agree_preemption()) return std::nullopt;  // every rank at the same batch
    loader_->eval_batch(k, eval_batch_);
    if (pipe_) {  // forward through the stages; the head's stage has the losses (one tp rank counts)
      std::vector<parallel::PipeMicro> micro;
      for (const io::MicroBatch& mb : eval_batch_.micro)
        micro.push_back({mb.inputs.data(), mb.targets.data(), mb.doc_ids.empty() ? nullptr : mb.doc_ids.data(), mb.B,
                         mb.T});
      int64_t tokens = 0;
      parallel::TopkCounts stage_hits;
      const double loss = pipe_->forward_only(micro, &tokens, [&](parallel::Model& m) {
        stage_hits.add(parallel::head_topk_counts(m));
      });
      if (model_->stage().head && tp_rank_ == 0) {
        acc[0] += loss, acc[1] += static_cast<double>(tokens);
        hits.add(stage_hits);
      }
      continue;
    }
    // ZeRO-3 gathers blocks in every forward: every dp rank runs as many (padding with empty ones)
    int n = eval_batch_.n_micro;
    if (!model_->owns_params() && dp_ > 1) comms_.dp->all_reduce(&n, 1, parallel::DType::I32, parallel::ReduceOp::Max);
    for (int m = 0; m < n; ++m) {
      if (m >= eval_batch_.n_micro) {
        const int32_t tok = 0, no_target = -1;
        model_->forward(&tok, &no_target, 1, 1);
        continue;
      }
      const io::MicroBatch& mb = eval_batch_.micro[static_cast<size_t>(m)];
      acc[0] += model_->forward(mb.inputs.data(), mb.targets.data(), mb.B, mb.T,
                                mb.doc_ids.empty() ? nullptr : mb.doc_ids.data()) * model_->loss_tokens();
      acc[1] += static_cast<double>(model_->loss_tokens());
      hits.add(parallel::head_topk_counts(*model_));
    }
  }
  int64_t counts[3] = {hits.targets, hits.top1, hits.topk};
  if (pipe_) {
    world_.all_reduce(acc, 2, parallel::DType::F64, parallel::ReduceOp::Sum);
    world_.all_reduce(counts, 3, parallel::DType::I64, parallel::ReduceOp::Sum);
  } else if (dp_ > 1) {
    comms_.dp->all_reduce(acc, 2, parallel::DType::F64, parallel::ReduceOp::Sum);
    comms_.dp->all_reduce(counts, 3, parallel::DType::I64, parallel::ReduceOp::Sum);
  }
  last_eval_.loss = acc[1] > 0 ? acc[0] / acc[1] : 0.0;
  last_eval_.targets = counts[0], last_eval_.top1 = counts[1], last_eval_.top5 = counts[2];
  return last_eval_.loss;
}

// The allocated categories as the device booked them (core/memory.h: the figures metrics.jsonl's
// "mem" reports), activations as the model holds them (before its first forward: the modelled
// figure at micro_batch x seq_len), and their sum: the expected peak of a step.
std::string Trainer::memory_report() const {
  const double mib = 1.0 / 1048576.0;
  const core::MemoryBreakdown now = device_->memory_stats().now;
  const auto cat = [&](core::MemCat c) { return static_cast<double>(now[c]); };
  const double working = static_cast<double>(model_->working_copy_bytes());
  std::string extra;
  if (working > 0)
    extra = fmt::format(" (fp32 master {:.1f} MiB + {} working copy {:.1f} MiB)", (cat(core::MemCat::Params) - working) * mib,
                        core::dtype_name(ops_->working_dtype()), working * mib);
  // activations: what the model holds (0 before its first forward), else the modelled figure
  // at micro_batch x seq_len; with recomputation or sequence parallelism also the modelled
  // figure without them
  const auto modelled = [&](parallel::Recompute r, bool sp) {
    const int T = cfg_.model.seq_len, nh = cfg_.model.n_head / tp_;
    const int att_per_row = static_cast<int>(ops_->attention_state_elems(1, T, nh) / (static_cast<int64_t>(nh) * T));
    return model_->arch().activation_bytes(cfg_.train.micro_batch, T, tp_,
                                           static_cast<int>(core::dtype_size(ops_->working_dtype())), att_per_row, r, sp);
  };
  const bool held = model_->activation_bytes() > 0;
  const bool sp = model_->seq_parallel();
  const double acts = held ? static_cast<double>(model_->activation_bytes()) : modelled(model_->recompute(), sp);
  const bool rc = model_->recompute() != parallel::Recompute::None;
  std::string recompute;  // "(recompute full; none: X MiB)", "(sp over tp 2; without: X MiB)"
  if (rc || sp)
    recompute = fmt::format(" ({}{}{}; {}: {:.1f} MiB)", rc ? "recompute " + cfg_.train.recompute : "",
                            rc && sp ? ", " : "", sp ? fmt::format("sp over tp {}", tp_) : "", sp ? "without" : "none",
                            modelled(parallel::Recompute::None, false) * mib);
  // ZeRO-2/3: the rank's persistent pieces and the layers gathered (or reduced) around their use
  std::string params_split, grads_split;
  if (!model_->owns_params())
    params_split = fmt::format(" (pieces {:.1f} MiB + gathered {:.1f} MiB)", sync_->param_piece_bytes() * mib,
                               (sync_->param_bytes() - sync_->param_piece_bytes()) * mib);
  if (!model_->owns_grads())
    grads_split = fmt::format(" (shard {:.1f} MiB + layers {:.1f} MiB)", sync_->grad_shard_bytes() * mib,
                              (sync_->grad_bytes() - sync_->grad_shard_bytes()) * mib);
  const double resident = static_cast<double>(now.total()) - cat(core::MemCat::Activations);
  return fmt::format("memory per rank: params {:.1f} MiB{}{}, grads {:.1f} MiB{}, optimizer state {:.1f} MiB{}, "
                     "comm {:.1f} MiB, other {:.1f} MiB, activations {:.1f} MiB{} {}; expected peak {:.1f} MiB "
                     "(on {}; measured per step: metrics.jsonl \"mem\")",
                     cat(core::MemCat::Params) * mib, params_split, extra, cat(core::MemCat::Grads) * mib, grads_split,
                     cat(core::MemCat::Optimizer) * mib,
                     sync_->zero() > 0 ? fmt::format(" (ZeRO-{}, 1/{} shard)", sync_->zero(), dp_) : "",
                     cat(core::MemCat::Comm) * mib, cat(core::MemCat::Other) * mib, acts * mib,
                     recompute,
                     held ? "held" : fmt::format("modelled at micro_batch {} x seq_len {}", cfg_.train.micro_batch,
                                                 cfg_.model.seq_len),
                     (resident + acts) * mib, device_->name());
}

}  // namespace mt::launch
