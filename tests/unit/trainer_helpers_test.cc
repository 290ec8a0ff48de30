// Pure helpers of the trainer that need no device or communicator: the default MFU peak per
// device kind and train.precision (the GPU figure is chosen without a GPU, so it is checked
// here).
#include <gtest/gtest.h>

#include "launch/trainer.h"

namespace {

using mt::core::DeviceKind;
using mt::launch::default_peak_gflops;

TEST(DefaultPeakGflops, CudaFollowsThePrecision) {
  // bf16 (and auto, which is bf16 on a GPU): H100 SXM dense bf16
  EXPECT_DOUBLE_EQ(default_peak_gflops(DeviceKind::CUDA, "bf16"), 989e3);
  EXPECT_DOUBLE_EQ(default_peak_gflops(DeviceKind::CUDA, "auto"), 989e3);
  // fp32: the fp32 CUDA-core peak (CUBLAS_COMPUTE_32F, no TF32), not the bf16 one
  EXPECT_DOUBLE_EQ(default_peak_gflops(DeviceKind::CUDA, "fp32"), 67e3);
}

TEST(DefaultPeakGflops, CpuIsMeasuredNotAssumed) {
  EXPECT_EQ(default_peak_gflops(DeviceKind::CPU, "auto"), 0.0);
  EXPECT_EQ(default_peak_gflops(DeviceKind::CPU, "fp32"), 0.0);
}

TEST(WorkingDtype, AutoIsFp32OnCpuAndBf16OnCuda) {
  using mt::core::DType;
  using mt::launch::working_dtype;
  EXPECT_EQ(working_dtype("auto", DeviceKind::CPU), DType::F32);
  EXPECT_EQ(working_dtype("auto", DeviceKind::CUDA), DType::BF16);
  EXPECT_EQ(working_dtype("fp32", DeviceKind::CUDA), DType::F32);
  EXPECT_EQ(working_dtype("bf16", DeviceKind::CUDA), DType::BF16);
}

}  // namespace
