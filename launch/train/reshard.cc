// What: CheckpointLayout and reshard_gpt_state (see reshard.h).
#include "launch/train/reshard.h"

#include <algorithm>

#include "core/error.h"
#include "io/checkpoint.h"
#include "parallel/grad_sync.h"
#include "parallel/mesh.h"

namespace mt::launch {

CheckpointLayout CheckpointLayout::from_manifest(const std::string& dir, const nlohmann::json& m) {
  const auto& lay = m.at("layout");
  CheckpointLayout l;
  l.world = lay.at("world").get<int>();
  l.dp = lay.at("dp").get<int>();
  l.tp = lay.at("tp").get<int>();
  l.zero = lay.at("zero").get<int>();
  for (const auto& s : m.at("shards")) {
    l.files.push_back(dir + "/" + s.at("file").get<std::string>());
    l.checksums.push_back(std::stoull(s.at("checksum").get<std::string>(), nullptr, 16));
  }
  return l;
}

ReshardedState reshard_gpt_state(const CheckpointLayout& old, const core::ModelConfig& model_cfg,
                                 const parallel::Gpt& model,
                                 const std::vector<std::pair<int64_t, int64_t>>& owned_ranges, int64_t num_state,
                                 bool adam) {
  const int old_dp = old.dp, old_tp = old.tp;
  const parallel::Mesh old_mesh(old.world, old_dp, old_tp);
  const parallel::GptDims& nd = model.dims();
  const auto& ninfo = model.params_info();
  const int64_t ntotal = model.num_local_params();
  ReshardedState out;
  std::vector<float>& np = out.params;
  np.assign(ntotal, 0.0f);
  std::vector<float> nm(ntotal, 0.0f), nv(adam ? ntotal : 0, 0.0f);
  for (int t = 0; t < old_tp; ++t) {
    const parallel::GptDims od = parallel::make_gpt_dims(model_cfg, old_tp, t);
    int64_t ototal = 0;
    const auto oinfo = parallel::gpt_param_layout(model_cfg, od, parallel::GradSync::flat_alignment(old_dp), &ototal);
    std::vector<float> op, om(ototal, 0.0f), ov(ototal, 0.0f), sm, sv;
    std::vector<std::pair<int64_t, int64_t>> ranges;
    // params from any replica; optimizer state from every replica under ZeRO-1, else from
    // any (each holds all of it: reading one is old_dp times less I/O at scale)
    const int read_dp = old.zero > 0 ? old_dp : 1;
    for (int dpi = 0; dpi < read_dp; ++dpi) {
      const int r = old_mesh.rank_of(dpi, t);
      const std::string& path = old.files.at(static_cast<size_t>(r));
      std::vector<float> p;
      io::read_shard(path, old.checksums.at(static_cast<size_t>(r)), p, sm, sv, ranges);
      MT_CHECK(static_cast<int64_t>(p.size()) == ototal, "shard {} holds {} parameters, expected {}", path, p.size(), ototal);
      if (dpi == 0) op = std::move(p);
      // optimizer state is the concatenation of the ranges' parameter elements (the flat
      // buffer's zero padding after the last parameter has no state)
      const int64_t oend = oinfo.back().offset + oinfo.back().numel;
      int64_t off = 0;
      for (const auto& [b, e0] : ranges) {
        const int64_t e = std::min(e0, oend);
        if (e <= b) continue;
        MT_CHECK(off + (e - b) <= static_cast<int64_t>(sm.size()), "optimizer state of shard {} is too short", path);
        std::copy(sm.begin() + off, sm.begin() + off + (e - b), om.begin() + b);
        if (!sv.empty() && adam) std::copy(sv.begin() + off, sv.begin() + off + (e - b), ov.begin() + b);
        off += e - b;
      }
    }
    for (size_t k = 0; k < ninfo.size(); ++k) {
      const parallel::ParamInfo& o = oinfo[k];
      const parallel::ParamInfo& n = ninfo[k];
      const int64_t orows = o.local_shape[0], ocols = o.local_shape.size() > 1 ? o.local_shape[1] : 1;
      const int64_t nrows = n.local_shape[0], ncols = n.local_shape.size() > 1 ? n.local_shape[1] : 1;
      for (int64_t r = 0; r < orows; ++r) {
        for (int64_t c = 0; c < ocols; ++c) {
          const auto [fr, fc] = parallel::full_position(o, od, r, c);
          if (o.split == parallel::TpSplit::Vocab && fr >= nd.V) continue;  // padding rows
          int owner = nd.tp_rank;
          int64_t lr = fr, lc = fc;
          switch (n.split) {
            case parallel::TpSplit::Replicated: break;
            case parallel::TpSplit::Rows:
            case parallel::TpSplit::Vocab: owner = static_cast<int>(fr / nrows); lr = fr % nrows; break;
            case parallel::TpSplit::Cols: owner = static_cast<int>(fc / ncols); lc = fc % ncols; break;
            case parallel::TpSplit::Qkv: {
              const int64_t part = nrows / 3, j = fr / nd.C, within = fr % nd.C;
              owner = static_cast<int>(within / part);
              lr = j * part + within % part;
              break;
            }
          }
          if (owner != nd.tp_rank) continue;
          const int64_t src = o.offset + r * ocols + c, dst = n.offset + lr * ncols + lc;
          np[dst] = op[src];
          nm[dst] = om[src];
          if (adam) nv[dst] = ov[src];
        }
      }
    }
  }
  // this rank's optimizer state: the concatenation of its owned ranges' elements
  const int64_t nend = ninfo.back().offset + ninfo.back().numel;
  out.m.assign(static_cast<size_t>(num_state), 0.0f);
  out.v.assign(adam ? out.m.size() : 0, 0.0f);
  int64_t off = 0;
  for (const auto& [b, e0] : owned_ranges) {
    const int64_t e = std::min(e0, nend);
    if (e <= b) continue;
    MT_CHECK(off + (e - b) <= num_state, "optimizer state layout mismatch");
    std::copy(nm.begin() + b, nm.begin() + e, out.m.begin() + off);
    if (adam) std::copy(nv.begin() + b, nv.begin() + e, out.v.begin() + off);
    off += e - b;
  }
  MT_CHECK(off == num_state, "optimizer state layout mismatch");
  return out;
}

}  // namespace mt::launch
