// What: the free functions of train_util.h.
#include "launch/train/train_util.h"

#include <omp.h>

#include <cblas.h>
#include <fmt/format.h>

namespace mt::launch {

// OpenMP threads do all the parallel work; BLAS stays single-threaded inside them (see
// kernels/cpu/linear.cc: deterministic results, no competing thread pools).
void set_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(1);
}

core::DType working_dtype(const std::string& precision, core::DeviceKind kind) {
  if (precision == "fp32") return core::DType::F32;
  if (precision == "bf16") return core::DType::BF16;
  return kind == core::DeviceKind::CPU ? core::DType::F32 : core::DType::BF16;
}

core::DType working_dtype(const core::Config& cfg, const core::Device& device) {
  return working_dtype(cfg.train.precision, device.kind());
}

double default_peak_gflops(core::DeviceKind kind, const std::string& precision) {
  if (kind != core::DeviceKind::CUDA) return 0.0;  // CPU: measured by the caller
  // H100 SXM dense peaks (NVIDIA's datasheet): bf16 tensor cores 989 TFLOP/s; fp32 67 TFLOP/s.
  // fp32 is the CUDA-core peak, not TF32's 494 TFLOP/s: our fp32 matmuls use
  // CUBLAS_COMPUTE_32F (kernels/cuda/matmul.cc), which keeps full fp32 and no TF32.
  return working_dtype(precision, kind) == core::DType::BF16 ? 989e3 : 67e3;
}

std::string describe_batch(const io::LoaderOptions& lo) {
  const int64_t B = lo.batch_samples, M = lo.micro_batch, N = lo.dp;
  if (lo.mode == io::SampleMode::Documents) {
    const char* how = "";
    switch (lo.policy) {
      case io::SchedulePolicy::Static: how = "in contiguous runs of equal document count"; break;
      case io::SchedulePolicy::RoundRobin: how = "round-robin (equal document counts)"; break;
      case io::SchedulePolicy::Balanced: how = "by modelled cost (longest first, equal work)"; break;
      case io::SchedulePolicy::Dynamic: how = "by modelled cost and measured throughput"; break;
    }
    return fmt::format("global batch: documents up to {} target tokens, {}, micro-batches of up to {} positions",
                       lo.batch_tokens,
                       N == 1 ? std::string("on 1 dp replica") : fmt::format("split across dp {} replicas {}", N, how),
                       M * lo.seq_len);
  }
  if (lo.mode == io::SampleMode::Packed) {
    const char* how = "";
    switch (lo.policy) {
      case io::SchedulePolicy::Static: how = "in contiguous runs of equal row count"; break;
      case io::SchedulePolicy::RoundRobin: how = "round-robin (equal row counts)"; break;
      case io::SchedulePolicy::Balanced: how = "by modelled cost of each row's documents"; break;
      case io::SchedulePolicy::Dynamic: how = "by modelled cost and measured throughput"; break;
    }
    return fmt::format("global batch: {} rows of {} positions packed with whole documents (doc ids, padding at row "
                       "ends), {}, micro-batches of {} rows; up to {} targets/step",
                       B, lo.seq_len,
                       N == 1 ? std::string("on 1 dp replica") : fmt::format("split across dp {} replicas {}", N, how),
                       M, B * lo.seq_len);
  }
  const std::string tokens = fmt::format("{} tokens/step", B * lo.seq_len);
  const bool even = lo.policy != io::SchedulePolicy::Dynamic || N == 1;  // (concat: balanced splits evenly)
  if (even && B % (M * N) == 0) {
    return fmt::format("global batch {} = dp {} x grad_accum {} x micro_batch {}; {}", B, N, B / (M * N), M, tokens);
  }
  if (N == 1) {  // (dynamic: B not a multiple of M)
    return fmt::format("global batch {} on dp 1 in {} micro-batches of up to {} rows (the last of {}); {}", B,
                       (B + M - 1) / M, M, B % M, tokens);
  }
  if (!even) {
    return fmt::format("global batch {} samples split across dp {} replicas by measured throughput (even shares "
                       "until measured; they change from step to step), micro-batches of up to {} rows; {}",
                       B, N, M, tokens);
  }
  // an even split that does not divide (the trainer refuses it in concat mode; said as it is)
  return fmt::format("global batch {} samples split across dp {} replicas, {} to {} each ({}), micro-batches of up "
                     "to {} rows; {}", B, N, B / N, (B + N - 1) / N,
                     lo.policy == io::SchedulePolicy::RoundRobin ? "interleaved" : "contiguous", M, tokens);
}

}  // namespace mt::launch
