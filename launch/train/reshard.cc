// What: CheckpointLayout and reshard_state (see reshard.h).
#include "launch/train/reshard.h"

#include <algorithm>

#include "core/error.h"
#include "io/checkpoint.h"
#include "parallel/grad_sync.h"
#include "parallel/mesh.h"
#include "parallel/optimizer.h"

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

ReshardedState reshard_state(const CheckpointLayout& old, const parallel::Model& model,
                                 const std::vector<std::pair<int64_t, int64_t>>& owned_ranges, int64_t num_state,
                                 bool adam) {
  const int old_dp = old.dp, old_tp = old.tp;
  const parallel::Mesh old_mesh(old.world, old_dp, old_tp);
  const auto& ninfo = model.params_info();
  const int64_t ntotal = model.num_local_params();
  ReshardedState out;
  std::vector<float>& np = out.params;
  np.assign(ntotal, 0.0f);
  std::vector<float> nm(ntotal, 0.0f), nv(adam ? ntotal : 0, 0.0f);
  // the old slices' layout (the same on every old tp rank): the model's parameters at old_tp
  int64_t ototal = 0;
  const auto oinfo = parallel::layout_params(model.arch().param_specs(), old_tp,
                                             parallel::GradSync::flat_alignment(old_dp), &ototal,
                                             old.units_aligned());
  const int tp = model.tp().size(), tp_rank = model.tp().rank();
  for (int t = 0; t < old_tp; ++t) {
    std::vector<float> op(ototal, 0.0f), om(ototal, 0.0f), ov(ototal, 0.0f), sm, sv;
    std::vector<std::pair<int64_t, int64_t>> ranges;
    // params from any replica (ZeRO-3: from every replica, each holds its ranges); optimizer
    // state from every replica under ZeRO-1/2/3, else from any (each holds all of it: reading
    // one is old_dp times less I/O at scale)
    const int read_dp = old.zero > 0 ? old_dp : 1;
    for (int dpi = 0; dpi < read_dp; ++dpi) {
      const int r = old_mesh.rank_of(dpi, t);
      const std::string& path = old.files.at(static_cast<size_t>(r));
      std::vector<float> p;
      io::read_shard(path, old.checksums.at(static_cast<size_t>(r)), p, sm, sv, ranges);
      if (static_cast<int64_t>(p.size()) == ototal) {
        if (dpi == 0) op = std::move(p);
      } else {  // ZeRO-3: the ranges' elements one after the other
        int64_t off = 0;
        for (const auto& [b, e] : ranges) {
          MT_CHECK(e <= ototal && off + (e - b) <= static_cast<int64_t>(p.size()),
                   "shard {} holds {} parameters, which fit neither its ranges nor the slice of {}", path, p.size(), ototal);
          std::copy(p.begin() + off, p.begin() + off + (e - b), op.begin() + b);
          off += e - b;
        }
        MT_CHECK(off == static_cast<int64_t>(p.size()), "shard {} holds {} parameters, its ranges {}", path, p.size(), off);
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
    // every parameter: the elements old slice t shares with this rank's new slice
    for (size_t k = 0; k < ninfo.size(); ++k) {
      const parallel::ParamInfo& o = oinfo[k];
      const parallel::ParamInfo& n = ninfo[k];
      for (auto [src, dst] : {std::pair{&op, &np}, std::pair{&om, &nm}, std::pair{&ov, &nv}}) {
        if (dst->empty()) continue;
        parallel::copy_shared_elements(n.partition, n.full_shape, old_tp, t, src->data() + o.offset, tp, tp_rank,
                                       dst->data() + n.offset);
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
