// What: small free functions around training that other commands use too: the thread set-up,
// the working dtype train.precision asks for, the default MFU peak of a device, the start-up
// log's account of the global batch, and the clock helper the trainer's pieces share.
// Why: `meshtrain bench data`, `bench step` and the unit tests need these without a Trainer.
#pragma once

#include <chrono>
#include <string>

#include "core/config.h"
#include "core/device.h"
#include "core/tensor.h"
#include "io/loader.h"

namespace mt::launch {

using Clock = std::chrono::steady_clock;

// Milliseconds from a to b.
inline double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Sets this rank's thread count (OpenMP; BLAS single-threaded inside). The count itself comes
// from train.threads or the CPU affinity masks (launch_env.h: threads_per_rank).
void set_threads(int n);

// The working dtype train.precision asks for on `device` (auto: fp32 on the CPU, bf16 on GPUs).
core::DType working_dtype(const core::Config& cfg, const core::Device& device);
core::DType working_dtype(const std::string& precision, core::DeviceKind kind);

// The per-rank peak GFLOP/s that MFU is measured against when run.peak_gflops is 0, for a
// device kind and train.precision (auto resolved as working_dtype does). CUDA, bf16: 989e3,
// H100 SXM dense bf16 on tensor cores. CUDA, fp32: 67e3, H100 SXM fp32 on the CUDA cores: the
// fp32 matmuls (kernels/cuda/matmul.cc) ask cuBLASLt for CUBLAS_COMPUTE_32F, which does not
// use TF32 tensor cores, so the TF32 dense peak (494e3) would understate MFU ~7x. CPU: 0, for
// "measure sgemm" (the caller does).
double default_peak_gflops(core::DeviceKind kind, const std::string& precision);

// The start-up log's account of a step's global batch and its split across the dp replicas
// (the loader's options: mode, schedule, dp, sizes). The exact decomposition "global batch B
// = dp N x grad_accum G x micro_batch M" where it holds (concat mode, an even split that
// divides: static, round_robin, balanced); otherwise what happens: dynamic shares follow the
// measured throughput (and need not divide), documents are split by count or modelled cost.
std::string describe_batch(const io::LoaderOptions& lo);

}  // namespace mt::launch
