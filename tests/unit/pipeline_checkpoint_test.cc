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
// the formula, exactly. Also: `meshtrain export` of a pp checkpoint equals (bytewise) that of
// the pp 1 checkpoint, and Hugging Face import into a stage fills exactly its parameters.
// Why: the issue's "checkpoints (per-stage shards; resharding across pp sizes and to/from pp
// 1)" and "the Hugging Face import/export" at pp > 1; init is layout-independent (a stage's
// parameters are the slices of the whole model's), which makes the expected values independent.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "io/checkpoint.h"
#include "io/checkpoint_pipeline.h"
#include "io/hf/hf_export.h"
#include "io/hf/hf_import.h"
#include "launch/train/reshard.h"
#include "model_util.h"
#include "parallel/grad_sync.h"
#include "parallel/models/registry.h"
#include "parallel/optimizer.h"
#include "parallel/pipeline/stages.h"

using namespace mt;
using namespace mt::parallel;
namespace fs = std::filesystem;

namespace {

using VStages = std::vector<std::pair<int, int>>;

// A model of `arch` holding `stage`'s layers; only its parameters matter here (no forward).
class StubModel final : public Model {
 public:
  StubModel(std::shared_ptr<const Architecture> a, const ModelContext& ctx) : Model(std::move(a), ctx) {}
  double forward(const int32_t*, const int32_t*, int, int, const int32_t*) override { return 0; }
  void backward(float, const GradReadyFn&) override {}
  size_t activation_bytes() const override { return 0; }
};

// A dp x pp x tp 1 layout and its virtual stages.
struct Layout {
  int dp = 1, pp = 1, zero = 0;
  VStages vstages;
  int world() const { return dp * pp; }
};

std::unique_ptr<Model> build(const std::shared_ptr<const Architecture>& arch, const Layout& l, int stage) {
  ModelContext ctx;
  ctx.flat_align = GradSync::flat_alignment(l.dp);
  ctx.stage = stage_layers(l.vstages, l.pp, stage);
  return std::make_unique<StubModel>(arch, ctx);
}

// dp rank d's owned flat ranges: ZeRO-1 its half (a cut the reader must take from the shard's
// recorded ranges, not assume), else all of it.
std::vector<std::pair<int64_t, int64_t>> owned(const Model& m, const Layout& l, int d) {
  const int64_t n = m.num_local_params();
  if (l.zero == 0 || l.dp == 1) return {{0, n}};
  const int64_t cut = (n / 2 / 3) * 3 + 1;  // deliberately not at a parameter boundary
  return d == 0 ? std::vector<std::pair<int64_t, int64_t>>{{0, cut}} : std::vector<std::pair<int64_t, int64_t>>{{cut, n}};
}

// The moments of element e (tp 1: the full tensor's index, vocabulary padding included) of the
// parameter with index f in param_specs(): exact in fp32.
float m_of(int f, int64_t e) { return static_cast<float>(1000 * f + e) + 0.25f; }
float v_of(int f, int64_t e) { return -static_cast<float>(1000 * f + e) - 0.5f; }

// Element e of p is a vocabulary padding row (tp 1: the rows past the full tensor's). Resharding
// keeps only elements of the full tensor: padding comes back zero, parameters and moments.
bool padding(const ParamInfo& p, int64_t e) { return e >= shape_rows(p.full_shape) * shape_cols(p.full_shape); }

std::map<std::string, int> full_index(const Architecture& arch) {
  std::map<std::string, int> idx;
  const auto specs = arch.param_specs();
  for (size_t f = 0; f < specs.size(); ++f) idx[specs[f].name] = static_cast<int>(f);
  return idx;
}

// The flat buffer's moments over `ranges` (the concatenation over state_segments); as resharded
// (`resharded`): zero in vocabulary padding.
std::vector<float> moments(const Model& m, const std::map<std::string, int>& fidx,
                           const std::vector<std::pair<int64_t, int64_t>>& ranges, bool second, bool tied_copy,
                           bool resharded = false) {
  std::vector<float> out;
  const auto& info = m.params_info();
  for (const auto& [b, e] : state_segments(info, ranges)) {
    for (int64_t x = b; x < e; ++x) {
      size_t k = 0;
      while (!(x >= info[k].offset && x < info[k].offset + info[k].numel)) ++k;
      const int f = fidx.at(info[k].name);
      float val = second ? v_of(f, x - info[k].offset) : m_of(f, x - info[k].offset);
      if (tied_copy && info[k].tied_head) val = 7e6f;  // the last stage's copy: not authoritative
      if (resharded && padding(info[k], x - info[k].offset)) val = 0.0f;
      out.push_back(val);
    }
  }
  return out;
}

// Writes checkpoint `dir` of `arch` at layout l the way CheckpointManager::save does: one shard
// per world rank (rank = (d * pp + s) * tp + t), a manifest with "layout" and "pipeline".
std::string write_checkpoint(const std::string& root, const core::Config& cfg, const Layout& l, uint64_t seed) {
  const auto arch = make_architecture(cfg.model);
  const auto fidx = full_index(*arch);
  const std::string final_dir = root + "/step_00000005", tmp = final_dir + ".tmp";
  fs::create_directories(tmp);
  io::CheckpointPipeline pipe;
  pipe.pp = l.pp;
  pipe.virtual_stages = static_cast<int>(l.vstages.size()) / l.pp;
  pipe.schedule = l.pp > 1 ? "1f1b" : "";
  pipe.vstages = l.vstages;
  nlohmann::json shards = nlohmann::json::array();
  for (int r = 0; r < l.world(); ++r) {
    const int s = pipe.stage_of_rank(r, 1), d = r / l.pp;
    EXPECT_EQ(pipe.rank_of(d, s, 0, 1), r);
    auto m = build(arch, l, s);
    m->init_weights(seed);
    const bool tied_copy = l.pp > 1 && s == l.pp - 1;
    if (tied_copy) {  // the last stage's copy of a tied embedding: other values
      for (size_t k = 0; k < m->params_info().size(); ++k)
        if (m->params_info()[k].tied_head)
          for (int64_t e = 0; e < m->params_info()[k].numel; ++e) m->param(static_cast<int>(k))[e] = 99.0f;
    }
    io::ShardData sd;
    sd.params = m->params().f32();
    sd.num_params = m->num_local_params();
    sd.ranges = owned(*m, l, d);
    const std::vector<float> mm = moments(*m, fidx, sd.ranges, false, tied_copy);
    const std::vector<float> vv = moments(*m, fidx, sd.ranges, true, tied_copy);
    sd.m = mm.data();
    sd.v = vv.data();
    sd.num_state = static_cast<int64_t>(mm.size());
    sd.loader_state = "{}";
    const uint64_t sum = io::write_shard(tmp, r, sd);
    shards.push_back({{"rank", r}, {"file", io::shard_file_name(r)}, {"checksum", fmt::format("{:016x}", sum)}});
  }
  nlohmann::json model{{"arch", arch->name()}, {"params", arch->num_params()}};
  for (const auto& [k, v] : arch->shape_keys()) model[k] = v;
  nlohmann::json man{{"format_version", io::kCheckpointFormatVersion},
                     {"step", 5},
                     {"layout", {{"world", l.world()}, {"dp", l.dp}, {"tp", 1}, {"zero", l.zero}}},
                     {"pipeline", pipe.to_json()},
                     {"model", model},
                     {"config", core::config_to_yaml(cfg)},
                     {"shards", shards}};
  io::finalize_checkpoint(tmp, final_dir, man);
  return final_dir;
}

// Every rank of layout `to` resharded from checkpoint `ckpt`: parameters by name against the
// whole model's init, moments over its owned ranges against the formula.
void check_reshard(const std::string& ckpt, const core::Config& cfg, const Layout& to, uint64_t seed) {
  const auto arch = make_architecture(cfg.model);
  const auto fidx = full_index(*arch);
  auto whole = build(arch, Layout{1, 1, 0, {{0, cfg.model.n_layer}}}, 0);
  whole->init_weights(seed);
  std::map<std::string, int> whole_idx;
  for (size_t k = 0; k < whole->params_info().size(); ++k) whole_idx[whole->params_info()[k].name] = static_cast<int>(k);
  const launch::CheckpointLayout old =
      launch::CheckpointLayout::from_manifest(ckpt, io::read_manifest(ckpt), cfg.model.n_layer);
  size_t seen = 0;
  for (int r = 0; r < to.world(); ++r) {
    const int s = r % to.pp, d = r / to.pp;
    SCOPED_TRACE(fmt::format("new rank {} (stage {} of pp {}, dp {} of {}, zero {})", r, s, to.pp, d, to.dp, to.zero));
    auto m = build(arch, to, s);
    const auto ranges = owned(*m, to, d);
    const std::vector<float> want_m = moments(*m, fidx, ranges, false, false, true);
    const std::vector<float> want_v = moments(*m, fidx, ranges, true, false, true);
    const launch::ReshardedState got =
        launch::reshard_state(old, *m, ranges, static_cast<int64_t>(want_m.size()), /*adam=*/true);
    ASSERT_EQ(got.params.size(), static_cast<size_t>(m->num_local_params()));
    for (const ParamInfo& p : m->params_info()) {
      const ParamInfo& w = whole->params_info()[static_cast<size_t>(whole_idx.at(p.name))];
      ASSERT_EQ(p.numel, w.numel) << p.name;
      int64_t bad = 0;
      for (int64_t e = 0; e < p.numel; ++e)
        bad += got.params[static_cast<size_t>(p.offset + e)] != (padding(p, e) ? 0.0f : whole->params().f32()[w.offset + e]);
      EXPECT_EQ(bad, 0) << p.name << ": elements differing from the whole model's init";
      ++seen;
    }
    ASSERT_EQ(got.m.size(), want_m.size());
    ASSERT_EQ(got.v.size(), want_v.size());
    int64_t bad_m = 0, bad_v = 0;
    for (size_t i = 0; i < want_m.size(); ++i) bad_m += got.m[i] != want_m[i], bad_v += got.v[i] != want_v[i];
    EXPECT_EQ(bad_m, 0) << "first moments differing";
    EXPECT_EQ(bad_v, 0) << "second moments differing";
  }
  // every parameter of the model is held by some rank (at least once per dp replica)
  EXPECT_GE(seen, whole->params_info().size() * static_cast<size_t>(to.dp));
}

std::string temp_dir(const std::string& name) {
  const std::string d = (fs::temp_directory_path() / fmt::format("mt_pp_ckpt_{}_{}", name, ::getpid())).string();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

core::Config gpt2_cfg() {
  core::Config c;
  c.model = gpt2_config(6, 2, 16, 50, 8);  // vocabulary 50: padded rows in play
  return c;
}

core::Config llama_cfg(bool tied) {
  core::Config c;
  c.model.arch = "llama";
  c.model.n_layer = 6;
  c.model.n_head = 4;
  c.model.n_kv_head = 2;
  c.model.n_embd = 32;
  c.model.ffn_dim = 48;
  c.model.vocab_size = 100;
  c.model.seq_len = 16;
  c.model.tie_embeddings = tied;
  return c;
}

// The layouts every case reshards into.
std::vector<Layout> targets() {
  return {
      {1, 1, 0, {{0, 6}}},                                         // pp 1
      {1, 4, 0, {{0, 1}, {1, 3}, {3, 5}, {5, 6}}},                 // pp 4
      {2, 4, 1, {{0, 2}, {2, 3}, {3, 4}, {4, 6}}},                 // dp 2 x pp 4, ZeRO-1, other split
      {2, 2, 1, {{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}}}, // dp 2 x pp 2 x 3 virtual, ZeRO-1
      {3, 2, 0, {{0, 5}, {5, 6}}},                                 // dp 3 x pp 2, uneven
  };
}

// The checkpoints every case writes.
std::vector<Layout> sources() {
  return {
      {1, 2, 0, {{0, 3}, {3, 6}}},                  // pp 2
      {1, 1, 0, {{0, 6}}},                          // pp 1
      {2, 2, 1, {{0, 2}, {2, 6}}},                  // dp 2 x pp 2, ZeRO-1
      {1, 2, 0, {{0, 2}, {2, 3}, {3, 5}, {5, 6}}},  // pp 2 x 2 virtual (interleaved)
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
    for (const auto& [ck, out] : {std::pair{pp1, root + "/hf1"}, std::pair{pp2, root + "/hf2"}}) {
      io::hf::ExportOptions o;
      o.checkpoint = ck;
      o.out = out;
      io::hf::export_hf(o);
    }
    const std::string a = file_bytes(root + "/hf1/model.safetensors"), b = file_bytes(root + "/hf2/model.safetensors");
    EXPECT_FALSE(a.empty());
    EXPECT_TRUE(a == b) << "the pp 2 checkpoint's export differs from the pp 1 checkpoint's";

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
          bad += m->params().f32()[p.offset + e] != (padding(p, e) ? 0.0f : whole->params().f32()[whole->params_info()[k].offset + e]);
        EXPECT_EQ(bad, 0) << "stage " << s << " " << p.name;
      }
    }
    fs::remove_all(root);
  }
}
