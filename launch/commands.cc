// What: the train and bench subcommands.
#include "launch/commands.h"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <iostream>

#include <H5public.h>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/device.h"
#include "core/error.h"
#include "core/log.h"
#include "io/checkpoint.h"
#include "io/checkpoint_pipeline.h"
#include "io/dataset.h"
#include "io/dir_lock.h"
#include "io/hf/hf_export.h"
#include "io/hf/hf_import.h"
#include "io/metrics.h"
#include "launch/blas_env.h"
#include "launch/host_failure.h"
#include "launch/plan.h"
#include "launch/svg.h"
#include "launch/signals.h"
#include "launch/train/trainer.h"
#include "mt/build_config.h"
#include "parallel/allreduce_bench.h"
#include "parallel/hierarchical.h"
#include "parallel/models/registry.h"
#include "parallel/timeout_communicator.h"

namespace mt::launch {

namespace log = core::log;

// Shared start of every command that trains (commands.h).
core::Config start_run(const std::string& config, const std::vector<std::string>& overrides,
                       parallel::Communicator& world, const parallel::MpiEnv& env, int* threads_out,
                       core::Device** device_out, JobLaunch* job_out) {
  core::Config cfg = core::load_config(config, overrides);
  if (!cfg.model.init_from.empty()) {  // hf:DIR: its config.json is the model section
    cfg.model = io::hf::resolve_model_config(cfg);
    core::validate_config(cfg);
  }
  core::resolve_micro_batch(cfg, world.size());  // train.micro_batch: auto -> a number for this dp
  log::set_level(log::parse_level(cfg.run.log_level));
  if (auto* t = dynamic_cast<parallel::TimeoutCommunicator*>(&world)) t->set_timeout_s(cfg.parallel.timeout_s);
  JobLaunch job = detect_job(env);  // collective: every rank's launcher view on rank 0
  // where the mesh's groups run (tp groups spanning hosts: a warning), in the world's host order
  describe_placement(job, cfg.parallel.tp, std::max(1, cfg.parallel.pp), world.rank());
  report_launch_problems(job);
  if (world.rank() == 0) {  // a silent host failure must not leave mpirun hanging (host_failure.h)
    const std::string w = host_failure_warning(job.self.launcher, static_cast<int>(job.hosts.size()),
                                               cfg.parallel.timeout_s, oob_keepalive_from_environ());
    if (!w.empty()) log::warn("launch: {}", w);
  }
  *threads_out = threads_per_rank(cfg.train.threads, job.self);
  set_threads(*threads_out);
  print_banner(job, world, cfg, *threads_out);
  if (job_out) *job_out = job;
  core::Device& device = core::select_device(cfg.train.device, env.local_rank(), env.local_size());
  if (device.kind() != core::DeviceKind::CPU) {
    log::info("device: {} (local rank {} of {} on this node)", device.description(), env.local_rank(),
              env.local_size());
  }
  *device_out = &device;
  return cfg;
}

namespace {
// An allocation that did not fit, anywhere in a training run: the measured and the predicted
// memory of this rank and the `meshtrain plan` command that lists the layouts that fit.
[[noreturn]] void rethrow_out_of_memory(const std::string& what, const TrainArgs& a, const core::Config& cfg,
                                        const core::Device& device, int world) {
  constexpr double kMiB = 1.0 / 1048576.0;
  double predicted = 0;
  try {
    const auto arch = parallel::make_architecture(cfg.model);
    predicted = predict_memory(cfg, *arch, configured_layout(cfg, world)).total();
  } catch (const std::exception&) {
  }
  const double have = device.kind() == core::DeviceKind::CPU ? (std::getenv("MT_CPU_MEMORY_LIMIT")
                                                                    ? std::atof(std::getenv("MT_CPU_MEMORY_LIMIT"))
                                                                    : device.peak_bytes_in_use() * kMiB)
                                                             : 0.0;
  std::string overrides;
  for (const auto& o : a.overrides) overrides += " " + o;
  const std::string mem = have > 0 ? fmt::format("{:.0f}MiB", have) : std::string("<GPU memory, e.g. 80GiB>");
  throw core::Error(fmt::format("out of memory: {} (this rank's measured peak {:.1f} MiB; the memory model "
                                "predicts a peak of {:.1f} MiB per rank for this layout)",
                                what, device.peak_bytes_in_use() * kMiB, predicted * kMiB))
      .with_hint(fmt::format("list the layouts that fit: meshtrain plan {} --gpus {} --gpu-mem {}{}", a.config, world,
                             mem, overrides));
}
}  // namespace

namespace {
// Rank 0 locks run.dir (io/dir_lock.h) before anything is read from or written to it, for the
// run's life; if another run holds it, every rank learns so and raises the same AgreedError.
io::DirLock lock_run_dir(const core::Config& cfg, parallel::Communicator& world) {
  io::DirLock lock;
  std::string holder, err;
  if (world.rank() == 0) {
    try {
      lock = io::DirLock::try_acquire(cfg.run.dir, &holder);
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  if (world.size() > 1) {
    holder = parallel::broadcast_string(world, holder);
    err = parallel::broadcast_string(world, err);
  }
  if (!err.empty()) throw AgreedError(core::Error(err).with_yaml("run.dir"));
  if (!holder.empty()) {
    throw AgreedError(
        core::Error(fmt::format("run.dir {} is in use by another meshtrain run ({})", cfg.run.dir, holder))
            .with_file(cfg.run.dir + "/" + io::DirLock::kFileName)
            .with_yaml("run.dir")
            .with_hint("two runs on one run.dir would overwrite each other's checkpoints and records: wait for that "
                       "run to end (or stop it), or set another run.dir; the lock goes with its process"));
  }
  return lock;
}
}  // namespace

int cmd_train(const TrainArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env) {
  int threads = 0;
  core::Device* device = nullptr;
  JobLaunch job;
  const core::Config cfg = start_run(a.config, a.overrides, world, env, &threads, &device, &job);
  const bool dir_existed = std::filesystem::exists(cfg.run.dir);
  const io::DirLock run_lock = lock_run_dir(cfg, world);  // held until the run ends
  // A start that fails before the run commits to its directory (a config error the trainer
  // finds) leaves no directory behind that the lock alone created.
  struct RemoveIfOnlyLock {
    std::string dir;
    bool armed;
    ~RemoveIfOnlyLock() {
      if (!armed) return;
      std::error_code ec;
      std::filesystem::directory_iterator it(dir, ec), end;
      for (; !ec && it != end; it.increment(ec))
        if (it->path().filename() != io::DirLock::kFileName) return;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{cfg.run.dir, world.rank() == 0 && !dir_existed};
  install_preemption_handlers();
  try {
    Trainer trainer(cfg, world, device);
    trainer.on_run_start = [&] {
      cleanup.armed = false;
      append_launch_record(cfg.run.dir, job);  // <run.dir>/launch.jsonl
    };
    trainer.run();
  } catch (const core::OutOfMemory& e) {
    rethrow_out_of_memory(e.message(), a, cfg, *device, world.size());
  } catch (const std::bad_alloc&) {
    rethrow_out_of_memory("the host allocator failed (std::bad_alloc)", a, cfg, *device, world.size());
  }
  return 0;
}

int cmd_bench_step(const BenchStepArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env) {
  int threads = 0;
  core::Device* device = nullptr;
  const core::Config cfg = start_run(a.config, a.overrides, world, env, &threads, &device);
  std::unique_ptr<kernels::OpProfile> profile;
  if (a.profile) profile = std::make_unique<kernels::OpProfile>(*device);
  Trainer trainer(cfg, world, device, profile.get());
  const bool gpu = device->kind() != core::DeviceKind::CPU;
  for (int i = 0; i < a.warmup; ++i) trainer.step(i);
  if (profile) profile->collect(/*keep=*/false);  // the warm-up's calls do not count
  world.barrier();
  std::vector<StepStats> st;
  for (int i = 0; i < a.steps; ++i) {
    st.push_back(trainer.step(a.warmup + i));
    if (profile) profile->collect();  // read the step's events back (bounds the pool to one step)
  }
  // a step takes as long as its slowest rank: per-step max over ranks of the step time (the
  // breakdown is rank 0's; compute = step - exposed comm - data wait)
  std::vector<double> step_ms;
  for (const auto& s : st) step_ms.push_back(s.ms);
  world.all_reduce(step_ms.data(), step_ms.size(), parallel::DType::F64, parallel::ReduceOp::Max);
  const double tokens = static_cast<double>(trainer.tokens_per_step());
  double ms = 0, comm_ms = 0, exposed_ms = 0, data_ms = 0;
  io::MetricsWriter metrics;
  if (world.rank() == 0 && !a.metrics_dir.empty()) {
    io::ensure_directory(a.metrics_dir);
    metrics = io::MetricsWriter(a.metrics_dir, /*append=*/false);
  }
  for (size_t i = 0; i < st.size(); ++i) {
    ms += step_ms[i];
    comm_ms += st[i].comm_ms;
    exposed_ms += st[i].exposed_comm_ms;
    data_ms += st[i].data_ms;
    if (metrics.is_open()) {
      const double step_tokens = st[i].tokens > 0 ? static_cast<double>(st[i].tokens) : tokens;
      nlohmann::json row{{"step", st[i].step}, {"loss", st[i].loss}, {"ms", step_ms[i]}, {"tokens", step_tokens},
                         {"tokens_per_s", step_tokens / (step_ms[i] / 1000.0)}, {"comm_ms", st[i].comm_ms},
                         {"exposed_comm_ms", st[i].exposed_comm_ms}, {"data_wait_ms", st[i].data_ms},
                         {"compute_ms", step_ms[i] - st[i].exposed_comm_ms - st[i].data_ms},
                         {"mem", io::memory_json(st[i].mem)}};
      if (!st[i].pp.empty()) {  // pipeline: the stages' mean bubble, each as the trainer's metrics define it,
        // 1 - busy / the slowest stage's schedule time (`meshtrain scale` reads it)
        double span = 0, sum = 0;
        for (const PipeStageStats& p : st[i].pp) span = std::max(span, p.run_ms);
        for (const PipeStageStats& p : st[i].pp) sum += span > 0 ? 1.0 - (p.run_ms - p.idle_ms) / span : 0.0;
        row["bubble"] = sum / static_cast<double>(st[i].pp.size());
      }
      metrics.write(row);
    }
  }
  ms /= a.steps, comm_ms /= a.steps, exposed_ms /= a.steps, data_ms /= a.steps;
  const double flops = trainer.model().flops_per_token(cfg.model.seq_len) * tokens;
  const double model_gflops = flops / (ms / 1000.0) / 1e9;
  // CPU: against the measured sgemm rate; GPU: MFU against the configured peak (run.peak_gflops,
  // default: default_peak_gflops, H100 dense bf16 989e3 or fp32 67e3). The GPU measures no sgemm rate.
  const double sgemm = gpu ? 0.0 : measure_sgemm_gflops(1024, 5);  // per rank, same threads
  const double peak = gpu ? trainer.peak_gflops_per_rank() : (cfg.run.peak_gflops > 0 ? cfg.run.peak_gflops : 0.0);
  const double frac = sgemm > 0 ? model_gflops / (sgemm * world.size()) : 0.0;
  const double mfu = peak > 0 ? model_gflops / (peak * world.size()) : 0.0;
  if (world.rank() == 0) {
    const std::string pp = trainer.mesh().pp() > 1 ? fmt::format(" x pp {} {}", trainer.mesh().pp(), cfg.parallel.pp_schedule)
                                                   : "";
    std::printf("bench step: %s (%d layers, width %d, %lld params), world %d (dp %d%s x tp %d), micro_batch %d, "
                "seq_len %d, %d thread(s)/rank, BLAS core %s\n",
                a.config.c_str(), cfg.model.n_layer, cfg.model.n_embd,
                static_cast<long long>(trainer.model().num_full_params()), world.size(), trainer.mesh().dp(), pp.c_str(),
                trainer.mesh().tp(), cfg.train.micro_batch, cfg.model.seq_len, threads, blas_core_name().c_str());
    if (gpu) {
      std::printf("  device           %s, %s\n", device->description().c_str(), trainer.ops().describe().c_str());
    }
    std::printf("  ms/step          %10.1f   (mean of %d after %d warm-up, slowest rank per step)\n", ms, a.steps,
                a.warmup);
    std::printf("  tokens/s         %10.0f\n", tokens / (ms / 1000.0));
    std::printf("  model GFLOP/s    %10.1f   (%.3g FLOP/step = 6 x params x tokens + attention)\n", model_gflops, flops);
    if (!gpu) {
      std::printf("  sgemm GFLOP/s    %10.1f   (1024^3, per rank)\n", sgemm);
      std::printf("  model / sgemm    %10.1f%%\n", 100.0 * frac);
    }
    if (peak > 0) std::printf("  MFU              %10.1f%%   (peak %.0f GFLOP/s per rank)\n", 100.0 * mfu, peak);
    std::printf("  comm ms/step     %10.2f   exposed %.2f (%.1f%% of step), data wait %.3f (%.3f%% of step)\n",
                comm_ms, exposed_ms, 100.0 * exposed_ms / ms, data_ms, 100.0 * data_ms / ms);
    if (!st.empty() && !st.front().pp.empty()) {  // per stage: mean bubble and activations in flight
      std::string line;
      for (size_t k = 0; k < st.front().pp.size(); ++k) {
        double bubble = 0;
        for (const auto& s : st) {
          double span = 0;
          for (const auto& p : s.pp) span = std::max(span, p.run_ms);
          bubble += span > 0 ? 1.0 - (s.pp[k].run_ms - s.pp[k].idle_ms) / span : 0.0;
        }
        line += fmt::format("{}stage {}: bubble {:.3f}, {} micro-batch(es) in flight, activations {:.1f} MiB",
                            k ? "; " : "", k, bubble / static_cast<double>(st.size()), st.back().pp[k].slots,
                            st.back().pp[k].act_bytes / 1048576.0);
      }
      std::printf("  pipeline         %s\n", line.c_str());
    }
    std::printf("  %s\n", trainer.memory_report().c_str());
    if (profile) {  // rank 0's kernels; the rest of the step is communication, the host and launch gaps
      std::printf("  kernel time by op (rank 0, device events, mean of %d steps; %% step of %.1f ms):\n%s", a.steps,
                  ms, kernels::format_op_profile(profile->totals(), a.steps, ms).c_str());
    }
    if (!a.json_out.empty()) {
      nlohmann::json j{{"ms_per_step", ms}, {"tokens_per_s", tokens / (ms / 1000.0)}, {"model_gflops", model_gflops},
                       {"sgemm_gflops", sgemm}, {"model_over_sgemm", frac}, {"mfu", mfu},
                       {"peak_gflops_per_rank", peak}, {"device", device->name()}, {"comm_ms", comm_ms},
                       {"exposed_comm_ms", exposed_ms}, {"data_ms", data_ms},
                       {"compute_ms", ms - exposed_ms - data_ms}, {"world", world.size()},
                       {"dp", trainer.mesh().dp()}, {"tp", trainer.mesh().tp()}, {"pp", trainer.mesh().pp()},
                       {"tokens_per_step", tokens}, {"threads_per_rank", threads},
                       {"flops_per_step", flops}, {"params", trainer.model().num_full_params()},
                       {"grad_bytes_per_rank", trainer.model().num_local_params() * 4}};
      if (profile) {
        nlohmann::json ops = nlohmann::json::array();
        for (const kernels::OpTime& t : profile->totals())
          ops.push_back({{"op", t.name}, {"calls_per_step", static_cast<double>(t.calls) / a.steps},
                         {"ms_per_step", t.ms / a.steps}});
        j["ops"] = ops;
      }
      std::ofstream(a.json_out) << j.dump(2) << "\n";
    }
  }
  return 0;
}

int cmd_bench_allreduce(const BenchAllreduceArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env) {
  set_threads(1);
  parallel::AllreduceBenchOptions opt;
  opt.min_bytes = a.min_bytes;
  opt.max_bytes = a.max_bytes;
  opt.iters = a.iters;
  opt.warmup = a.warmup;
  opt.rounds = a.rounds;
  opt.factor = a.factor;
  // "cuda" binds GPU local_rank % (GPUs on the node), as train.device does: get_device("cuda")
  // would put every rank of a node on cuda:0, where NCCL refuses two ranks on one GPU.
  core::Device& dev = core::select_device(a.device, env.local_rank(), env.local_size());
  // Host buffers: the world communicator itself (MPI). Device buffers: the device
  // communicator parallel.backend would give the trainer (NCCL, or host staging over MPI).
  // Each mode on a split of the world (same ranks) configured as parallel.allreduce says
  // (hierarchical where the hosts allow it; across hosts network-sized pieces), one table each.
  std::vector<std::string> modes = {a.allreduce};
  if (a.allreduce == "both") modes = {"flat", "hierarchical"};
  nlohmann::json tables = nlohmann::json::array();
  for (const std::string& mode : modes) {
    std::unique_ptr<parallel::Communicator> split;
    split = world.split(0, world.rank());  // (the world keeps its settings for the other modes)
    split->set_name("world/" + mode);
    const std::string note = parallel::configure_allreduce(*split, mode, a.fake_hosts).note;
    parallel::Communicator& host = split ? *split : world;
    auto dcomm = parallel::make_device_communicator(host, dev, a.backend);
    if (!dcomm && a.backend == "nccl")
      throw core::Error("bench allreduce --backend nccl needs device buffers").with_hint("add --device cuda");
    parallel::Communicator& comm = dcomm ? *dcomm : host;
    if (world.rank() == 0) {
      std::cout << fmt::format("# parallel.allreduce = {}: {}\n", mode,
                               dcomm && dcomm->backend_name() == "nccl"
                                   ? parallel::configure_allreduce(*dcomm, mode).note
                                   : note);
      std::cout.flush();
    }
    const auto rows = parallel::run_allreduce_bench(comm, dev, parallel::make_allreduce_baseline(comm),
                                                    MPI_COMM_WORLD, opt, std::cout);
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows) {
      j.push_back({{"bytes", r.bytes}, {"fw_us", r.fw_us}, {"fw_busbw", r.fw_busbw}, {"raw_us", r.raw_us},
                   {"raw_busbw", r.raw_busbw}, {"ok", r.fw_ok && r.raw_ok}});
    }
    tables.push_back({{"allreduce", mode}, {"note", note}, {"backend", comm.backend_name()}, {"rows", j}});
  }
  if (world.rank() == 0 && !a.json_out.empty()) {
    // "rows": the first (or only) mode's, as before; "tables": every mode's
    std::ofstream(a.json_out) << nlohmann::json{{"world", world.size()}, {"backend", tables[0]["backend"]},
                                                {"device", dev.name()}, {"rows", tables[0]["rows"]},
                                                {"tables", tables}}
                                     .dump(2)
                              << "\n";
  }
  return 0;
}

int cmd_bench_sgemm(int threads, parallel::Communicator& world, const parallel::MpiEnv& env) {
  // the threads a training rank would run (the affinity masks), so the figures compare
  const int t = threads_per_rank(threads, detect_job(env).self);
  set_threads(t);
  if (world.rank() == 0) {
    std::printf("sgemm (OpenBLAS core %s, %d thread(s))\n", blas_core_name().c_str(), t);
    for (int n : {256, 512, 1024, 2048}) std::printf("  %5d^3  %8.1f GFLOP/s\n", n, measure_sgemm_gflops(n, 3));
  }
  return 0;
}

namespace {
// A dataset directory (manifest.json with "splits"): its manifest, then every shard verified.
int inspect_dataset(const std::string& path, const nlohmann::json& m) {
  std::printf("%s\n  dataset format v%d | dtype %s | vocab %d | tokenizer %s\n", path.c_str(),
              m.value("format_version", -1), m.value("dtype", "?").c_str(), m.value("vocab_size", 0),
              m.value("tokenizer", "?").c_str());
  for (const auto& [split, shards] : m.at("splits").items()) {
    int64_t tokens = 0, docs = 0;
    for (const auto& s : shards) {
      tokens += s.value("tokens", int64_t{0});
      docs += s.value("documents", int64_t{0});
    }
    std::printf("  %-6s %zu shard(s), %lld tokens, %lld documents\n", split.c_str(), shards.size(),
                static_cast<long long>(tokens), static_cast<long long>(docs));
  }
  try {
    io::Dataset::open(path, /*verify=*/true);
  } catch (const core::Error& e) {
    std::printf("  checksums: FAILED: %s\n", e.what());
    return 1;
  }
  std::printf("  checksums: all shards verify\n");
  return 0;
}
}  // namespace

int cmd_inspect(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::exists(path + "/manifest.json")) {
    nlohmann::json m;
    try {
      m = nlohmann::json::parse(io::read_file(path + "/manifest.json"));
    } catch (const nlohmann::json::exception& e) {
      throw core::Error("unreadable manifest").with_file(path + "/manifest.json").with_library(e.what());
    }
    if (m.contains("splits")) return inspect_dataset(path, m);
  }
  std::vector<std::string> ckpts;
  if (fs::exists(path + "/manifest.json")) {
    ckpts.push_back(path);
  } else {
    for (const std::string& dir : {path, path + "/checkpoints"})
      for (const auto& c : io::list_checkpoints(dir)) ckpts.push_back(c);
  }
  if (ckpts.empty()) {
    throw core::Error("no checkpoint (manifest.json) found").with_file(path)
        .with_hint("pass a checkpoint directory, a checkpoints/ directory or a run directory");
  }
  int bad = 0;
  for (const auto& c : ckpts) {
    const auto m = io::read_manifest(c);
    const auto& lay = m.at("layout");
    const auto& mod = m.at("model");
    // the model's shape-fixing values as the manifest records them (checkpoints from before
    // model.arch hold the default architecture)
    std::string shape;
    for (const auto& [k, v] : mod.items())
      if (k != "arch" && k != "params") shape += fmt::format("{}{} {}", shape.empty() ? "" : ", ", k, v.dump());
    const io::CheckpointPipeline pipe = io::CheckpointPipeline::from_manifest(m, -1, c + "/manifest.json");
    std::printf("%s\n  step %lld | layout world %d = dp %d x pp %d x tp %d, zero %d | model %s (%s), %lld params | format v%d\n",
                c.c_str(), static_cast<long long>(m.at("step").get<int64_t>()), lay.at("world").get<int>(),
                lay.at("dp").get<int>(), pipe.pp, lay.at("tp").get<int>(), lay.at("zero").get<int>(),
                mod.value("arch", std::string(parallel::kDefaultArch)).c_str(), shape.c_str(),
                static_cast<long long>(mod.at("params").get<int64_t>()), m.at("format_version").get<int>());
    if (pipe.pp > 1 || pipe.virtual_stages > 1)
      std::printf("  pipeline %s%s\n", pipe.describe().c_str(),
                  pipe.schedule.empty() ? "" : (", schedule " + pipe.schedule).c_str());
    for (const auto& s : m.at("shards")) {
      std::error_code ec;
      const auto size = fs::file_size(c + "/" + s.at("file").get<std::string>(), ec);
      std::printf("    %-16s rank %-4d checksum %s  %s\n", s.at("file").get<std::string>().c_str(), s.at("rank").get<int>(),
                  s.at("checksum").get<std::string>().c_str(),
                  ec ? "MISSING" : fmt::format("{:.2f} MiB", size / 1048576.0).c_str());
    }
    const std::string problem = io::verify_checkpoint(c);
    std::printf("  checksums: %s\n", problem.empty() ? "all shards verify" : ("FAILED: " + problem).c_str());
    bad += !problem.empty();
  }
  return bad ? 1 : 0;
}

int cmd_export(const ExportArgs& a) {
  if (a.format != "hf") throw core::Error(fmt::format("--format {}: the only export format is hf", a.format));
  io::hf::ExportOptions o;
  o.checkpoint = a.checkpoint;
  o.out = a.out;
  o.max_shard_bytes = io::hf::parse_size(a.max_shard_size);
  o.dtype = a.dtype;
  o.quantize = a.quantize;
  o.force = a.force;
  const auto t0 = std::chrono::steady_clock::now();
  const io::hf::ExportResult r = io::hf::export_hf(o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string kind =
      a.quantize.empty() ? a.dtype
                         : fmt::format("int8 weights + fp32 scales, biases and norms; {:.2f}x smaller than float32's "
                                       "{:.3f} MB", r.bytes > 0 ? static_cast<double>(r.fp32_bytes) / r.bytes : 0.0,
                                       r.fp32_bytes / 1e6);
  std::printf("exported %s to %s: %lld tensors, %.3f MB (%s) in %.2f s: %s\n", r.checkpoint.c_str(), a.out.c_str(),
              static_cast<long long>(r.tensors), r.bytes / 1e6, kind.c_str(), s,
              fmt::format("{}", fmt::join(r.files, ", ")).c_str());
  return 0;
}

}  // namespace mt::launch
