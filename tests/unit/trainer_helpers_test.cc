// Pure helpers of the trainer that need no device or communicator: the default MFU peak per
// device kind and train.precision (the GPU figure is chosen without a GPU, so it is checked
// here), and the start-up log's account of the batch split (exact where the split is fixed,
// not a made-up grad_accum where it is not).
#include <gtest/gtest.h>

#include "launch/train/train_util.h"

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

mt::io::LoaderOptions opts(mt::io::SampleMode mode, mt::io::SchedulePolicy policy, int dp, int64_t batch, int micro) {
  mt::io::LoaderOptions o;
  o.mode = mode;
  o.policy = policy;
  o.dp = dp;
  o.batch_samples = batch;
  o.micro_batch = micro;
  o.seq_len = 64;
  o.batch_tokens = batch * 64;
  return o;
}

using mt::io::SampleMode;
using mt::io::SchedulePolicy;
using mt::launch::describe_batch;

TEST(DescribeBatch, EvenConcatSplitKeepsTheExactDecomposition) {
  for (auto p : {SchedulePolicy::Static, SchedulePolicy::RoundRobin, SchedulePolicy::Balanced}) {
    EXPECT_EQ(describe_batch(opts(SampleMode::Concat, p, 2, 16, 4)),
              "global batch 16 = dp 2 x grad_accum 2 x micro_batch 4; 1024 tokens/step");
  }
  // dynamic on one replica has nothing to split
  EXPECT_EQ(describe_batch(opts(SampleMode::Concat, SchedulePolicy::Dynamic, 1, 16, 8)),
            "global batch 16 = dp 1 x grad_accum 2 x micro_batch 8; 1024 tokens/step");
}

TEST(DescribeBatch, DynamicConcatSaysTheSharesFollowThroughput) {
  // 12 samples over dp 2 with micro_batch 4: the old line claimed "dp 2 x grad_accum 1 x micro_batch 4" (8)
  const std::string s = describe_batch(opts(SampleMode::Concat, SchedulePolicy::Dynamic, 2, 12, 4));
  EXPECT_EQ(s, "global batch 12 samples split across dp 2 replicas by measured throughput (even shares until "
               "measured; they change from step to step), micro-batches of up to 4 rows; 768 tokens/step");
  EXPECT_EQ(s.find("grad_accum"), std::string::npos) << s;
  // divisible or not: dynamic shares are never a fixed decomposition
  EXPECT_EQ(describe_batch(opts(SampleMode::Concat, SchedulePolicy::Dynamic, 2, 16, 4)).find("grad_accum"),
            std::string::npos);
  // one replica, a batch that is not a multiple of micro_batch: a short last micro-batch
  EXPECT_EQ(describe_batch(opts(SampleMode::Concat, SchedulePolicy::Dynamic, 1, 10, 4)),
            "global batch 10 on dp 1 in 3 micro-batches of up to 4 rows (the last of 2); 640 tokens/step");
}

TEST(DescribeBatch, DocumentsNameHowTheyAreSplit) {
  const auto doc = [](SchedulePolicy p, int dp) { return describe_batch(opts(SampleMode::Documents, p, dp, 8, 2)); };
  EXPECT_EQ(doc(SchedulePolicy::Balanced, 4),
            "global batch: documents up to 512 target tokens, split across dp 4 replicas by modelled cost (longest "
            "first, equal work), micro-batches of up to 128 positions");
  EXPECT_NE(doc(SchedulePolicy::Dynamic, 4).find("by modelled cost and measured throughput"), std::string::npos);
  EXPECT_NE(doc(SchedulePolicy::Static, 4).find("contiguous runs of equal document count"), std::string::npos);
  EXPECT_NE(doc(SchedulePolicy::RoundRobin, 4).find("round-robin"), std::string::npos);
  EXPECT_NE(doc(SchedulePolicy::Dynamic, 1).find("on 1 dp replica"), std::string::npos);
}

TEST(DescribeBatch, PackedSaysRowsOfWholeDocuments) {
  const auto pk = [](SchedulePolicy p, int dp) { return describe_batch(opts(SampleMode::Packed, p, dp, 8, 2)); };
  EXPECT_EQ(pk(SchedulePolicy::Balanced, 2),
            "global batch: 8 rows of 64 positions packed with whole documents (doc ids, padding at row ends), split "
            "across dp 2 replicas by modelled cost of each row's documents, micro-batches of 2 rows; up to 512 "
            "targets/step");
  EXPECT_NE(pk(SchedulePolicy::Static, 2).find("contiguous runs of equal row count"), std::string::npos);
  EXPECT_NE(pk(SchedulePolicy::Dynamic, 1).find("on 1 dp replica"), std::string::npos);
}

}  // namespace
