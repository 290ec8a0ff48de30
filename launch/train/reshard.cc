// What: CheckpointLayout and reshard_state (see reshard.h).
#include "launch/train/reshard.h"

#include <algorithm>

#include "core/error.h"
#include "io/checkpoint.h"
#include "parallel/grad_sync.h"
#include "parallel/optimizer.h"

namespace mt::launch {

CheckpointLayout CheckpointLayout::from_manifest(const std::string& dir, const nlohmann::json& m, int n_layer) {
  const auto& lay = m.at("layout");
  CheckpointLayout l;
  l.world = lay.at("world").get<int>();
  l.dp = lay.at("dp").get<int>();
  l.tp = lay.at("tp").get<int>();
  l.zero = lay.at("zero").get<int>();
  l.pipeline = io::CheckpointPipeline::from_manifest(m, n_layer, dir + "/manifest.json");
  for (const auto& s : m.at("shards")) {
    l.files.push_back(dir + "/" + s.at("file").get<std::string>());
    l.checksums.push_back(std::stoull(s.at("checksum").get<std::string>(), nullptr, 16));
  }
  if (l.world != l.dp * l.pp() * l.tp || l.files.size() != static_cast<size_t>(l.world)) {
    throw core::Error(fmt::format("the manifest's layout (world {} = dp {} x pp {} x tp {}) does not match its {} shards",
                                  l.world, l.dp, l.pp(), l.tp, l.files.size()))
        .with_file(dir + "/manifest.json");
  }
  return l;
}

namespace {
// One old stage's slices: its parameters' layout at the old tp size (the same on every old
// tp rank of the stage) and, per full parameter index, the index in it (-1: not held).
struct OldStage {
  std::vector<parallel::ParamInfo> info;
  int64_t total = 0;
  std::vector<int> local_of_full;
};

OldStage old_stage(const CheckpointLayout& old, const std::vector<parallel::ParamSpec>& specs, int n_layer, int s) {
  OldStage o;
  const parallel::StageLayers st = old.pipeline.stage(s);
  int held = 0;
  for (const auto& sp : specs) o.local_of_full.push_back(st.holds(sp, n_layer) ? held++ : -1);
  o.info = parallel::layout_params(parallel::stage_specs(specs, st, n_layer), old.tp,
                                   parallel::GradSync::flat_alignment(old.dp), &o.total, old.units_aligned());
  return o;
}
}  // namespace

ReshardedState reshard_state(const CheckpointLayout& old, const parallel::Model& model,
                             const std::vector<std::pair<int64_t, int64_t>>& owned_ranges, int64_t num_state,
                             bool adam) {
  const int old_dp = old.dp, old_tp = old.tp;
  const auto specs = model.arch().param_specs();
  const int n_layer = model.arch().config().n_layer;
  const auto& ninfo = model.params_info();
  const int64_t ntotal = model.num_local_params();
  ReshardedState out;
  std::vector<float>& np = out.params;
  np.assign(ntotal, 0.0f);
  std::vector<float> nm(ntotal, 0.0f), nv(adam ? ntotal : 0, 0.0f);
  // the parameters this rank holds (full indices), by the old stage that is their source
  std::vector<std::vector<int>> wanted(static_cast<size_t>(old.pp()));
  for (size_t f = 0; f < specs.size(); ++f)
    if (model.local_param(static_cast<int>(f)) >= 0)
      wanted[static_cast<size_t>(old.pipeline.holder(specs[f], n_layer))].push_back(static_cast<int>(f));
  const int tp = model.tp().size(), tp_rank = model.tp().rank();
  for (int s = 0; s < old.pp(); ++s) {
    if (wanted[static_cast<size_t>(s)].empty()) continue;
    const OldStage ost = old_stage(old, specs, n_layer, s);
    const auto& oinfo = ost.info;
    const int64_t ototal = ost.total;
    for (int t = 0; t < old_tp; ++t) {
      std::vector<float> op(ototal, 0.0f), om(ototal, 0.0f), ov(ototal, 0.0f), sm, sv;
      std::vector<std::pair<int64_t, int64_t>> ranges;
      // params from any replica (ZeRO-3: from every replica, each holds its ranges); optimizer
      // state from every replica under ZeRO-1/2/3, else from any (each holds all of it: reading
      // one is old_dp times less I/O at scale)
      const int read_dp = old.zero > 0 ? old_dp : 1;
      for (int dpi = 0; dpi < read_dp; ++dpi) {
        const int r = old.pipeline.rank_of(dpi, s, t, old_tp);
        const std::string& path = old.files.at(static_cast<size_t>(r));
        std::vector<float> p;
        io::read_shard(path, old.checksums.at(static_cast<size_t>(r)), p, sm, sv, ranges);
        if (static_cast<int64_t>(p.size()) == ototal) {
          if (dpi == 0) op = std::move(p);
        } else {  // ZeRO-3: the ranges' elements one after the other
          int64_t off = 0;
          for (const auto& [b, e] : ranges) {
            MT_CHECK(e <= ototal && off + (e - b) <= static_cast<int64_t>(p.size()),
                     "shard {} holds {} parameters, which fit neither its ranges nor the slice of {}", path, p.size(),
                     ototal);
            std::copy(p.begin() + off, p.begin() + off + (e - b), op.begin() + b);
            off += e - b;
          }
          MT_CHECK(off == static_cast<int64_t>(p.size()), "shard {} holds {} parameters, its ranges {}", path, p.size(),
                   off);
        }
        // optimizer state is the concatenation of the ranges' parameter elements (padding has none)
        int64_t off = 0;
        for (const auto& [b, e] : parallel::state_segments(oinfo, ranges)) {
          MT_CHECK(off + (e - b) <= static_cast<int64_t>(sm.size()), "optimizer state of shard {} is too short", path);
          std::copy(sm.begin() + off, sm.begin() + off + (e - b), om.begin() + b);
          if (!sv.empty() && adam) std::copy(sv.begin() + off, sv.begin() + off + (e - b), ov.begin() + b);
          off += e - b;
        }
      }
      // every wanted parameter: the elements old slice t shares with this rank's new slice
      for (const int f : wanted[static_cast<size_t>(s)]) {
        const parallel::ParamInfo& o = oinfo[static_cast<size_t>(ost.local_of_full[static_cast<size_t>(f)])];
        const parallel::ParamInfo& n = ninfo[static_cast<size_t>(model.local_param(f))];
        for (auto [src, dst] : {std::pair{&op, &np}, std::pair{&om, &nm}, std::pair{&ov, &nv}}) {
          if (dst->empty()) continue;
          parallel::copy_shared_elements(n.partition, n.full_shape, old_tp, t, src->data() + o.offset, tp, tp_rank,
                                         dst->data() + n.offset);
        }
      }
    }
  }
  // this rank's optimizer state: the concatenation of its owned ranges' parameter elements
  out.m.assign(static_cast<size_t>(num_state), 0.0f);
  out.v.assign(adam ? out.m.size() : 0, 0.0f);
  int64_t off = 0;
  for (const auto& [b, e] : parallel::state_segments(ninfo, owned_ranges)) {
    MT_CHECK(off + (e - b) <= num_state, "optimizer state layout mismatch");
    std::copy(nm.begin() + b, nm.begin() + e, out.m.begin() + off);
    if (adam) std::copy(nv.begin() + b, nv.begin() + e, out.v.begin() + off);
    off += e - b;
  }
  MT_CHECK(off == num_state, "optimizer state layout mismatch");
  return out;
}

}  // namespace mt::launch
