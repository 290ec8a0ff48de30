// What: Trainer::save_checkpoint and Trainer::restore_checkpoint (see io/checkpoint.h for the
// on-disk protocol). Every rank writes its own shard; rank 0 gathers the checksums, writes the
// manifest and publishes the checkpoint by rename; resume picks the newest checkpoint whose
// shards all verify and falls back to older ones, naming what was wrong with each.
// Resharding: a checkpoint written under one dp x tp layout (with or without ZeRO-1) loads
// under any other valid layout: each rank reads the old shards, maps every element of every
// old tp slice to its position in the full tensor (gpt.h: full_position) and keeps those
// that its new slice owns; optimizer state is rebuilt the same way from the dp shards (all of
// them under ZeRO-1; one replica's otherwise, as each holds the whole state of its tp slice).
// Devices: parameters and optimizer state live on the trainer's device; they are read and
// written here through host copies (on the CPU the buffers are used in place).
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "io/checkpoint.h"
#include "launch/train/trainer.h"

namespace mt::launch {

namespace fs = std::filesystem;
namespace log = core::log;

std::string Trainer::checkpoint_dir() const {
  return cfg_.checkpoint.dir.empty() ? cfg_.run.dir + "/checkpoints" : cfg_.checkpoint.dir;
}

namespace {
// `root`'s string to every rank (length, then bytes).
std::string broadcast_string(parallel::Communicator& c, std::string s, int root = 0) {
  int64_t n = static_cast<int64_t>(s.size());
  c.broadcast(&n, 1, parallel::DType::I64, root);
  s.resize(static_cast<size_t>(n));
  std::vector<int32_t> buf((n + 3) / 4, 0);
  std::memcpy(buf.data(), s.data(), s.size());
  c.broadcast(buf.data(), buf.size(), parallel::DType::I32, root);
  std::memcpy(s.data(), buf.data(), s.size());
  return s;
}

// Verifies checkpoint `dir` collectively: rank r checks the shards r, r + world, ... (each
// shard is read once, in parallel, instead of every shard by rank 0 while the others wait
// under the collective deadline). Returns "" on every rank if all shards are good, else the
// problem the lowest such rank found.
std::string verify_collectively(parallel::Communicator& world, const std::string& dir) {
  const std::string bad = io::verify_checkpoint(dir, world.rank(), world.size());
  int32_t neg_first = -(bad.empty() ? world.size() : world.rank());  // (a max of negatives: the min)
  if (world.size() > 1) world.all_reduce(&neg_first, 1, parallel::DType::I32, parallel::ReduceOp::Max);
  const int first = -neg_first;
  if (first == world.size()) return "";
  return world.size() > 1 ? broadcast_string(world, bad, first) : bad;
}
}  // namespace

void Trainer::save_checkpoint(int64_t steps_done) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string dir = checkpoint_dir();
  const std::string final_dir = dir + "/" + io::checkpoint_name(steps_done);
  const std::string tmp_dir = final_dir + ".tmp";
  std::string err;
  if (world_.rank() == 0) {
    try {
      io::ensure_directory(dir);
      fs::remove_all(tmp_dir);
      io::ensure_directory(tmp_dir);
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  err = broadcast_string(world_, err);
  if (!err.empty()) throw core::Error("cannot prepare the checkpoint directory: " + err);

  io::ShardData d;
  const bool on_host = device_->kind() == core::DeviceKind::CPU;
  std::vector<float> hp, hm, hv;  // host copies of device state
  if (!on_host) {
    hp.resize(static_cast<size_t>(model_->num_local_params()));
    device_->copy(hp.data(), model_->params().raw(), hp.size() * sizeof(float));
    hm = optim_->state_m_host();
    hv = optim_->state_v_host();
  }
  d.params = on_host ? model_->params().f32() : hp.data();
  d.num_params = model_->num_local_params();
  d.m = on_host ? optim_->state_m() : hm.data();
  d.v = !optim_->has_v() ? nullptr : on_host ? optim_->state_v() : hv.data();
  d.num_state = optim_->num_elements();
  d.ranges = sync_->owned_ranges();
  d.loader_state = loader_->state();
  const int64_t sum = static_cast<int64_t>(io::write_shard(tmp_dir, world_.rank(), d));
  std::vector<int64_t> sums(world_.size());
  world_.all_gather(&sum, sums.data(), 1, parallel::DType::I64);  // also: every shard is written
  if (world_.rank() == 0) {
    nlohmann::json shards = nlohmann::json::array();
    for (int r = 0; r < world_.size(); ++r) {
      shards.push_back({{"rank", r}, {"file", io::shard_file_name(r)},
                        {"checksum", fmt::format("{:016x}", static_cast<uint64_t>(sums[r]))}});
    }
    nlohmann::json m{{"format_version", io::kCheckpointFormatVersion},
                     {"step", steps_done},
                     {"layout", {{"world", world_.size()}, {"dp", dp_}, {"tp", tp_}, {"zero", cfg_.parallel.zero}}},
                     {"model", {{"n_layer", cfg_.model.n_layer}, {"n_head", cfg_.model.n_head},
                                {"n_embd", cfg_.model.n_embd}, {"vocab_size", cfg_.model.vocab_size},
                                {"seq_len", cfg_.model.seq_len}, {"params", model_->num_full_params()}}},
                     {"trainer", state_.to_json(std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count())},
                     {"config", core::config_to_yaml(cfg_)},
                     {"shards", shards}};
    io::finalize_checkpoint(tmp_dir, final_dir, m);
    io::prune_checkpoints(dir, cfg_.checkpoint.keep);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    log::info("checkpoint {} written in {:.0f} ms", final_dir, ms);
  }
  world_.barrier();
}

int64_t Trainer::restore_checkpoint() {
  const auto t0 = std::chrono::steady_clock::now();
  const auto ms = [&] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  const std::string& want = cfg_.checkpoint.resume;
  std::string chosen, reason, hint = "resume=auto picks the newest valid checkpoint under <run.dir>/checkpoints";
  std::string candidates;  // rank 0's list, newest first, one per line
  if (world_.rank() == 0) {
    if (want == "auto") {
      for (const auto& c : io::list_checkpoints(checkpoint_dir())) candidates += c + "\n";
    } else {
      std::error_code ec;
      if (!fs::exists(want, ec)) {
        reason = fmt::format("{} does not exist (relative paths start from the working directory, {})", want,
                             fs::current_path(ec).string());
      } else if (fs::is_directory(want, ec) && !fs::exists(fs::path(want) / "manifest.json", ec)) {
        // a run directory or a checkpoints/ directory instead of one checkpoint: name the newest
        auto found = io::list_checkpoints(want);
        if (found.empty()) found = io::list_checkpoints(want + "/checkpoints");
        if (!found.empty()) {
          reason = fmt::format("{} is not a checkpoint but holds checkpoints; the newest is {}", want, found.front());
          hint = fmt::format("resume={} (a step_<N> directory), or resume=auto with the run.dir (or checkpoint.dir) "
                             "they belong to", found.front());
        }
      } else if (fs::exists(fs::path(want) / "manifest.json", ec) && !fs::exists(fs::path(want) / "COMPLETE", ec)) {
        reason = fmt::format("{} is an incomplete checkpoint: it has no COMPLETE marker (its write did not finish)", want);
        hint = "resume from an older checkpoint, or resume=auto (which only considers complete ones)";
      }
      if (reason.empty()) candidates = want + "\n";
    }
  }
  candidates = broadcast_string(world_, candidates);
  reason = broadcast_string(world_, reason);
  hint = broadcast_string(world_, hint);
  for (size_t at = 0, nl; (nl = candidates.find('\n', at)) != std::string::npos; at = nl + 1) {
    const std::string c = candidates.substr(at, nl - at);
    const std::string bad = verify_collectively(world_, c);
    if (bad.empty()) {
      chosen = c;
      break;
    }
    if (want != "auto") reason = bad;
    else if (world_.rank() == 0) log::warn("skipping checkpoint {}: {}", c, bad);
  }
  if (chosen.empty()) {
    if (want == "auto") {
      if (world_.rank() == 0) log::info("resume=auto: no complete checkpoint under {}, starting fresh", checkpoint_dir());
      return 0;
    }
    throw core::Error("cannot resume from this checkpoint: " + reason).with_file(want).with_yaml("checkpoint.resume")
        .with_hint(hint);
  }
  const nlohmann::json m = io::read_manifest(chosen);
  const auto& lay = m.at("layout");
  const auto& mod = m.at("model");
  auto mismatch = [&](const std::string& what, const std::string& was, const std::string& now) {
    throw core::Error(fmt::format("checkpoint was written with {} = {}, this run has {}", what, was, now))
        .with_file(chosen + "/manifest.json")
        .with_hint("resume with the model sizes the checkpoint was written with (the parallel layout may differ)");
  };
  for (const char* k : {"n_layer", "n_head", "n_embd", "vocab_size", "seq_len"}) {
    const int now = k == std::string("n_layer") ? cfg_.model.n_layer : k == std::string("n_head") ? cfg_.model.n_head
                  : k == std::string("n_embd") ? cfg_.model.n_embd : k == std::string("vocab_size") ? cfg_.model.vocab_size
                  : cfg_.model.seq_len;
    if (mod.at(k).get<int>() != now) mismatch(std::string("model.") + k, mod.at(k).dump(), std::to_string(now));
  }
  if (world_.rank() == 0 && m.contains("config")) {
    // The learning rate is a function of (step, train.steps, optim.*): a resumed run with other
    // values follows another schedule from here on. Legal (extending a run is common), but say it.
    try {
      const core::Config was = core::parse_config(m.at("config").get<std::string>(), chosen + "/manifest.json");
      std::string changed;
      auto note = [&](const char* key, double a, double b) {
        if (a != b) changed += fmt::format("{}{} {} -> {}", changed.empty() ? "" : ", ", key, a, b);
      };
      note("train.steps", static_cast<double>(was.train.steps), static_cast<double>(cfg_.train.steps));
      note("optim.lr", was.optim.lr, cfg_.optim.lr);
      note("optim.warmup_steps", was.optim.warmup_steps, cfg_.optim.warmup_steps);
      note("optim.min_lr_ratio", was.optim.min_lr_ratio, cfg_.optim.min_lr_ratio);
      if (was.optim.schedule != cfg_.optim.schedule)
        changed += fmt::format("{}optim.schedule {} -> {}", changed.empty() ? "" : ", ", was.optim.schedule,
                               cfg_.optim.schedule);
      if (!changed.empty())
        log::warn("resuming with a different learning-rate schedule than the checkpointed run ({}): the lr "
                  "from step {} on follows the new values", changed, m.at("step").get<int64_t>());
    } catch (const std::exception& e) {
      log::warn("could not compare the checkpoint's config with this run's: {}", e.what());
    }
  }
  const std::string was_layout = fmt::format("world {} dp {} tp {} zero {}", lay.at("world").get<int>(),
                                             lay.at("dp").get<int>(), lay.at("tp").get<int>(), lay.at("zero").get<int>());
  const std::string now_layout = fmt::format("world {} dp {} tp {} zero {}", world_.size(), dp_, tp_, cfg_.parallel.zero);
  state_ = TrainState::from_json(m.at("trainer"));
  const int64_t step = m.at("step").get<int64_t>();
  {  // the data loader continues exactly where it was (the state is the same in every shard)
    const auto& own = m.at("shards").at(was_layout == now_layout ? world_.rank() : 0);
    const std::string ls = io::read_shard_loader_state(chosen + "/" + own.at("file").get<std::string>());
    if (!ls.empty()) loader_->restore(ls, step);
  }
  if (was_layout != now_layout) {
    load_resharded(chosen, m);
    if (world_.rank() == 0) log::info("resumed from {} (step {}) in {:.0f} ms, resharded from {} to {}", chosen, step, ms(), was_layout, now_layout);
    return step;
  }

  const auto& shard = m.at("shards").at(world_.rank());
  std::vector<float> params, mm, vv;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  io::read_shard(chosen + "/" + shard.at("file").get<std::string>(),
                 std::stoull(shard.at("checksum").get<std::string>(), nullptr, 16), params, mm, vv, ranges);
  const size_t nstate = static_cast<size_t>(optim_->num_elements());
  const std::string file = chosen + "/" + shard.at("file").get<std::string>();
  if (static_cast<int64_t>(params.size()) != model_->num_local_params()) {
    throw core::Error(fmt::format("the shard holds {} parameters, this rank's slice has {}", params.size(),
                                  model_->num_local_params()))
        .with_file(file).with_hint("the checkpoint was written by another model or meshtrain version");
  }
  if (ranges != sync_->owned_ranges()) {
    // same layout, but the optimizer state is cut differently (ZeRO-1 shards it by gradient
    // bucket: parallel.bucket_mb changed): rebuild this rank's share from every shard
    load_resharded(chosen, m);
    if (world_.rank() == 0) {
      log::info("resumed from {} (step {}) in {:.0f} ms; optimizer state resharded (its shards are cut differently: "
                "parallel.bucket_mb changed?)", chosen, step, ms());
    }
    return step;
  }
  if (mm.size() != nstate || vv.size() != (optim_->has_v() ? nstate : 0)) {
    throw core::Error(fmt::format("the shard's optimizer state ({} + {} values) does not fit optim.name = {} ({} x {} "
                                  "values)", mm.size(), vv.size(), cfg_.optim.name, optim_->has_v() ? 2 : 1, nstate))
        .with_file(file).with_yaml("optim.name").with_hint("resume with the optimizer the checkpoint was written with");
  }
  device_->copy(model_->params().raw(), params.data(), params.size() * sizeof(float));
  model_->refresh_working_params();
  optim_->load_state(mm, vv);
  if (world_.rank() == 0) log::info("resumed from {} (step {}) in {:.0f} ms (checksums verified)", chosen, step, ms());
  return step;
}

void Trainer::load_resharded(const std::string& dir, const nlohmann::json& m) {
  const auto& lay = m.at("layout");
  const int old_world = lay.at("world").get<int>(), old_dp = lay.at("dp").get<int>(), old_tp = lay.at("tp").get<int>();
  const parallel::Mesh old_mesh(old_world, old_dp, old_tp);
  const parallel::GptDims& nd = model_->dims();
  const auto& ninfo = model_->params_info();
  const int64_t ntotal = model_->num_local_params();
  const bool adam = optim_->has_v();
  std::vector<float> np(ntotal, 0.0f), nm(ntotal, 0.0f), nv(adam ? ntotal : 0, 0.0f);
  const auto shard_of = [&](int rank) {
    const auto& s = m.at("shards").at(rank);
    return std::make_pair(dir + "/" + s.at("file").get<std::string>(),
                          std::stoull(s.at("checksum").get<std::string>(), nullptr, 16));
  };
  for (int t = 0; t < old_tp; ++t) {
    const parallel::GptDims od = parallel::make_gpt_dims(cfg_.model, old_tp, t);
    int64_t ototal = 0;
    const auto oinfo = parallel::gpt_param_layout(cfg_.model, od, parallel::GradSync::flat_alignment(old_dp), &ototal);
    std::vector<float> op, om(ototal, 0.0f), ov(ototal, 0.0f), sm, sv;
    std::vector<std::pair<int64_t, int64_t>> ranges;
    // params from any replica; optimizer state from every replica under ZeRO-1, else from
    // any (each holds all of it: reading one is old_dp times less I/O at scale)
    const int read_dp = lay.at("zero").get<int>() > 0 ? old_dp : 1;
    for (int dpi = 0; dpi < read_dp; ++dpi) {
      auto [path, sum] = shard_of(old_mesh.rank_of(dpi, t));
      std::vector<float> p;
      io::read_shard(path, sum, p, sm, sv, ranges);
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
  device_->copy(model_->params().raw(), np.data(), np.size() * sizeof(float));
  model_->refresh_working_params();
  const int64_t nend = ninfo.back().offset + ninfo.back().numel;
  const int64_t nstate = optim_->num_elements();
  std::vector<float> sm(static_cast<size_t>(nstate), 0.0f), sv(adam ? sm.size() : 0, 0.0f);
  int64_t off = 0;
  for (const auto& [b, e0] : sync_->owned_ranges()) {
    const int64_t e = std::min(e0, nend);
    if (e <= b) continue;
    MT_CHECK(off + (e - b) <= nstate, "optimizer state layout mismatch");
    std::copy(nm.begin() + b, nm.begin() + e, sm.begin() + off);
    if (adam) std::copy(nv.begin() + b, nv.begin() + e, sv.begin() + off);
    off += e - b;
  }
  MT_CHECK(off == nstate, "optimizer state layout mismatch");
  optim_->load_state(sm, sv);
}

}  // namespace mt::launch
