// What: helpers of the pipeline checkpoint tests (tests/unit/pipeline_checkpoint_test.cc at
// tp 1, tests/mpi/pipeline_reshard_tp_test.cc with tp = world): stage Models built from a
// dp x pp x tp layout, optimizer moments that are a formula of (parameter, full-tensor index),
// a checkpoint of a layout written as CheckpointManager::save writes it, and the check of
// every rank of another layout resharded from it (reshard_state) against the whole model's
// init_weights(seed) and the formula.
// Why: the expected values come from the full-tensor index alone, independent of any layout.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "io/checkpoint.h"
#include "io/checkpoint_pipeline.h"
#include "launch/train/reshard.h"
#include "model_util.h"
#include "parallel/communicator.h"
#include "parallel/grad_sync.h"
#include "parallel/models/registry.h"
#include "parallel/optimizer.h"
#include "parallel/pipeline/stages.h"

namespace mt::pp_ckpt {

using namespace mt::parallel;
using VStages = std::vector<std::pair<int, int>>;

// A model of `arch` holding a stage's layers; only its parameters matter here (no forward).
class StubModel final : public Model {
 public:
  StubModel(std::shared_ptr<const Architecture> a, const ModelContext& ctx) : Model(std::move(a), ctx) {}
  double forward(const int32_t*, const int32_t*, int, int, const int32_t*) override { return 0; }
  void backward(float, const GradReadyFn&) override {}
  size_t activation_bytes() const override { return 0; }
};

// A dp x pp x tp layout and its virtual stages (tp: the size of the communicator it is used
// with, 1 without one).
struct Layout {
  int dp = 1, pp = 1, zero = 0;
  VStages vstages;
};

// The model of stage `stage` at tp rank comm->rank() of comm->size() (tp 1 without comm).
inline std::unique_ptr<Model> build(const std::shared_ptr<const Architecture>& arch, const Layout& l, int stage,
                                    Communicator* tp_comm = nullptr) {
  ModelContext ctx;
  ctx.tp = tp_comm ? tp_comm->size() : 1;
  ctx.tp_rank = tp_comm ? tp_comm->rank() : 0;
  ctx.tp_comm = ctx.tp > 1 ? tp_comm : nullptr;
  ctx.flat_align = GradSync::flat_alignment(l.dp);
  ctx.align_units = l.zero >= 2 && l.dp > 1;  // (ZeRO-2/3: every layer starts aligned)
  ctx.stage = stage_layers(l.vstages, l.pp, stage);
  return std::make_unique<StubModel>(arch, ctx);
}

// dp rank d's owned flat ranges: ZeRO-1/2/3 a cut of its own (the reader must take it from the
// shard's recorded ranges, not assume it), else all of it.
inline std::vector<std::pair<int64_t, int64_t>> owned(const Model& m, const Layout& l, int d) {
  const int64_t n = m.num_local_params();
  if (l.zero == 0 || l.dp == 1) return {{0, n}};
  const int64_t per = n / l.dp + 7;  // deliberately not at parameter or alignment boundaries
  const int64_t b = std::min(n, d * per), e = d == l.dp - 1 ? n : std::min(n, (d + 1) * per);
  return {{b, e}};
}

// Local element e of parameter p (tp rank `rank` of tp): its index in the full tensor, or -1
// in vocabulary padding.
inline int64_t full_elem(const ParamInfo& p, int tp, int rank, int64_t e) {
  const int64_t lcols = shape_cols(p.local_shape);
  const Partition::Place at = p.partition.to_full(p.full_shape, tp, rank, e / lcols);
  if (at.row >= shape_rows(p.full_shape)) return -1;
  return at.row * shape_cols(p.full_shape) + at.col + e % lcols;
}

// The moments of full element g of the parameter with index f in param_specs(): exact in fp32.
inline float m_of(int f, int64_t g) { return static_cast<float>(1000 * f + g) + 0.25f; }
inline float v_of(int f, int64_t g) { return -static_cast<float>(1000 * f + g) - 0.5f; }

inline std::map<std::string, int> full_index(const Architecture& arch) {
  std::map<std::string, int> idx;
  const auto specs = arch.param_specs();
  for (size_t f = 0; f < specs.size(); ++f) idx[specs[f].name] = static_cast<int>(f);
  return idx;
}

// What to put where the formula does not apply.
enum class Moments {
  Written,    // as a checkpoint holds them (padding: 5, a tied embedding's last-stage copy: 7e6)
  Resharded,  // as resharding must give them (padding: 0; copies: the formula)
};

// Model m's moments over `ranges` (the concatenation over state_segments).
inline std::vector<float> moments(const Model& m, const std::map<std::string, int>& fidx,
                                  const std::vector<std::pair<int64_t, int64_t>>& ranges, bool second, Moments kind,
                                  bool tied_copy = false) {
  std::vector<float> out;
  const auto& info = m.params_info();
  const int tp = m.tp().size(), rank = m.tp().rank();
  for (const auto& [b, e] : state_segments(info, ranges)) {
    size_t k = 0;
    for (int64_t x = b; x < e; ++x) {
      while (!(x >= info[k].offset && x < info[k].offset + info[k].numel)) ++k;
      const int f = fidx.at(info[k].name);
      const int64_t g = full_elem(info[k], tp, rank, x - info[k].offset);
      float val = g < 0 ? (kind == Moments::Written ? 5.0f : 0.0f) : second ? v_of(f, g) : m_of(f, g);
      if (kind == Moments::Written && tied_copy && info[k].tied_head) val = 7e6f;  // not authoritative
      out.push_back(val);
    }
  }
  return out;
}

// Writes checkpoint <root>/step_00000005 of cfg.model at layout l and tp = tp_comm's size (1
// without) the way CheckpointManager::save does: one shard per world rank (rank = (d * pp + s)
// * tp + t; this process writes those of its tp rank t), a manifest with "layout" and
// "pipeline". The last stage's copy of a tied embedding is written with other values (99,
// moments 7e6): a reader must take the first stage's. Collective over tp_comm.
inline std::string write_checkpoint(const std::string& root, const core::Config& cfg, const Layout& l, uint64_t seed,
                                    Communicator* tp_comm = nullptr) {
  const auto arch = make_architecture(cfg.model);
  const auto fidx = full_index(*arch);
  const int tp = tp_comm ? tp_comm->size() : 1, t = tp_comm ? tp_comm->rank() : 0;
  const std::string final_dir = root + "/step_00000005", tmp = final_dir + ".tmp";
  if (t == 0) std::filesystem::create_directories(tmp);
  if (tp_comm) tp_comm->barrier();
  io::CheckpointPipeline pipe;
  pipe.pp = l.pp;
  pipe.virtual_stages = static_cast<int>(l.vstages.size()) / l.pp;
  pipe.schedule = l.pp > 1 ? "1f1b" : "";
  pipe.vstages = l.vstages;
  const int mine = l.dp * l.pp;  // shards of this tp rank, in (d, s) order
  std::vector<int64_t> sums(static_cast<size_t>(mine)), all(static_cast<size_t>(mine * tp));
  for (int d = 0; d < l.dp; ++d) {
    for (int s = 0; s < l.pp; ++s) {
      const int r = pipe.rank_of(d, s, t, tp);
      EXPECT_EQ(pipe.stage_of_rank(r, tp), s);
      auto m = build(arch, l, s, tp_comm);
      m->init_weights(seed);
      const bool tied_copy = l.pp > 1 && s == l.pp - 1;
      if (tied_copy) {
        for (size_t k = 0; k < m->params_info().size(); ++k)
          if (m->params_info()[k].tied_head)
            for (int64_t e = 0; e < m->params_info()[k].numel; ++e) m->param(static_cast<int>(k))[e] = 99.0f;
      }
      io::ShardData sd;
      sd.ranges = owned(*m, l, d);
      std::vector<float> stored;  // ZeRO-3 at dp > 1: the owned ranges' parameters, in order
      if (l.zero == 3 && l.dp > 1)
        for (const auto& [b, e] : sd.ranges) stored.insert(stored.end(), m->params().f32() + b, m->params().f32() + e);
      sd.params = stored.empty() ? m->params().f32() : stored.data();
      sd.num_params = stored.empty() ? m->num_local_params() : static_cast<int64_t>(stored.size());
      const std::vector<float> mm = moments(*m, fidx, sd.ranges, false, Moments::Written, tied_copy);
      const std::vector<float> vv = moments(*m, fidx, sd.ranges, true, Moments::Written, tied_copy);
      sd.m = mm.data();
      sd.v = vv.data();
      sd.num_state = static_cast<int64_t>(mm.size());
      sd.loader_state = "{}";
      sums[static_cast<size_t>(d * l.pp + s)] = static_cast<int64_t>(io::write_shard(tmp, r, sd));
    }
  }
  if (tp_comm) tp_comm->all_gather(sums.data(), all.data(), sums.size(), DType::I64);
  else all = sums;
  if (t == 0) {
    nlohmann::json shards = nlohmann::json::array();
    for (int r = 0; r < l.dp * l.pp * tp; ++r) {
      const int rt = r % tp, rs = pipe.stage_of_rank(r, tp), rd = r / tp / l.pp;
      const auto sum = static_cast<uint64_t>(all[static_cast<size_t>(rt * mine + rd * l.pp + rs)]);
      shards.push_back({{"rank", r}, {"file", io::shard_file_name(r)}, {"checksum", fmt::format("{:016x}", sum)}});
    }
    nlohmann::json model{{"arch", arch->name()}, {"params", arch->num_params()}};
    for (const auto& [k, v] : arch->shape_keys()) model[k] = v;
    nlohmann::json man{{"format_version", io::kCheckpointFormatVersion},
                       {"step", 5},
                       {"layout", {{"world", l.dp * l.pp * tp}, {"dp", l.dp}, {"tp", tp}, {"zero", l.zero}}},
                       {"pipeline", pipe.to_json()},
                       {"model", model},
                       {"config", core::config_to_yaml(cfg)},
                       {"shards", shards}};
    io::finalize_checkpoint(tmp, final_dir, man);
  }
  if (tp_comm) tp_comm->barrier();
  return final_dir;
}

// Every (dp, stage) rank of layout `to`, at this tp rank of tp_comm (tp 1 without), resharded
// from checkpoint `ckpt`: parameters by name against the whole model's init (vocabulary
// padding zero), moments over its owned ranges against the formula, exactly.
inline void check_reshard(const std::string& ckpt, const core::Config& cfg, const Layout& to, uint64_t seed,
                          Communicator* tp_comm = nullptr) {
  const auto arch = make_architecture(cfg.model);
  const auto fidx = full_index(*arch);
  auto whole = build(arch, Layout{1, 1, 0, {{0, cfg.model.n_layer}}}, 0);  // tp 1
  whole->init_weights(seed);
  std::map<std::string, int> whole_idx;
  for (size_t k = 0; k < whole->params_info().size(); ++k) whole_idx[whole->params_info()[k].name] = static_cast<int>(k);
  const launch::CheckpointLayout old =
      launch::CheckpointLayout::from_manifest(ckpt, io::read_manifest(ckpt), cfg.model.n_layer);
  size_t seen = 0;
  for (int d = 0; d < to.dp; ++d) {
    for (int s = 0; s < to.pp; ++s) {
      SCOPED_TRACE(fmt::format("new stage {} of pp {}, dp {} of {}, zero {}", s, to.pp, d, to.dp, to.zero));
      auto m = build(arch, to, s, tp_comm);
      const int tp = m->tp().size(), rank = m->tp().rank();
      const auto ranges = owned(*m, to, d);
      const std::vector<float> want_m = moments(*m, fidx, ranges, false, Moments::Resharded);
      const std::vector<float> want_v = moments(*m, fidx, ranges, true, Moments::Resharded);
      const launch::ReshardedState got =
          launch::reshard_state(old, *m, ranges, static_cast<int64_t>(want_m.size()), /*adam=*/true);
      ASSERT_EQ(got.params.size(), static_cast<size_t>(m->num_local_params()));
      for (const ParamInfo& p : m->params_info()) {
        const ParamInfo& w = whole->params_info()[static_cast<size_t>(whole_idx.at(p.name))];
        int64_t bad = 0;
        for (int64_t e = 0; e < p.numel; ++e) {
          const int64_t g = full_elem(p, tp, rank, e);
          bad += got.params[static_cast<size_t>(p.offset + e)] != (g < 0 ? 0.0f : whole->params().f32()[w.offset + g]);
        }
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
  }
  // every parameter is held by some stage (at least once per dp replica)
  EXPECT_GE(seen, whole->params_info().size() * static_cast<size_t>(to.dp));
}

inline core::Config gpt2_cfg() {
  core::Config c;
  c.model = gpt2_config(6, 4, 16, 50, 8);  // vocabulary 50: padded rows in play; tp up to 4
  return c;
}

inline core::Config llama_cfg(bool tied) {
  core::Config c;
  c.model.arch = "llama";
  c.model.n_layer = 6;
  c.model.n_head = 4;
  c.model.n_kv_head = 2;  // replicated kv heads at tp 4
  c.model.n_embd = 32;
  c.model.ffn_dim = 48;
  c.model.vocab_size = 100;
  c.model.seq_len = 16;
  c.model.tie_embeddings = tied;
  return c;
}

}  // namespace mt::pp_ckpt
