// What: the meshtrain subcommands, each a function taking parsed options. main.cc wires them
// to the command line (CLI11); MPI is initialised once in main before any of them runs.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/device.h"
#include "launch/agreed_error.h"
#include "launch/launch_env.h"
#include "parallel/communicator.h"
#include "parallel/mpi_env.h"

namespace mt::launch {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
};
int cmd_train(const TrainArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env);

// Shared start of every command that trains: config (with overrides), log level, threads,
// banner, and the device this rank computes on (train.device; "cuda" binds GPU local_rank %
// GPUs per node).
core::Config start_run(const std::string& config, const std::vector<std::string>& overrides,
                       parallel::Communicator& world, const parallel::MpiEnv& env, int* threads_out,
                       core::Device** device_out, JobLaunch* job_out = nullptr);

struct BenchStepArgs {
  std::string config;
  std::vector<std::string> overrides;
  int warmup = 2;
  int steps = 5;
  std::string json_out;  // optional: write the figures as JSON here
  std::string metrics_dir;  // optional: write the timed steps as <dir>/metrics.jsonl
  bool profile = false;     // time every kernel call (device events) and print the table
};
int cmd_bench_step(const BenchStepArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env);

struct BenchAllreduceArgs {
  size_t min_bytes = 4096;
  size_t max_bytes = 64u << 20;
  int iters = 20;
  int warmup = 3;
  int rounds = 5;   // timed rounds per size (the median is reported)
  int factor = 2;   // size step
  std::string json_out;  // optional: the rows as JSON
  std::string device = "cpu";    // cpu | cuda | cuda:N: where the buffers live ("cuda": GPU local_rank % GPUs)
  std::string backend = "auto";  // auto | mpi | nccl (device buffers: nccl, or mpi = host staging)
  std::string allreduce = "flat";  // flat | hierarchical | auto | both: the framework side's parallel.allreduce
  int fake_hosts = 0;              // pretend hosts (parallel.fake_hosts) for hierarchical/auto
};
int cmd_bench_allreduce(const BenchAllreduceArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env);

int cmd_bench_sgemm(int threads, parallel::Communicator& world, const parallel::MpiEnv& env);

// Prints a checkpoint's manifest (or, for a run directory or checkpoint directory, lists the
// checkpoints) and verifies every shard's checksum. Returns 0 if all verify, 1 otherwise.
int cmd_inspect(const std::string& path);

// `plot RUN [RUN...] [--out DIR] [--png]` (plot_cmd.cc): each run's metrics.jsonl as
// loss.svg (train and eval loss, the data's entropy floor when known), lr.svg and, when the
// runs recorded it, accuracy.svg (eval_acc, eval_acc_top5), in `out` (default: the first
// run's directory); several runs overlay with a legend of their directory names. png: also a
// .png of each (rsvg-convert; a clear error when it is missing).
struct PlotArgs {
  std::vector<std::string> runs;
  std::string out;
  bool png = false;
};
int cmd_plot(const PlotArgs& a);
// <name>.svg -> <name>.png with rsvg-convert; throws, with the package to install, without it.
void svg_to_png(const std::string& svg);

// `export CHECKPOINT --format hf --out DIR [--max-shard-size 5GB] [--dtype float32|bfloat16]
// [--force]`: a checkpoint of any layout as a Hugging Face model directory (io/hf/hf_export.h).
// No MPI.
struct ExportArgs {
  std::string checkpoint, format = "hf", out, max_shard_size = "5GB", dtype = "float32", quantize;
  bool force = false;
};
int cmd_export(const ExportArgs& a);

// Prints the start-up banner (rank 0): launcher, hosts and ranks per host, mesh, device,
// threads, BLAS core, build flags and library versions (launch/banner.cc).
void print_banner(const JobLaunch& job, parallel::Communicator& world, const core::Config& cfg, int threads);

// `meshtrain info [--json]`: what every rank detected about its launch, and the build. Rank 0
// prints; returns 1 when a rank's launch is inconsistent (launch_env.h), else 0.
int cmd_info(const JobLaunch& job, bool json);

}  // namespace mt::launch
