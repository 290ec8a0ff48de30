// What: the meshtrain subcommands, each a function taking parsed options. main.cc wires them
// to the command line (CLI11); MPI is initialised once in main before any of them runs.
#pragma once

#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/mpi_env.h"

namespace mt::launch {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
};
int cmd_train(const TrainArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env);

struct BenchStepArgs {
  std::string config;
  std::vector<std::string> overrides;
  int warmup = 2;
  int steps = 5;
  std::string json_out;  // optional: write the figures as JSON here
};
int cmd_bench_step(const BenchStepArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env);

struct BenchAllreduceArgs {
  size_t min_bytes = 4096;
  size_t max_bytes = 64u << 20;
  int iters = 20;
  int warmup = 3;
  std::string json_out;  // optional: the rows as JSON
  std::string device = "cpu";    // cpu | cuda | cuda:N: where the buffers live
  std::string backend = "auto";  // auto | mpi | nccl (device buffers: nccl, or mpi = host staging)
};
int cmd_bench_allreduce(const BenchAllreduceArgs& a, parallel::Communicator& world);

int cmd_bench_sgemm(int threads, parallel::Communicator& world);

// Prints a checkpoint's manifest (or, for a run directory or checkpoint directory, lists the
// checkpoints) and verifies every shard's checksum. Returns 0 if all verify, 1 otherwise.
int cmd_inspect(const std::string& path);

// Renders <run_dir>/metrics.jsonl as loss.svg (train and eval loss, the data's entropy floor
// when known) and lr.svg in `out_dir` (default: the run directory).
int cmd_plot(const std::string& run_dir, const std::string& out_dir);

// Prints the start-up banner (rank 0): build flags, versions, BLAS core, ranks, threads.
void print_banner(parallel::Communicator& world, int threads);

}  // namespace mt::launch
