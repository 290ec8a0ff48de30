// What: Trainer (see trainer.h).
#include "launch/train/trainer.h"

#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <thread>

#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "launch/train/checkpoint_manager.h"
#include "launch/train/step.h"
#include "io/checkpoint.h"
#include "io/tb_writer.h"
#include "launch/blas_env.h"
#include "launch/launch_env.h"
#include "launch/signals.h"
#include "parallel/timeout_communicator.h"

namespace mt::launch {

namespace {
// Creates `dir` (and parents) and checks that this process may write into it; else an Error
// naming the config key, raised before the first step rather than at the first checkpoint.
void ensure_writable_dir(const std::string& dir, const char* key, const char* what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!ec && ::access(dir.c_str(), W_OK) != 0) ec = std::error_code(errno, std::generic_category());
  if (ec) {
    throw core::Error(fmt::format("cannot write {} into {}", what, dir)).with_file(dir).with_yaml(key)
        .with_library(ec.message())
        .with_hint(fmt::format("set {} to a writable directory (checked before the first step)", key));
  }
}
}  // namespace

Trainer::Trainer(const core::Config& cfg, parallel::Communicator& world, core::Device* device)
    : cfg_(cfg), world_(world), device_(device ? device : &core::get_device(cfg.train.device)), faults_(cfg_) {
  kernels::OpsOptions opt;
  opt.working = working_dtype(cfg, *device_);
  opt.attention = cfg.train.attention;
  ops_ = kernels::make_ops(*device_, opt);
  const int world_size = world.size();
  tp_ = cfg.parallel.tp;
  dp_ = cfg.parallel.dp > 0 ? cfg.parallel.dp : std::max(1, world_size / tp_);
  parallel::Mesh::validate(world_size, dp_, tp_, cfg.model.n_head);
  mesh_ = std::make_unique<parallel::Mesh>(world_size, dp_, tp_);
  comms_ = parallel::make_mesh_comms(world, *mesh_);
  dp_rank_ = comms_.dp->rank();
  tp_rank_ = comms_.tp->rank();

  const io::LoaderOptions lopt = io::LoaderOptions::from_config(cfg, dp_, dp_rank_);
  const int denom = cfg.train.micro_batch * dp_;
  // concat mode splits the global batch evenly (static, round_robin, balanced): whole
  // micro-batches of the same shape on every rank
  if (lopt.mode == io::SampleMode::Concat && lopt.policy != io::SchedulePolicy::Dynamic &&
      cfg.train.batch_size % denom != 0) {
    throw core::Error(fmt::format("train.batch_size = {} is not divisible by train.micro_batch x dp = {} x {}",
                                  cfg.train.batch_size, cfg.train.micro_batch, dp_))
        .with_yaml("train.batch_size")
        .with_hint(fmt::format("the global batch is split into dp ranks x gradient-accumulation steps x "
                               "micro-batches; e.g. train.batch_size={}, or data.schedule=dynamic (uneven shares)",
                               (cfg.train.batch_size + denom - 1) / denom * denom));
  }
  if (lopt.mode == io::SampleMode::Documents || lopt.policy == io::SchedulePolicy::Dynamic) {
    // Micro-batch shapes vary (documents: rows as long as their longest document; dynamic:
    // shares that change), and Gpt re-allocates its activations for every new shape. By
    // default glibc hands those pages back to the OS and the next allocation faults them in
    // again (first touch runs at ~0.45 GB/s here: 178k instead of 96k page faults over 6 steps
    // of examples/small.yaml). Keep freed memory in the heap for reuse instead.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }

  // Device buffers need a communicator that works on them (null back on the CPU: use MPI's).
  // Groups of one rank exchange nothing, so they need none.
  if (dp_ > 1) dp_dev_ = parallel::make_device_communicator(*comms_.dp, *device_, cfg.parallel.backend);
  if (tp_ > 1) tp_dev_ = parallel::make_device_communicator(*comms_.tp, *device_, cfg.parallel.backend);
  parallel::Communicator* dp_comm = dp_dev_ ? dp_dev_.get() : comms_.dp.get();
  parallel::Communicator* tp_comm = tp_dev_ ? tp_dev_.get() : comms_.tp.get();

  model_ = make_model(cfg, tp_, tp_rank_, tp_ > 1 ? tp_comm : nullptr, parallel::GradSync::flat_alignment(dp_),
                      ops_.get());
  const auto reduce_dtype =
      cfg.parallel.grad_reduce_dtype == "bf16" ? parallel::DType::BF16 : parallel::DType::F32;
  sync_ = std::make_unique<parallel::GradSync>(dp_comm, model_->params_info(), model_->num_local_params(),
                                               cfg.parallel.bucket_mb, cfg.parallel.zero == 1, ops_.get(),
                                               reduce_dtype);
  optim_ = std::make_unique<parallel::Optimizer>(cfg.optim, model_->params_info(), sync_->owned_ranges(),
                                                 ops_.get());
  data_ = io::make_data_source(cfg, world.rank(), world.size());  // the ranks share the dataset's verification
  MT_CHECK(data_->vocab_size() <= cfg.model.vocab_size, "data vocabulary {} exceeds model.vocab_size {}",
           data_->vocab_size(), cfg.model.vocab_size);
  loader_ = std::make_unique<io::Loader>(*data_, lopt, cfg.data.source == "hdf5" ? cfg.data.path : "");
  stepper_ = std::make_unique<Stepper>(
      StepParts{cfg_, world_, *mesh_, comms_, *device_, *ops_, *model_, *sync_, *optim_, *loader_, faults_});
  checkpoints_ = std::make_unique<CheckpointManager>(cfg_, world_, *mesh_, *device_, *model_, *optim_, *sync_,
                                                     *loader_, started_);
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
  if (dp_ == 1) return;
  int64_t mine = static_cast<int64_t>(param_checksum() >> 1);
  int64_t mx = mine, mn = -mine;
  comms_.dp->all_reduce(&mx, 1, parallel::DType::I64, parallel::ReduceOp::Max);
  comms_.dp->all_reduce(&mn, 1, parallel::DType::I64, parallel::ReduceOp::Max);
  if (mx != mine || -mn != mine) {
    throw core::Error("parameters differ across data-parallel ranks after initialisation")
        .with_hint("all ranks must use the same train.seed and model config");
  }
}

StepStats Trainer::step(int64_t s) { return stepper_->step(s); }

void Trainer::save_checkpoint(int64_t steps_done) { checkpoints_->save(steps_done, state_); }
int64_t Trainer::restore_checkpoint() { return checkpoints_->restore(&state_); }
std::string Trainer::checkpoint_dir() const { return checkpoints_->dir(); }

double Trainer::evaluate() { return *evaluate_unless_preempted(false); }

bool Trainer::agree_preemption() {
  int32_t preempt = preemption_requested() ? 1 : 0;
  if (world_.size() > 1) world_.all_reduce(&preempt, 1, parallel::DType::I32, parallel::ReduceOp::Max);
  return preempt != 0;
}

std::optional<double> Trainer::evaluate_unless_preempted(bool interruptible) {
  double acc[2] = {0, 0};  // sum of token losses, tokens with a target
  for (int64_t k = 0; k < cfg_.train.eval_batches; ++k) {
    if (interruptible && agree_preemption()) return std::nullopt;  // every rank at the same batch
    loader_->eval_batch(k, eval_batch_);
    for (int m = 0; m < eval_batch_.n_micro; ++m) {
      const io::MicroBatch& mb = eval_batch_.micro[static_cast<size_t>(m)];
      acc[0] += model_->forward(mb.inputs.data(), mb.targets.data(), mb.B, mb.T) * model_->loss_tokens();
      acc[1] += static_cast<double>(model_->loss_tokens());
    }
  }
  if (dp_ > 1) comms_.dp->all_reduce(acc, 2, parallel::DType::F64, parallel::ReduceOp::Sum);
  return acc[1] > 0 ? acc[0] / acc[1] : 0.0;
}

std::string Trainer::memory_report() const {
  const double mib = 1.0 / 1048576.0;
  const double params = model_->num_local_params() * 4.0 * mib;
  std::string extra;
  if (model_->working_copy_bytes() > 0)
    extra += fmt::format(", {} working copy {:.1f} MiB", core::dtype_name(ops_->working_dtype()),
                         model_->working_copy_bytes() * mib);
  std::string dev;
  if (device_->kind() != core::DeviceKind::CPU)
    dev = fmt::format("; {}: {:.1f} MiB allocated (peak {:.1f} MiB)", device_->name(), device_->bytes_in_use() * mib,
                      device_->peak_bytes_in_use() * mib);
  return fmt::format("memory per rank: params {:.1f} MiB{}, grads {:.1f} MiB, optimizer state {:.1f} MiB{}, "
                     "activations {:.1f} MiB{}",
                     params, extra, params, optim_->state_bytes() * mib,
                     cfg_.parallel.zero == 1 && dp_ > 1 ? fmt::format(" (ZeRO-1, 1/{} shard)", dp_) : "",
                     model_->activation_bytes() * mib, dev);
}

TrainSummary Trainer::run() {
  namespace log = core::log;
  const bool leader = world_.rank() == 0;
  const auto& tc = cfg_.train;
  const int64_t start = cfg_.checkpoint.resume.empty() ? 0 : restore_checkpoint();
  // A checkpoint at (or past) train.steps, or of a run that early-stopped, ends the run: a
  // requeued or repeated `resume=auto` trains nothing more. If summary.json already records
  // that step, the run is done and nothing is rewritten; else (the job died after its last
  // checkpoint) the final eval and the summary are redone.
  const bool stopped_early = state_.patience_exhausted(tc.early_stop_patience);
  const bool ended = start > 0 && (start >= tc.steps || stopped_early);
  if (ended) {
    int32_t done = 0;
    if (leader) {
      try {
        const auto j = nlohmann::json::parse(io::read_file(cfg_.run.dir + "/summary.json"));
        done = j.value("steps", int64_t{-1}) == start ? 1 : 0;
      } catch (const std::exception&) {
        done = 0;  // no (readable) summary: finish the run below
      }
    }
    if (world_.size() > 1) world_.all_reduce(&done, 1, parallel::DType::I32, parallel::ReduceOp::Max);
    if (leader) {
      const std::string why = stopped_early && start < tc.steps
                                  ? fmt::format("it stopped early at step {}", start)
                                  : fmt::format("its checkpoint is at step {}, train.steps = {}", start, tc.steps);
      log::info("the run is already complete ({}){}", why,
                done ? fmt::format("; {}/summary.json has its result, nothing to do", cfg_.run.dir)
                     : "; no summary.json for it yet: running the final eval");
    }
    if (done) {
      TrainSummary sum;
      sum.steps_done = start;
      sum.final_loss = state_.last_loss;
      sum.early_stopped = stopped_early;
      return sum;
    }
  }
  io::MetricsWriter metrics;
  if (leader) {
    // the run directory and the checkpoint directory (a preemption writes one even with
    // checkpoint.every = 0) must be writable now, not after hours of training
    ensure_writable_dir(cfg_.run.dir, "run.dir", "the run's records");
    ensure_writable_dir(checkpoint_dir(), cfg_.checkpoint.dir.empty() ? "run.dir" : "checkpoint.dir", "checkpoints");
    io::write_file_atomic(cfg_.run.dir + "/config.yaml", core::config_to_yaml(cfg_));
    if (on_run_start) on_run_start();
    checkpoints_->supersede_after(start);
    // drop the records after the checkpoint (and, when the final eval is redone, its record)
    if (start > 0) io::truncate_metrics(cfg_.run.dir, start, /*keep_eval_at_step=*/!ended);
    metrics = io::MetricsWriter(cfg_.run.dir, /*append=*/start > 0);
  }
  io::TbWriter tb;
  double peak_flops = 0;  // whole job, FLOP/s, for MFU
  if (leader) {
    if (cfg_.run.tensorboard) tb = io::TbWriter(cfg_.run.dir + "/tb");
    peak_flops = peak_gflops_per_rank() * 1e9 * world_.size();
  }
  const double flops_per_token = model_->flops_per_token(cfg_.model.seq_len);
  double tokens_done = 0;
  const bool live = leader && want_progress_line();  // progress line with ETA on a terminal (not mpirun's pty)
  const auto floor = data_->entropy_floor(cfg_.model.seq_len);
  if (leader) {
    log::info("model: {}", describe_model(cfg_, *model_));
    const auto& lo = loader_->options();
    log::info("mesh: world {} = dp {} x tp {}; {}", world_.size(), dp_, tp_, describe_batch(lo));
    log::info("compute: {} on {}", ops_->describe(), device_->description());
    log::info("data: {}{}", data_->describe(),
              floor ? fmt::format("; entropy floor at seq_len {}: {:.4f} nats/token", cfg_.model.seq_len, *floor)
                    : "");
    log::info("loader: schedule {} over {} dp replica(s), {} batch(es) prefetched{}", io::policy_name(lo.policy), dp_,
              lo.prefetch,
              faults_.describe());
  }
  log::info("{}", memory_report());

  TrainSummary sum;
  sum.data_entropy = floor;
  double train_ms = 0;
  double& best_eval = state_.best_eval;
  int& evals_without_gain = state_.evals_without_gain;
  int64_t last_eval_step = -1, last_checkpoint_step = -1;
  // The eval after `s` steps; false if a preemption signal abandoned it (nothing recorded).
  auto do_eval = [&](int64_t s) -> bool {
    const std::optional<double> res = evaluate_unless_preempted(/*interruptible=*/true);
    if (!res) {
      if (leader) log::warn("eval at step {} abandoned for preemption (resume=auto redoes it)", s);
      return false;
    }
    const double ev = *res;
    sum.final_eval_loss = ev;
    last_eval_step = s;
    if (leader) {
      nlohmann::json j{{"step", s}, {"eval_loss", ev}};
      if (floor) j["data_entropy"] = *floor;
      metrics.write(j);
      tb.scalar("eval/loss", s, static_cast<float>(ev));
      if (live) std::printf("\r\033[K");
      log::info("eval step {:>6} | eval_loss {:.4f}{}", s, ev,
                floor ? fmt::format(" | data_entropy {:.4f} | gap {:+.1f}%", *floor, 100.0 * (ev / *floor - 1.0))
                      : "");
    }
    if (ev < best_eval - tc.early_stop_min_delta) {
      best_eval = ev;
      evals_without_gain = 0;
    } else {
      ++evals_without_gain;
    }
    return true;
  };
  // After `at` steps: agree on preemption before the eval (a long eval must not outlast the
  // grace period), the eval if due (abandoned on a signal: the checkpoint records it as due,
  // and resume=auto redoes it first), early stopping, the checkpoint. True: the run stops.
  auto eval_point = [&](int64_t at, bool eval_now, bool checkpoint_due) -> bool {
    const bool last = at >= tc.steps;
    bool preempt = agree_preemption(), stop = false;
    if (eval_now && !preempt) {
      if (!do_eval(at)) {
        preempt = true;
      } else if (state_.patience_exhausted(tc.early_stop_patience)) {
        sum.early_stopped = stop = true;
        if (leader) log::info("early stop: eval loss has not improved for {} evals", evals_without_gain);
      }
    }
    if (preempt) {  // also after the last step: the final eval may outlast the grace period
      sum.preempted = stop = true;
      if (leader) {
        log::warn("preempted after step {}: writing a checkpoint and exiting (resume=auto {})", at,
                  last ? "runs the final eval" : "continues");
      }
    }
    if (checkpoint_due || (cfg_.checkpoint.every > 0 && stop) || preempt) {
      state_.eval_due = eval_now && preempt;  // an eval that did not happen
      save_checkpoint(at);
      state_.eval_due = false;
      last_checkpoint_step = at;
    }
    return stop;
  };

  sum.steps_done = start;
  sum.final_loss = state_.last_loss;
  sum.skipped_steps = state_.skipped_steps;  // (a resumed run counts those before its checkpoint too)
  sum.early_stopped = ended && stopped_early;
  // a run preempted during an eval: that eval first (and what follows from it)
  bool stopped = false;
  if (!ended && state_.eval_due && start < tc.steps) stopped = eval_point(start, true, false);
  state_.eval_due = false;
  for (int64_t s = start; !ended && !stopped && s < tc.steps; ++s) {
    const StepStats st = step(s);
    train_ms += st.ms;
    tokens_done += static_cast<double>(st.tokens);
    state_.totals.train_ms += st.ms;
    state_.totals.tokens += static_cast<double>(st.tokens);
    sum.losses.push_back(st.loss);
    sum.final_loss = state_.last_loss = st.loss;
    sum.steps_done = s + 1;
    if (st.skipped) {
      sum.skipped_steps = ++state_.skipped_steps;
      ++state_.skipped_in_row;
      if (leader) log::warn("step {}: non-finite gradient norm, update skipped ({} so far)", s + 1, sum.skipped_steps);
    } else {
      state_.skipped_in_row = 0;
      if (!std::isfinite(st.loss)) throw core::Error(fmt::format("non-finite loss at step {}", s)).with_hint("lower optim.lr");
    }
    if (leader) {
      const double mfu = peak_flops > 0 ? flops_per_token * st.tokens / (st.ms / 1000.0) / peak_flops : 0.0;
      tb.scalar("train/loss", s, static_cast<float>(st.loss));
      tb.scalar("train/lr", s, static_cast<float>(st.lr));
      tb.scalar("train/grad_norm", s, static_cast<float>(st.grad_norm));
      tb.scalar("perf/tokens_per_s", s, static_cast<float>(st.tokens_per_s));
      tb.scalar("perf/mfu", s, static_cast<float>(mfu));
      tb.flush();
      metrics.write({{"step", s}, {"loss", st.loss}, {"lr", st.lr}, {"grad_norm", st.grad_norm}, {"mfu", mfu},
                     {"ms", st.ms}, {"tokens_per_s", st.tokens_per_s}, {"comm_ms", st.comm_ms},
                     {"exposed_comm_ms", st.exposed_comm_ms}, {"data_wait_ms", st.data_ms},
                     {"imbalance", st.imbalance}, {"tokens", st.tokens}, {"replica_tokens", st.replica_tokens},
                     {"skipped", st.skipped}});
      if (live) std::printf("\r\033[K");
      if (s % tc.log_every == 0 || s + 1 == tc.steps) {
        log::info("step {:>6}/{} | loss {:.4f} | lr {:.2e} | grad_norm {:.3f} | {:.1f} ms | {:.0f} tok/s | data wait "
                  "{:.2f} ms{}", s + 1, tc.steps, st.loss, st.lr, st.grad_norm, st.ms, st.tokens_per_s, st.data_ms,
                  dp_ > 1 ? fmt::format(" | comm {:.1f} ms (exposed {:.1f}) | imbalance {:.2f}", st.comm_ms,
                                        st.exposed_comm_ms, st.imbalance)
                          : "");
      }
      if (live) {
        const double eta_s = (tc.steps - s - 1) * (train_ms / (s + 1 - start)) / 1000.0;
        std::printf("step %lld/%lld | loss %.4f | %.0f tok/s | MFU %.1f%% | ETA %02d:%02d:%02d",
                    static_cast<long long>(s + 1), static_cast<long long>(tc.steps), st.loss, st.tokens_per_s,
                    100.0 * mfu, static_cast<int>(eta_s / 3600), static_cast<int>(eta_s / 60) % 60,
                    static_cast<int>(eta_s) % 60);
        std::fflush(stdout);
      }
    }
    // a run that diverged skips every step: stop it as nonfinite=stop does, after this step's
    // record and before its checkpoint, so the last good one is kept (every rank stops here:
    // the gradient norm is the same on every rank)
    if (st.skipped && tc.max_skips_in_row > 0 && state_.skipped_in_row >= tc.max_skips_in_row) {
      if (live) std::printf("\r\033[K");
      throw core::Error(fmt::format("{} consecutive steps skipped for a non-finite gradient norm (steps {} to {}), "
                                    "train.max_skips_in_row = {}: the run has diverged; stopping with the last "
                                    "checkpoint kept",
                                    state_.skipped_in_row, s + 1 - state_.skipped_in_row, s, tc.max_skips_in_row))
          .with_yaml("train.max_skips_in_row")
          .with_hint("lower optim.lr or check the data, then resume from the last checkpoint; "
                     "train.max_skips_in_row=0 skips without limit");
    }
    // preemption: every rank learns whether any rank got SIGTERM/SIGUSR1 (4 bytes per step)
    const bool last = s + 1 == tc.steps;
    const bool eval_now = !last && tc.eval_every > 0 && (s + 1) % tc.eval_every == 0;
    const bool checkpoint_due = cfg_.checkpoint.every > 0 && ((s + 1) % cfg_.checkpoint.every == 0 || last);
    if (eval_point(s + 1, eval_now, checkpoint_due)) break;
  }
  if (live) std::printf("\r\033[K");
  // the final eval (unless an early stop has just evaluated); a preemption signal abandons it,
  // after a checkpoint of the finished training, and resume=auto finishes the run
  if (!sum.preempted && last_eval_step != sum.steps_done && !do_eval(sum.steps_done)) {
    sum.preempted = true;
    if (last_checkpoint_step != sum.steps_done) save_checkpoint(sum.steps_done);
  }
  if (sum.preempted) {
    if (leader) log::info("stopped for preemption at step {}; checkpoint under {}", sum.steps_done, checkpoint_dir());
    return sum;
  }
  // this process alone (from the trainer's construction, as the checkpoints count it) and the
  // whole run (every process that trained it, resumes included): equal for a run of one start
  const double process_wall_s = ms_between(started_, Clock::now()) / 1000.0;
  sum.wall_s = state_.totals.wall_s + process_wall_s;
  sum.tokens_per_s = state_.totals.train_ms > 0 ? state_.totals.tokens / (state_.totals.train_ms / 1000.0) : 0;
  const double process_tokens_per_s = train_ms > 0 ? tokens_done / (train_ms / 1000.0) : 0;
  // parameter checksums of every rank, so callers can verify replicas agree bit for bit
  std::vector<int64_t> sums(world_.size(), 0);
  const int64_t mine = static_cast<int64_t>(param_checksum());
  world_.all_gather(&mine, sums.data(), 1, parallel::DType::I64);
  if (leader) {
    std::vector<std::string> hex;
    for (int64_t v : sums) hex.push_back(fmt::format("{:016x}", static_cast<uint64_t>(v)));
    nlohmann::json j{{"final_loss", sum.final_loss},
                     {"param_checksums", hex},
                     {"final_eval_loss", sum.final_eval_loss ? nlohmann::json(*sum.final_eval_loss) : nlohmann::json()},
                     {"data_entropy", floor ? nlohmann::json(*floor) : nlohmann::json()},
                     {"tokens_per_s", sum.tokens_per_s},
                     {"wall_s", sum.wall_s},
                     {"tokens", state_.totals.tokens},
                     {"starts", state_.totals.starts + 1},
                     {"this_process", {{"steps", sum.steps_done - start}, {"tokens_per_s", process_tokens_per_s},
                                       {"wall_s", process_wall_s}}},
                     {"steps", sum.steps_done},
                     {"early_stopped", sum.early_stopped},
                     {"skipped_steps", sum.skipped_steps},
                     {"params", model_->num_full_params()},
                     {"world", world_.size()},
                     {"dp", dp_},
                     {"tp", tp_}};
    io::write_file_atomic(cfg_.run.dir + "/summary.json", j.dump(2) + "\n");
    log::info("done: {} steps in {:.1f} s | final loss {:.4f} | eval loss {:.4f}{} | {:.0f} tok/s | {}",
              sum.steps_done, sum.wall_s, sum.final_loss, sum.final_eval_loss.value_or(NAN),
              floor ? fmt::format(" | data_entropy {:.4f} (gap {:+.1f}%)", *floor,
                                  100.0 * (sum.final_eval_loss.value_or(NAN) / *floor - 1.0))
                    : "",
              sum.tokens_per_s, cfg_.run.dir);
  }
  return sum;
}

}  // namespace mt::launch
