// The model-agnostic parts work with a model they have never heard of: a test-only
// architecture, `test_mlp` (token embedding, n_layer residual blocks of LayerNorm + GELU MLP,
// final LayerNorm, tied vocabulary head; no attention, no positions), registered here and
// nowhere else, composed from the layers of parallel/models/blocks.h. The real Trainer runs it
// (real MPI ranks, the Markov data source) and
//  - dp = world, tp 2 (with ZeRO-1) and dp x tp layouts give per-step losses equal to one
//    process within 1e-5 (gradient sync, ZeRO-1 sharding, the optimizer, tensor parallelism
//    of the blocks);
//  - a checkpoint written at tp 2 with ZeRO-1 resumes resharded to dp = world, tp 1, and
//    its remaining steps equal the uninterrupted one-process run within 1e-5 (resharding
//    through Partition);
//  - a checkpoint of test_mlp refuses to resume as gpt2, naming model.arch.
// Each rank's one-process reference trains on a 1-rank communicator split from the world.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "launch/train/trainer.h"
#include "parallel/communicator.h"
#include "parallel/models/blocks.h"
#include "parallel/models/registry.h"

using namespace mt::parallel;

namespace {

class TestMlpArchitecture final : public Architecture {
 public:
  using Architecture::Architecture;
  std::string name() const override { return "test_mlp"; }
  int hidden() const { return 2 * config().n_embd; }
  std::string tp_violation(int tp) const override {
    return hidden() % tp == 0 ? "" : "parallel.tp does not divide the MLP width 2 * model.n_embd";
  }
  std::string tp_constraint() const override { return "2 * model.n_embd"; }
  std::vector<ParamSpec> param_specs() const override {
    const int64_t C = config().n_embd, H = hidden();
    const float sd = static_cast<float>(config().init_std);
    std::vector<ParamSpec> v;
    v.push_back({"emb", {config().vocab_size, C}, Partition::vocab(8), true, sd, 0, -1});
    for (int l = 0; l < config().n_layer; ++l) {
      const std::string b = "b" + std::to_string(l) + ".";
      v.push_back({b + "ln.w", {C}, Partition(), false, 0, 1, l});
      v.push_back({b + "ln.b", {C}, Partition(), false, 0, 0, l});
      v.push_back({b + "fc.w", {H, C}, Partition::rows(), true, sd, 0, l});
      v.push_back({b + "fc.b", {H}, Partition::rows(), false, 0, 0, l});
      v.push_back({b + "proj.w", {C, H}, Partition::cols(), true, sd, 0, l});
      v.push_back({b + "proj.b", {C}, Partition(), false, 0, 0, l});
    }
    v.push_back({"lnf.w", {C}, Partition(), false, 0, 1, config().n_layer});
    v.push_back({"lnf.b", {C}, Partition(), false, 0, 0, config().n_layer});
    return v;
  }
  double flops_per_token(int) const override { return 6.0 * static_cast<double>(num_params()); }
  TpTraffic tp_traffic(int64_t tokens, int elem_bytes) const override {
    const int64_t n = 2 * config().n_layer + 2;
    return {n + 3, static_cast<double>(n) * tokens * config().n_embd * elem_bytes + 12.0 * tokens};
  }
  SampleCost sample_cost() const override { return {}; }
  std::vector<std::pair<std::string, int64_t>> shape_keys() const override {
    return {{"n_layer", config().n_layer}, {"n_embd", config().n_embd}, {"vocab_size", config().vocab_size}};
  }
  std::string describe(int) const override { return "test_mlp, " + std::to_string(num_params()) + " parameters"; }
  std::unique_ptr<Model> build(const ModelContext& ctx) const override;
};

class TestMlp final : public Model {
 public:
  TestMlp(std::shared_ptr<const Architecture> a, const ModelContext& ctx) : Model(std::move(a), ctx) {
    const int C = cfg_.n_embd, Hl = 2 * C / tp_.size();
    embed_ = {0, C, VocabSlice::of(params_info()[0], tp_.size(), tp_.rank())};
    for (int l = 0; l < cfg_.n_layer; ++l) {
      const int p = 1 + 6 * l;
      Block b;
      b.ln = {p, p + 1, C};
      b.mlp.fc = {p + 2, p + 3, C, Hl, false};
      b.mlp.proj = {p + 4, p + 5, Hl, C};
      b.mlp.Fl = Hl;
      blocks_.push_back(std::move(b));
    }
    lnf_ = {1 + 6 * cfg_.n_layer, 2 + 6 * cfg_.n_layer, C};
    head_ = {0, -1, C, embed_.vs.Vl, true};
    xent_.vs = embed_.vs;
  }

  double forward(const int32_t* inputs, const int32_t* targets, int B, int T, const int32_t* doc_ids) override {
    const int N = B * T;
    alloc(N);
    const StagedTokens tok = stage_tokens(inputs, targets, doc_ids, B, T, cfg_.vocab_size);
    tokens_ = tok.tokens;
    targets_ = tok.targets;
    void* x = x0_.raw();
    embed_.forward(*this, x, tok.tokens, N);
    for (Block& b : blocks_) {
      b.ln.forward(*this, x, N);
      b.mlp.forward(*this, b.out.raw(), b.ln.out.raw(), N);
      ops().residual_forward(b.out.raw(), x, b.out.raw(), static_cast<int64_t>(N) * cfg_.n_embd);
      x = b.out.raw();
    }
    lnf_.forward(*this, x, N);
    head_.forward(*this, logits_.raw(), lnf_.out.raw(), N);
    if (!targets) return 0.0;
    xent_.forward(*this, logits_.raw(), tok.targets, N);
    return finish_losses(xent_.losses.f32(), targets, N);
  }

  void backward(float loss_weight, const GradReadyFn& ready) override {
    const int N = N_;
    xent_.backward(*this, dlogits_.raw(), logits_.raw(), targets_, stage_loss_weights(loss_weight), N);
    head_.backward(*this, s_.dln, dlogits_.raw(), lnf_.out.raw(), N, ready);
    dres_.zero_();
    lnf_.backward(*this, dres_.raw(), s_.dln.raw(), blocks_.empty() ? x0_.raw() : blocks_.back().out.raw(), N, ready);
    for (int l = cfg_.n_layer - 1; l >= 0; --l) {
      const Block& b = blocks_[static_cast<size_t>(l)];
      const void* in = l > 0 ? blocks_[static_cast<size_t>(l) - 1].out.raw() : x0_.raw();
      b.mlp.backward(*this, s_, dres_.raw(), b.ln.out.raw(), N, ready);
      b.ln.backward(*this, dres_.raw(), s_.dln.raw(), in, N, ready);
    }
    embed_.backward(*this, dres_.raw(), tokens_, N, ready);
    tp_.host_wait();
  }

  size_t activation_bytes() const override { return 0; }

 private:
  struct Block {
    LayerNormLayer ln;
    GeluMlp mlp;
    mt::core::Tensor out;
  };
  void alloc(int N) {
    if (N == N_) return;
    tp_.host_wait();
    device().synchronize();
    N_ = N;
    const int64_t C = cfg_.n_embd, Hl = 2 * C / tp_.size();
    const auto W = working_dtype();
    auto& dev = device();
    x0_ = mt::core::Tensor::empty({N, C}, W, dev);
    for (Block& b : blocks_) {
      b.ln.alloc(dev, W, N);
      b.mlp.alloc(dev, W, N);
      b.out = mt::core::Tensor::empty({N, C}, W, dev);
    }
    lnf_.alloc(dev, W, N);
    logits_ = mt::core::Tensor::empty({N, embed_.vs.Vl}, W, dev);
    dlogits_ = mt::core::Tensor::empty({N, embed_.vs.Vl}, W, dev);
    xent_.alloc(dev, N);
    dres_ = mt::core::Tensor::empty({N, C}, W, dev);
    s_.dln = mt::core::Tensor::empty({N, C}, W, dev);
    s_.dmid = mt::core::Tensor::empty({N * Hl}, W, dev);
    s_.dmid2 = mt::core::Tensor::empty({N * Hl}, W, dev);
    ensure_token_buffers(N);
  }
  VocabEmbedding embed_;
  std::vector<Block> blocks_;
  LayerNormLayer lnf_;
  ColumnLinear head_;
  VocabCrossEntropy xent_;
  int N_ = 0;
  mt::core::Tensor x0_, logits_, dlogits_, dres_;
  Scratch s_;
  const int32_t* tokens_ = nullptr;
  const int32_t* targets_ = nullptr;
};

std::unique_ptr<Model> TestMlpArchitecture::build(const ModelContext& ctx) const {
  return std::make_unique<TestMlp>(shared_from_this(), ctx);
}

const bool kRegistered = [] {
  register_architecture("test_mlp", [](const mt::core::ModelConfig& c) {
    return std::make_shared<TestMlpArchitecture>(c);
  });
  return true;
}();

// A directory every rank agrees on (rank 0 makes it).
std::string shared_tmpdir(Communicator& world) {
  char buf[256] = {};
  if (world.rank() == 0) {
    std::strcpy(buf, "/tmp/mt-plugin.XXXXXX");
    if (!mkdtemp(buf)) std::abort();
  }
  world.broadcast(buf, sizeof(buf) / 4, DType::I32, 0);
  return buf;
}

mt::core::Config mlp_config(const std::string& dir, const std::vector<std::string>& extra) {
  std::vector<std::string> kv = {"model.arch=test_mlp", "model.n_layer=2",      "model.n_embd=16",
                                 "model.n_head=1",      "model.vocab_size=13",  "model.seq_len=8",
                                 "model.init_std=0.1",  "train.steps=10",       "train.batch_size=8",
                                 "train.micro_batch=2", "train.eval_every=0",   "train.eval_batches=1",
                                 "train.seed=5",        "optim.lr=0.01",        "optim.warmup_steps=2", "optim.schedule=constant",
                                 "data.source=markov",  "data.markov_order=1",  "run.peak_gflops=1",
                                 "run.dir=" + dir};
  kv.insert(kv.end(), extra.begin(), extra.end());
  mt::core::Config c = mt::core::parse_config("{}", "model_plugin_test");
  for (const auto& a : kv) mt::core::apply_override(c, a);
  mt::core::validate_config(c);
  return c;
}

std::vector<double> train(Communicator& comm, const mt::core::Config& cfg) {
  mt::launch::Trainer t(cfg, comm);
  EXPECT_EQ(t.model().arch().name(), "test_mlp");
  return t.run().losses;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, size_t offset, const char* what) {
  ASSERT_EQ(got.size() + offset, want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i + offset], 1e-5 * std::fabs(want[i + offset])) << what << " step " << i + offset;
}

TEST(ModelPlugin, TestOnlyModelTrainsEqualToOneProcessAtEveryLayout) {
  auto world = make_world_communicator("mpi");
  const int W = world->size();
  const std::string dir = shared_tmpdir(*world);
  auto solo = world->split(world->rank(), 0);  // every rank alone: the reference
  const auto ref = train(*solo, mlp_config(dir + "/ref" + std::to_string(world->rank()), {}));
  ASSERT_EQ(ref.size(), 10u);
  EXPECT_LT(ref.back(), ref.front()) << "the model does not learn";
  expect_close(train(*world, mlp_config(dir + "/dp", {})), ref, 0, "dp = world");
  expect_close(train(*world, mlp_config(dir + "/tp2", {"parallel.tp=2", "parallel.zero=1"})), ref, 0,
               "tp 2, ZeRO-1");
  if (W == 4) expect_close(train(*world, mlp_config(dir + "/tp4", {"parallel.tp=4"})), ref, 0, "tp 4");

  // a checkpoint at step 5 written at tp 2 with ZeRO-1 resumes at dp = world (resharded); the
  // lr schedule is constant, so stopping at train.steps=5 changes nothing before it
  const std::string ck = dir + "/ck";
  train(*world, mlp_config(ck, {"parallel.tp=2", "parallel.zero=1", "train.steps=5", "checkpoint.every=5"}));
  const auto rest = train(*world, mlp_config(ck, {"checkpoint.every=5", "checkpoint.resume=auto"}));
  expect_close(rest, ref, 5, "resumed from tp 2 at dp = world");

  // ... and is not a GPT-2 checkpoint
  std::string err;
  try {
    auto cfg = mlp_config(ck, {"checkpoint.resume=auto", "model.arch=gpt2", "model.n_head=2", "train.steps=20"});
    mt::launch::Trainer t(cfg, *world);
    t.restore_checkpoint();
  } catch (const mt::core::Error& e) {
    err = e.what();
  }
  EXPECT_NE(err.find("model.arch"), std::string::npos) << err;
  world->barrier();
  if (world->rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace
