// What: CheckpointManager (see checkpoint_manager.h; the element-wise resharding is in
// reshard.cc).
#include "launch/train/checkpoint_manager.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "io/checkpoint.h"
#include "io/metrics.h"
#include "launch/agreed_error.h"
#include "launch/train/reshard.h"

namespace mt::launch {

namespace fs = std::filesystem;
namespace log = core::log;

namespace {
// The manifest's "model": the architecture, the config values that fix its shapes, and its
// parameter count (what `inspect` shows and a resume compares).
nlohmann::json model_manifest(const parallel::Architecture& arch) {
  nlohmann::json j{{"arch", arch.name()}, {"params", arch.num_params()}};
  for (const auto& [k, v] : arch.shape_keys()) j[k] = v;
  return j;
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
  return world.size() > 1 ? parallel::broadcast_string(world, bad, first) : bad;
}

// A failed checkpoint write as one line: the file, the message and the library's text; for a
// full disk (errno ENOSPC, or no space left where `dir` lives) "ENOSPC: no space left on
// device (DIR has X MiB free)" in its place.
std::string write_failure(const std::exception& e, const std::string& dir, int err) {
  const auto* me = dynamic_cast<const core::Error*>(&e);
  if (!me) return e.what();
  const auto& c = me->context();
  std::string lib = c.library;
  if (lib.find("ENOSPC") == std::string::npos) {
    if (const std::string note = io::disk_full_note(dir, err); !note.empty()) lib = note;
  }
  return (c.file.empty() ? "" : c.file + ": ") + me->message() + (lib.empty() ? "" : " [" + lib + "]");
}

// "world 4 dp 2 tp 2 zero 1 pp 1", "world 8 dp 2 tp 2 zero 1 pp 2 (layers 0-5 | 6-11)": a layout
// as the log lines name it (equal strings and equal pipelines: the same layout).
std::string layout_name(int world, int dp, int tp, int zero, const io::CheckpointPipeline& pipe) {
  return fmt::format("world {} dp {} tp {} zero {} {}", world, dp, tp, zero, pipe.describe());
}
}  // namespace

CheckpointManager::CheckpointManager(const core::Config& cfg, parallel::Communicator& world,
                                     const parallel::Mesh& mesh, core::Device& device, TrainModel& model,
                                     parallel::Optimizer& optim, parallel::DataParallelSync& sync, io::Loader& loader,
                                     Clock::time_point process_start, io::CheckpointPipeline pipeline)
    : cfg_(cfg), world_(world), mesh_(mesh), device_(device), model_(model), optim_(optim), sync_(sync),
      loader_(loader), process_start_(process_start), pipeline_(std::move(pipeline)) {
  const int n_layer = model_.arch().config().n_layer;
  MT_CHECK(mesh_.dp() * pipeline_.pp * mesh_.tp() == world_.size(), "world {} is not dp {} x pp {} x tp {}",
           world_.size(), mesh_.dp(), pipeline_.pp, mesh_.tp());
  const int stage = pipeline_.stage_of_rank(world_.rank(), mesh_.tp());
  MT_CHECK(io::same_stage(model_.stage(), pipeline_.stage(stage), n_layer),
           "rank {}'s model does not hold the layers of its pipeline stage {} of {}", world_.rank(), stage,
           pipeline_.describe());
}

std::string CheckpointManager::dir() const {
  return cfg_.checkpoint.dir.empty() ? cfg_.run.dir + "/checkpoints" : cfg_.checkpoint.dir;
}

void CheckpointManager::supersede_after(int64_t step) const {
  if (const auto [aside, moved] = io::supersede_checkpoints(dir(), step); !moved.empty()) {
    log::warn("{} checkpoint(s) under {} are newer than step {} where this run starts ({} ... {}): they belong to "
              "the run this one replaces and would shadow its checkpoints; moved to {} (delete it if not needed)",
              moved.size(), dir(), step, moved.back(), moved.front(), aside);
  }
}

void CheckpointManager::save(int64_t steps_done, const TrainState& state) {
  const auto t0 = Clock::now();
  const std::string dir = this->dir();
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
  err = parallel::broadcast_string(world_, err);
  if (!err.empty()) throw AgreedError(core::Error("cannot prepare the checkpoint directory: " + err));

  io::ShardData d;
  const bool on_host = device_.kind() == core::DeviceKind::CPU;
  std::vector<float> hp, hm, hv;  // host copies of device state
  if (!on_host) {
    hm = optim_.state_m_host();
    hv = optim_.state_v_host();
  }
  // the master parameters this rank stores: its tp slice, or (ZeRO-3) its owned ranges of it
  if (on_host && model_.owns_params()) {
    d.params = model_.params().f32();
    d.num_params = model_.num_local_params();
  } else {
    hp = sync_.master_host(model_);
    d.params = hp.data();
    d.num_params = static_cast<int64_t>(hp.size());
  }
  d.m = on_host ? optim_.state_m() : hm.data();
  d.v = !optim_.has_v() ? nullptr : on_host ? optim_.state_v() : hv.data();
  d.num_state = optim_.num_elements();
  d.ranges = sync_.owned_ranges();
  d.loader_state = loader_.state();
  // A failed write on any rank (a full disk) is agreed on: rank 0 removes the partial
  // step_N.tmp (it would fill the disk for the next try too) and every rank raises the first
  // failing rank's error, so the job ends cleanly with the previous checkpoints intact.
  int64_t sum = 0;
  try {
    sum = static_cast<int64_t>(io::write_shard(tmp_dir, world_.rank(), d));
  } catch (const std::exception& e) {
    err = write_failure(e, dir, errno);
  }
  fail_together(err, tmp_dir);
  std::vector<int64_t> sums(world_.size());
  world_.all_gather(&sum, sums.data(), 1, parallel::DType::I64);  // also: every shard is written
  if (world_.rank() == 0) try {
    nlohmann::json shards = nlohmann::json::array();
    for (int r = 0; r < world_.size(); ++r) {
      shards.push_back({{"rank", r}, {"file", io::shard_file_name(r)},
                        {"checksum", fmt::format("{:016x}", static_cast<uint64_t>(sums[r]))}});
    }
    nlohmann::json m{{"format_version", io::kCheckpointFormatVersion},
                     {"step", steps_done},
                     {"layout", {{"world", world_.size()}, {"dp", mesh_.dp()}, {"tp", mesh_.tp()},
                                 {"zero", cfg_.parallel.zero}}},
                     {"pipeline", pipeline_.to_json()},
                     {"model", model_manifest(model_.arch())},
                     {"trainer", state.to_json(std::chrono::duration<double>(Clock::now() - process_start_).count())},
                     {"config", core::config_to_yaml(cfg_)},
                     {"shards", shards}};
    io::finalize_checkpoint(tmp_dir, final_dir, m);
    io::prune_checkpoints(dir, cfg_.checkpoint.keep);
    log::info("checkpoint {} written in {:.0f} ms", final_dir, ms_between(t0, Clock::now()));
  } catch (const std::exception& e) {
    err = write_failure(e, dir, errno);
  }
  fail_together(err, tmp_dir, /*root_only=*/true);  // (also the barrier: every rank waits for the publish)
}

void CheckpointManager::fail_together(const std::string& err, const std::string& tmp_dir, bool root_only) const {
  std::string first = err;
  if (root_only) {
    first = parallel::broadcast_string(world_, err);
  } else {  // the lowest failing rank's message (a max of negated ranks: the min)
    int32_t neg_first = -(err.empty() ? world_.size() : world_.rank());
    if (world_.size() > 1) world_.all_reduce(&neg_first, 1, parallel::DType::I32, parallel::ReduceOp::Max);
    const int r = -neg_first;
    if (r == world_.size()) return;
    first = world_.size() > 1 ? parallel::broadcast_string(world_, err, r) : err;
    if (r != 0) first = fmt::format("rank {}: {}", r, first);
  }
  if (first.empty()) return;
  if (world_.rank() == 0) {
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);  // the partial checkpoint
  }
  throw AgreedError(core::Error("checkpoint not written: " + first)
                        .with_hint(fmt::format("the previous checkpoints under {} are intact and {} was removed; "
                                               "free space (or set checkpoint.dir elsewhere) and resume=auto",
                                               dir(), fs::path(tmp_dir).filename().string())));
}

int64_t CheckpointManager::restore(TrainState* state) {
  const auto t0 = Clock::now();
  const auto ms = [&] { return ms_between(t0, Clock::now()); };
  const std::string chosen = choose();
  if (chosen.empty()) return 0;
  restored_ = true;
  const nlohmann::json m = io::read_manifest(chosen);
  check_model(chosen, m);
  if (world_.rank() == 0 && m.contains("config")) warn_schedule_change(chosen, m);
  const auto& lay = m.at("layout");
  const int n_layer = model_.arch().config().n_layer;
  const io::CheckpointPipeline was_pipe = io::CheckpointPipeline::from_manifest(m, n_layer, chosen + "/manifest.json");
  const std::string was_layout = layout_name(lay.at("world").get<int>(), lay.at("dp").get<int>(),
                                             lay.at("tp").get<int>(), lay.at("zero").get<int>(), was_pipe);
  const std::string now_layout = layout_name(world_.size(), mesh_.dp(), mesh_.tp(), cfg_.parallel.zero, pipeline_);
  const bool same_layout = was_layout == now_layout && was_pipe == pipeline_;
  *state = TrainState::from_json(m.at("trainer"));
  const int64_t step = m.at("step").get<int64_t>();
  {  // the data loader continues exactly where it was (the state is the same in every shard)
    const auto& own = m.at("shards").at(same_layout ? world_.rank() : 0);
    const std::string ls = io::read_shard_loader_state(chosen + "/" + own.at("file").get<std::string>());
    if (!ls.empty()) loader_.restore(ls, step);
  }
  if (!same_layout) {
    load_resharded(chosen, m);
    if (world_.rank() == 0) log::info("resumed from {} (step {}) in {:.0f} ms, resharded from {} to {}", chosen, step, ms(), was_layout, now_layout);
    return step;
  }
  if (!load_own_shard(chosen, m)) {
    // same layout, but the optimizer state is cut differently (ZeRO-1 shards it by gradient
    // bucket: parallel.bucket_mb changed): rebuild this rank's share from every shard
    load_resharded(chosen, m);
    if (world_.rank() == 0) {
      log::info("resumed from {} (step {}) in {:.0f} ms; optimizer state resharded (its shards are cut differently: "
                "parallel.bucket_mb changed?)", chosen, step, ms());
    }
    return step;
  }
  if (world_.rank() == 0) log::info("resumed from {} (step {}) in {:.0f} ms (checksums verified)", chosen, step, ms());
  return step;
}

std::string CheckpointManager::choose() const {
  const std::string& want = cfg_.checkpoint.resume;
  std::string chosen, reason, hint = "resume=auto picks the newest valid checkpoint under <run.dir>/checkpoints";
  std::string candidates;  // rank 0's list, newest first, one per line
  if (world_.rank() == 0) {
    if (want == "auto") {
      // newest first, up to one written by a newer meshtrain: falling back past it would
      // retrain its steps and move it aside (the error below names it instead)
      for (const auto& c : io::list_checkpoints(dir())) {
        if (const int v = io::checkpoint_format_version(c); v > io::kCheckpointFormatVersion) {
          reason = fmt::format("{} has checkpoint format version {}, newer than this build reads ({})", c, v,
                               io::kCheckpointFormatVersion);
          hint = "resume it with the newer meshtrain that wrote it; nothing was changed";
          break;
        }
        candidates += c + "\n";
      }
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
  candidates = parallel::broadcast_string(world_, candidates);
  reason = parallel::broadcast_string(world_, reason);
  hint = parallel::broadcast_string(world_, hint);
  std::string skipped;  // resume=auto: each unusable checkpoint and why, one per line
  for (size_t at = 0, nl; (nl = candidates.find('\n', at)) != std::string::npos; at = nl + 1) {
    const std::string c = candidates.substr(at, nl - at);
    const std::string bad = verify_collectively(world_, c);
    if (bad.empty()) {
      chosen = c;
      break;
    }
    if (want != "auto") reason = bad;
    else {
      skipped += fmt::format("\n    {}: {}", c, bad);
      if (world_.rank() == 0) log::warn("skipping checkpoint {}: {}", c, bad);
    }
  }
  if (!chosen.empty()) return chosen;
  if (want == "auto") {
    // a newer format, or checkpoints of which none is usable: starting fresh would retrain from
    // step 0 and move them aside; an error leaves them (and the run) as they are
    if (!reason.empty()) {
      throw core::Error("resume=auto: " + reason + (skipped.empty() ? "" : "; the newer ones are unusable:" + skipped))
          .with_yaml("checkpoint.resume").with_hint(hint);
    }
    if (!skipped.empty()) {
      throw core::Error(fmt::format("resume=auto: none of the checkpoints under {} is usable:{}", dir(), skipped))
          .with_yaml("checkpoint.resume")
          .with_hint(fmt::format("nothing was changed; move them away (e.g. mv {0} {0}.bad) or resume=PATH an older "
                                 "copy, or start over with resume=none (which moves them to superseded_<time>/)",
                                 dir()));
    }
    if (world_.rank() == 0) log::info("resume=auto: no complete checkpoint under {}, starting fresh", dir());
    return "";
  }
  throw core::Error("cannot resume from this checkpoint: " + reason).with_file(want).with_yaml("checkpoint.resume")
      .with_hint(hint);
}

void CheckpointManager::check_model(const std::string& chosen, const nlohmann::json& m) const {
  const auto& mod = m.at("model");
  auto mismatch = [&](const std::string& what, const std::string& was, const std::string& now) {
    throw core::Error(fmt::format("checkpoint was written with {} = {}, this run has {}", what, was, now))
        .with_file(chosen + "/manifest.json")
        .with_hint("resume with the model sizes the checkpoint was written with (the parallel layout may differ)");
  };
  // (checkpoints from before model.arch existed hold the default architecture)
  const parallel::Architecture& arch = model_.arch();
  const std::string was_arch = mod.value("arch", std::string(parallel::kDefaultArch));
  if (was_arch != arch.name()) mismatch("model.arch", was_arch, arch.name());
  for (const auto& [k, now] : arch.shape_keys()) {
    if (!mod.contains(k)) mismatch("model." + k, "(not recorded)", std::to_string(now));
    if (mod.at(k).get<int64_t>() != now) mismatch("model." + k, mod.at(k).dump(), std::to_string(now));
  }
}

void CheckpointManager::warn_schedule_change(const std::string& chosen, const nlohmann::json& m) const {
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

bool CheckpointManager::load_own_shard(const std::string& chosen, const nlohmann::json& m) {
  const auto& shard = m.at("shards").at(world_.rank());
  std::vector<float> params, mm, vv;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  io::read_shard(chosen + "/" + shard.at("file").get<std::string>(),
                 std::stoull(shard.at("checksum").get<std::string>(), nullptr, 16), params, mm, vv, ranges);
  const size_t nstate = static_cast<size_t>(optim_.num_elements());
  const std::string file = chosen + "/" + shard.at("file").get<std::string>();
  if (ranges != sync_.owned_ranges()) return false;
  int64_t stored = model_.num_local_params();  // ZeRO-3: the owned ranges' elements
  if (!model_.owns_params()) {
    stored = 0;
    for (const auto& [b, e] : ranges) stored += e - b;
  }
  if (static_cast<int64_t>(params.size()) != stored) {
    throw core::Error(fmt::format("the shard holds {} parameters, this rank stores {}", params.size(), stored))
        .with_file(file).with_hint("the checkpoint was written by another model or meshtrain version");
  }
  if (mm.size() != nstate || vv.size() != (optim_.has_v() ? nstate : 0)) {
    throw core::Error(fmt::format("the shard's optimizer state ({} + {} values) does not fit optim.name = {} ({} x {} "
                                  "values)", mm.size(), vv.size(), cfg_.optim.name, optim_.has_v() ? 2 : 1, nstate))
        .with_file(file).with_yaml("optim.name").with_hint("resume with the optimizer the checkpoint was written with");
  }
  sync_.load_master_stored(model_, params);
  optim_.load_state(mm, vv);
  return true;
}

void CheckpointManager::load_resharded(const std::string& chosen, const nlohmann::json& m) {
  const CheckpointLayout old = CheckpointLayout::from_manifest(chosen, m, model_.arch().config().n_layer);
  const ReshardedState s = reshard_state(old, model_, sync_.owned_ranges(), optim_.num_elements(), optim_.has_v());
  model_.load_master(s.params.data());
  optim_.load_state(s.m, s.v);
}

}  // namespace mt::launch
