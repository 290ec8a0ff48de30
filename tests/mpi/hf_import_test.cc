// What: Hugging Face import at tp 1 and tp = world (2, 4), each rank reading only its own
// slices (io/hf/hf_import.h), against the fixtures written by transformers 5.25
// (tests/fixtures/hf/{gpt2-tiny,llama-tiny}): every per-token loss against the log-softmax of
// HF's logits at the label and the mean loss (within 1e-5), every gradient element against
// grads.safetensors, and one SGD step of lr 0.1 (parallel::Optimizer: sgd, no momentum, no
// decay) against after_sgd_lr0.1.safetensors (within 1e-5). And our own case the fixtures do
// not cover: a tied Llama with a vocabulary of 100 (padded differently at each tp) written as
// a checkpoint at tp = world, exported (io/hf/hf_export.h) and re-imported at tp 1, 2 and 4:
// every parameter bitwise equal; a bfloat16 export re-imports as the bf16 rounding.
// Why: the issue's "imported fixtures reproduce the reference at tp 1 and tp 2" and "export
// then re-import is bitwise identical", with vocabulary padding and replicated kv heads (tp 4
// > 2 kv heads) in play.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "io/checkpoint.h"
#include "io/hf/hf_export.h"
#include "io/hf/hf_import.h"
#include "io/hf/safetensors.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"
#include "parallel/models/registry.h"
#include "parallel/optimizer.h"

using namespace mt;
using namespace mt::parallel;

namespace {

const std::string kFixtures = std::string(MT_SOURCE_DIR) + "/tests/fixtures/hf/";

// The model of config.json at tp (comm null at tp 1), weights imported.
std::unique_ptr<Model> import_at(const std::string& dir, int tp, int tp_rank, Communicator* comm) {
  ModelContext ctx;
  ctx.tp = tp;
  ctx.tp_rank = tp_rank;
  ctx.tp_comm = tp > 1 ? comm : nullptr;
  auto model = make_model(io::hf::read_model_config(dir), ctx);
  io::hf::load_weights(dir, *model);
  return model;
}

// Is local element e of parameter p a vocabulary padding row?
bool padding(const ParamInfo& p, int tp, int rank, int64_t e) {
  const int64_t r = e / shape_cols(p.local_shape);
  return p.partition.to_full(p.full_shape, tp, rank, r).row >= shape_rows(p.full_shape);
}

void check_fixture(const std::string& name, int tp, int tp_rank, Communicator* comm) {
  SCOPED_TRACE(name + " at tp " + std::to_string(tp) + " rank " + std::to_string(tp_rank));
  const std::string dir = kFixtures + name;
  auto model = import_at(dir, tp, tp_rank, comm);
  std::ifstream rf(dir + "/reference.json");
  const auto ref = nlohmann::json::parse(rf);
  const int B = 2, T = 16, V = model->arch().config().vocab_size;
  std::vector<int32_t> x, y;
  for (const auto& row : ref.at("input_ids"))
    for (int64_t v : row) x.push_back(static_cast<int32_t>(v));
  for (const auto& row : ref.at("labels"))
    for (int64_t v : row) y.push_back(static_cast<int32_t>(v));
  std::vector<float> logits(static_cast<size_t>(B) * T * V);
  std::ifstream lf(dir + "/logits.f32", std::ios::binary);
  lf.read(reinterpret_cast<char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
  ASSERT_TRUE(lf.good());

  model->zero_grads();
  const double loss = model->forward(x.data(), y.data(), B, T);
  EXPECT_NEAR(loss, ref.at("loss").get<double>(), 1e-5) << "mean loss";
  for (int n = 0; n < B * T; ++n) {  // HF's per-token loss: -log softmax(logits)[label], in double
    const float* z = &logits[static_cast<size_t>(n) * V];
    double mx = z[0], se = 0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(z[v]));
    for (int v = 0; v < V; ++v) se += std::exp(z[v] - mx);
    EXPECT_NEAR(model->losses()[n], std::log(se) + mx - z[y[static_cast<size_t>(n)]], 1e-5) << "token " << n;
  }
  model->backward(1.0f / static_cast<float>(B * T));

  // gradients: this rank's slices of grads.safetensors, read as the weights were
  const int64_t total = model->num_local_params();
  std::vector<float> want(static_cast<size_t>(total), 0.0f), after(static_cast<size_t>(total), 0.0f);
  io::hf::read_slices(io::hf::SafetensorsModel::from_file(dir + "/grads.safetensors"), *model, want.data());
  io::hf::read_slices(io::hf::SafetensorsModel::from_file(dir + "/after_sgd_lr0.1.safetensors"), *model, after.data());
  for (size_t i = 0; i < model->params_info().size(); ++i) {
    const ParamInfo& p = model->params_info()[i];
    double scale = 0, worst = 0;
    for (int64_t e = 0; e < p.numel; ++e) scale = std::max(scale, std::fabs(double(want[size_t(p.offset + e)])));
    for (int64_t e = 0; e < p.numel; ++e) {
      const double got = model->grad(static_cast<int>(i))[e], w = want[size_t(p.offset + e)];
      if (padding(p, tp, tp_rank, e)) {
        ASSERT_EQ(got, 0.0) << p.name << " padding gradient";
      }
      worst = std::max(worst, std::fabs(got - w) / (1e-7 + scale));
    }
    EXPECT_LT(worst, 1e-4) << p.name << ": largest |ours - HF| gradient relative to the tensor's largest";
  }

  // one SGD step of lr 0.1: p - 0.1 g
  core::OptimConfig oc;
  oc.name = "sgd";
  oc.lr = 0.1;
  oc.momentum = 0;
  oc.weight_decay = 0;
  Optimizer opt(oc, model->params_info(), {{0, total}});
  opt.step(model->params().f32(), model->grads().f32(), 0.1f, 1);
  for (size_t i = 0; i < model->params_info().size(); ++i) {
    const ParamInfo& p = model->params_info()[i];
    double worst = 0;
    for (int64_t e = 0; e < p.numel; ++e)
      worst = std::max(worst, std::fabs(double(model->param(static_cast<int>(i))[e]) - after[size_t(p.offset + e)]));
    EXPECT_LE(worst, 1e-5) << p.name << " after one SGD step";
  }
}

TEST(HfImport, FixturesAtTp1) {
  for (const char* name : {"gpt2-tiny", "llama-tiny"}) check_fixture(name, 1, 0, nullptr);
}

TEST(HfImport, FixturesAtTpWorld) {
  auto world = make_world_communicator("mpi");
  for (const char* name : {"gpt2-tiny", "llama-tiny"}) check_fixture(name, world->size(), world->rank(), world.get());
}

// A meshtrain checkpoint of `model` (dp 1 x tp = world) in dir/step_00000000.
std::string write_checkpoint(Communicator& world, Model& model, const core::Config& cfg, const std::string& dir) {
  const std::string tmp = dir + "/step_00000000.tmp", final_dir = dir + "/step_00000000";
  if (world.rank() == 0) std::filesystem::create_directories(tmp);
  world.barrier();
  io::ShardData d;
  d.params = model.params().f32();
  d.num_params = model.num_local_params();
  const int64_t sum = static_cast<int64_t>(io::write_shard(tmp, world.rank(), d));
  std::vector<int64_t> sums(static_cast<size_t>(world.size()));
  world.all_gather(&sum, sums.data(), 1, DType::I64);
  if (world.rank() == 0) {
    nlohmann::json shards = nlohmann::json::array();
    for (int r = 0; r < world.size(); ++r)
      shards.push_back(nlohmann::json{{"rank", r}, {"file", io::shard_file_name(r)},
                                      {"checksum", fmt::format("{:016x}", static_cast<uint64_t>(sums[static_cast<size_t>(r)]))}});
    nlohmann::json m{{"format_version", io::kCheckpointFormatVersion},
                     {"step", 0},
                     {"layout", {{"world", world.size()}, {"dp", 1}, {"tp", world.size()}, {"zero", 0}}},
                     {"model", {{"arch", "llama"}}},
                     {"config", core::config_to_yaml(cfg)},
                     {"shards", shards}};
    io::finalize_checkpoint(tmp, final_dir, m);
  }
  world.barrier();
  return final_dir;
}

TEST(HfImport, TiedLlamaOddVocabExportReimportsBitwiseAtEveryTp) {
  auto world = make_world_communicator("mpi");
  const int W = world->size();
  core::Config cfg;
  cfg.model.arch = "llama";
  cfg.model.n_layer = 2;
  cfg.model.n_head = 4;
  cfg.model.n_kv_head = 2;
  cfg.model.n_embd = 32;
  cfg.model.ffn_dim = 48;
  cfg.model.vocab_size = 100;  // padded to 128 at tp 1 and 2, 256 at tp 4
  cfg.model.seq_len = 16;
  cfg.model.tie_embeddings = true;
  cfg.model.rope_theta = 500000;
  cfg.model.norm_eps = 1e-6;
  cfg.model.init_std = 0.5;
  std::string base;
  if (world->rank() == 0) base = std::filesystem::temp_directory_path() / ("mt-hf-mpi-" + std::to_string(::getpid()));
  {  // every rank uses rank 0's directory
    std::vector<int32_t> buf(64, 0);
    std::memcpy(buf.data(), base.data(), std::min<size_t>(base.size(), 255));
    world->broadcast(buf.data(), buf.size(), DType::I32, 0);
    base = reinterpret_cast<const char*>(buf.data());
  }
  ModelContext ctx;
  ctx.tp = W;
  ctx.tp_rank = world->rank();
  ctx.tp_comm = W > 1 ? world.get() : nullptr;
  auto src = make_model(cfg.model, ctx);
  src->init_weights(7);
  const std::string ckpt = write_checkpoint(*world, *src, cfg, base + "/ckpt");
  if (world->rank() == 0) {
    io::hf::ExportOptions o;
    o.checkpoint = ckpt;
    o.out = base + "/hf";
    o.max_shard_bytes = 20000;  // several shards + index
    io::hf::export_hf(o);
    o.out = base + "/hf-bf16";
    o.dtype = "bfloat16";
    io::hf::export_hf(o);
  }
  world->barrier();
  const auto hf = io::hf::read_model_config(base + "/hf");
  EXPECT_TRUE(hf.tie_embeddings);
  EXPECT_EQ(hf.vocab_size, 100);
  EXPECT_EQ(hf.rope_theta, 500000);
  EXPECT_EQ(hf.norm_eps, 1e-6);
  EXPECT_TRUE(std::filesystem::exists(base + "/hf/model.safetensors.index.json"));
  EXPECT_FALSE(io::hf::SafetensorsModel(base + "/hf").has("lm_head.weight"));
  for (int tp : {1, 2, 4}) {
    if (tp > W) continue;
    // ranks [0, tp) form the group; the others sit this size out
    auto group = world->split(world->rank() < tp ? 0 : 1, world->rank());
    if (world->rank() < tp) {
      SCOPED_TRACE("tp " + std::to_string(tp));
      ModelContext c;
      c.tp = tp;
      c.tp_rank = world->rank();
      c.tp_comm = tp > 1 ? group.get() : nullptr;
      auto want = make_model(cfg.model, c);
      want->init_weights(7);
      auto got = import_at(base + "/hf", tp, world->rank(), group.get());
      auto bf = import_at(base + "/hf-bf16", tp, world->rank(), group.get());
      for (size_t i = 0; i < got->params_info().size(); ++i) {
        const ParamInfo& p = got->params_info()[i];
        for (int64_t e = 0; e < p.numel; ++e) {
          const float g = got->param(static_cast<int>(i))[e], w = want->param(static_cast<int>(i))[e];
          if (padding(p, tp, world->rank(), e)) {
            ASSERT_EQ(g, 0.0f) << p.name << " padding";
            continue;
          }
          ASSERT_EQ(std::memcmp(&g, &w, 4), 0) << p.name << " element " << e << ": " << g << " vs " << w;
          ASSERT_EQ(bf->param(static_cast<int>(i))[e], io::hf::bf16_to_float(io::hf::float_to_bf16(w))) << p.name;
        }
      }
    }
    world->barrier();
  }
  world->barrier();
  if (world->rank() == 0) std::filesystem::remove_all(base);
}

}  // namespace
