// What: checkpoints of pipeline stages (#17), in one process at tp 1. For GPT-2 (head tied to
// wte) and Llama (untied head, and tied): the stage Models of a dp x pp layout are built with
// ModelContext::stage = stage_layers(vstages, pp, s), given init_weights(seed) and optimizer
// moments whose values are a formula of (parameter, element) known independently, and written
// with the real shard writer and a manifest as CheckpointManager::save writes it (ZeRO-1:
// each dp rank's owned half of the stage's flat buffer). The tied embedding's copy on the
// LAST stage is written with other values, so a reader taking it instead of the first stage's
// fails. reshard_state then cuts every rank of other layouts (pp 1, pp 4 with other layer
// splits, interleaved virtual stages, other dp / ZeRO) out of it; every parameter is compared
// by name with a whole model's init_weights(seed), and m / v over the new owned ranges with
// the formula, exactly (ZeRO-2/3 layouts too). Also: `meshtrain export` of pp checkpoints
// (ZeRO-1; ZeRO-3) equals (bytewise) that of the pp 1 checkpoint, and Hugging Face import into
// a stage fills exactly its parameters.
// Why: the issue's "checkpoints (per-stage shards; resharding across pp sizes and to/from pp
// 1)" and "the Hugging Face import/export" at pp > 1; init is layout-independent (a stage's
// parameters are the slices of the whole model's), which makes the expected values independent.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/hf/hf_export.h"
#include "io/hf/hf_import.h"
#include "pipeline_ckpt_util.h"

using namespace mt;
using namespace mt::pp_ckpt;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  const std::string d = (fs::temp_directory_path() / fmt::format("mt_pp_ckpt_{}_{}", name, ::getpid())).string();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// The layouts every case reshards into.
std::vector<Layout> targets() {
  return {
      {1, 1, 0, {{0, 6}}},                                          // pp 1
      {1, 4, 0, {{0, 1}, {1, 3}, {3, 5}, {5, 6}}},                  // pp 4
      {2, 4, 1, {{0, 2}, {2, 3}, {3, 4}, {4, 6}}},                  // dp 2 x pp 4, ZeRO-1, other split
      {2, 2, 1, {{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}}},  // dp 2 x pp 2 x 3 virtual, ZeRO-1
      {3, 2, 1, {{0, 5}, {5, 6}}},                                  // dp 3 x pp 2, uneven, ZeRO-1
      {2, 2, 2, {{0, 3}, {3, 6}}},                                  // dp 2 x pp 2, ZeRO-2 (aligned layers)
  };
}

// The checkpoints every case writes.
std::vector<Layout> sources() {
  return {
      {1, 2, 0, {{0, 3}, {3, 6}}},                  // pp 2
      {1, 1, 0, {{0, 6}}},                          // pp 1
      {2, 2, 1, {{0, 2}, {2, 6}}},                  // dp 2 x pp 2, ZeRO-1
      {1, 2, 0, {{0, 2}, {2, 3}, {3, 5}, {5, 6}}},  // pp 2 x 2 virtual (interleaved)
      {2, 3, 3, {{0, 1}, {1, 4}, {4, 6}}},          // dp 2 x pp 3, ZeRO-3 (parameters sharded too)
  };
}

void reshard_all(const std::string& name, const core::Config& cfg) {
  int i = 0;
  for (const Layout& from : sources()) {
    const std::string root = temp_dir(fmt::format("{}_{}", name, i++));
    const std::string ckpt = write_checkpoint(root, cfg, from, 1234);
    for (const Layout& to : targets()) {
      SCOPED_TRACE(fmt::format("{}: dp {} pp {} zero {} ({} virtual stages) -> dp {} pp {} zero {} ({} virtual stages)",
                               name, from.dp, from.pp, from.zero, from.vstages.size(), to.dp, to.pp, to.zero,
                               to.vstages.size()));
      check_reshard(ckpt, cfg, to, 1234);
    }
    fs::remove_all(root);
  }
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

TEST(PipelineCheckpoint, StageInitIsTheWholeModelsSlices) {
  // the premise of the expected values: a stage's parameters are the whole model's
  const core::Config cfg = gpt2_cfg();
  const auto arch = make_architecture(cfg.model);
  auto whole = build(arch, Layout{1, 1, 0, {{0, 6}}}, 0);
  whole->init_weights(7);
  const Layout l{1, 2, 0, {{0, 2}, {2, 6}}};
  for (int s = 0; s < 2; ++s) {
    auto m = build(arch, l, s);
    m->init_weights(7);
    for (const ParamInfo& p : m->params_info()) {
      size_t k = 0;
      while (whole->params_info()[k].name != p.name) ++k;
      for (int64_t e = 0; e < p.numel; ++e)
        ASSERT_EQ(m->params().f32()[p.offset + e], whole->params().f32()[whole->params_info()[k].offset + e]) << p.name;
    }
  }
}

TEST(PipelineCheckpoint, Gpt2ReshardsAcrossPipelines) { reshard_all("gpt2", gpt2_cfg()); }
TEST(PipelineCheckpoint, LlamaUntiedReshardsAcrossPipelines) { reshard_all("llama", llama_cfg(false)); }
TEST(PipelineCheckpoint, LlamaTiedReshardsAcrossPipelines) { reshard_all("llama_tied", llama_cfg(true)); }

TEST(PipelineCheckpoint, ManifestPipeline) {
  const std::string root = temp_dir("manifest");
  const std::string ckpt = write_checkpoint(root, gpt2_cfg(), Layout{2, 2, 1, {{0, 2}, {2, 6}}}, 1);
  nlohmann::json m = io::read_manifest(ckpt);
  const auto l = launch::CheckpointLayout::from_manifest(ckpt, m, 6);
  EXPECT_EQ(l.pp(), 2);
  EXPECT_EQ(l.world, 8 / 2);
  EXPECT_EQ(l.pipeline.vstages, (VStages{{0, 2}, {2, 6}}));
  EXPECT_EQ(l.pipeline.schedule, "1f1b");
  EXPECT_EQ(l.pipeline.describe(), "pp 2 (layers 0-1 | 2-5)");
  // ranks: (dp_index * pp + stage) * tp + tp_index
  EXPECT_EQ(l.pipeline.rank_of(1, 0, 1, 2), 5);
  EXPECT_EQ(l.pipeline.stage_of_rank(5, 2), 0);
  EXPECT_EQ(l.pipeline.stage_of_rank(6, 2), 1);
  // the first stage is the authoritative holder of the tied embedding; the head's on the last
  const auto specs = make_architecture(gpt2_cfg().model)->param_specs();
  EXPECT_EQ(l.pipeline.holder(specs.front(), 6), 0);  // wte
  EXPECT_EQ(l.pipeline.holder(specs.back(), 6), 1);   // lnf.b
  // an old checkpoint (no "pipeline"): pp 1, one stage of every layer, the same as none()
  m.erase("pipeline");
  const auto old = io::CheckpointPipeline::from_manifest(m, 6);
  EXPECT_EQ(old.pp, 1);
  EXPECT_TRUE(old == io::CheckpointPipeline::none(6));
  EXPECT_TRUE(io::same_stage(old.stage(0), StageLayers{}, 6));
  EXPECT_FALSE(io::same_stage(l.pipeline.stage(0), StageLayers{}, 6));
  // a different split is a different layout (resume reshards)
  io::CheckpointPipeline other = l.pipeline;
  other.vstages = {{0, 3}, {3, 6}};
  EXPECT_TRUE(other != l.pipeline);
  // stages that do not tile the layers: an error naming the manifest
  m["pipeline"] = {{"pp", 2}, {"virtual", 1}, {"vstages", {{0, 2}, {3, 6}}}};
  try {
    io::CheckpointPipeline::from_manifest(m, 6, "X/manifest.json");
    ADD_FAILURE() << "no error for stages that do not tile the layers";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not tile"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("X/manifest.json"), std::string::npos) << e.what();
  }
  m["pipeline"] = {{"pp", 2}, {"virtual", 1}, {"vstages", {{0, 2}, {2, 5}}}};
  EXPECT_THROW(io::CheckpointPipeline::from_manifest(m, 6), core::Error);  // 5 layers of 6
  fs::remove_all(root);
}

TEST(PipelineCheckpoint, ExportOfPipelineCheckpointEqualsPp1AndImportsIntoStages) {
  for (const core::Config& cfg : {gpt2_cfg(), llama_cfg(false), llama_cfg(true)}) {
    SCOPED_TRACE(cfg.model.arch + (cfg.model.tie_embeddings ? " tied" : ""));
    const std::string root = temp_dir("export");
    const std::string pp1 = write_checkpoint(root + "/a", cfg, Layout{1, 1, 0, {{0, 6}}}, 42);
    // (the last stage's tied copy holds 99s: an export reading it would differ)
    const std::string pp2 = write_checkpoint(root + "/b", cfg, Layout{2, 2, 1, {{0, 1}, {1, 2}, {2, 4}, {4, 6}}}, 42);
    const std::string pp3 = write_checkpoint(root + "/c", cfg, Layout{2, 3, 3, {{0, 2}, {2, 3}, {3, 6}}}, 42);  // ZeRO-3
    for (const auto& [ck, out] : {std::pair{pp1, root + "/hf1"}, std::pair{pp2, root + "/hf2"}, std::pair{pp3, root + "/hf3"}}) {
      io::hf::ExportOptions o;
      o.checkpoint = ck;
      o.out = out;
      io::hf::export_hf(o);
    }
    const std::string a = file_bytes(root + "/hf1/model.safetensors"), b = file_bytes(root + "/hf2/model.safetensors");
    EXPECT_FALSE(a.empty());
    EXPECT_TRUE(a == b) << "the pp 2 checkpoint's export differs from the pp 1 checkpoint's";
    EXPECT_TRUE(a == file_bytes(root + "/hf3/model.safetensors")) << "the pp 3 ZeRO-3 checkpoint's export differs";

    // import into the stages of a pp 3 layout: each stage's parameters equal the whole model's
    const auto arch = make_architecture(cfg.model);
    auto whole = build(arch, Layout{1, 1, 0, {{0, 6}}}, 0);
    whole->init_weights(42);
    const Layout l3{1, 3, 0, {{0, 1}, {1, 4}, {4, 6}}};
    for (int s = 0; s < 3; ++s) {
      auto m = build(arch, l3, s);
      io::hf::load_weights(root + "/hf2", *m);
      for (const ParamInfo& p : m->params_info()) {
        size_t k = 0;
        while (whole->params_info()[k].name != p.name) ++k;
        int64_t bad = 0;
        for (int64_t e = 0; e < p.numel; ++e)  // (import: padding rows zero)
          bad += m->params().f32()[p.offset + e] !=
                 (full_elem(p, 1, 0, e) < 0 ? 0.0f : whole->params().f32()[whole->params_info()[k].offset + e]);
        EXPECT_EQ(bad, 0) << "stage " << s << " " << p.name;
      }
    }
    fs::remove_all(root);
  }
}
