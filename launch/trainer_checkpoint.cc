// What: Trainer::save_checkpoint and Trainer::restore_checkpoint (see io/checkpoint.h for the
// on-disk protocol). Every rank writes its own shard; rank 0 gathers the checksums, writes the
// manifest and publishes the checkpoint by rename; resume picks the newest checkpoint whose
// shards all verify and falls back to older ones, naming what was wrong with each.
// Resume requires the layout it was written with (world, dp, tp, zero) for now: loading
// under another layout (resharding) is not implemented yet and is refused with a clear error.
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "io/checkpoint.h"
#include "launch/trainer.h"

namespace mt::launch {

namespace fs = std::filesystem;
namespace log = core::log;

std::string Trainer::checkpoint_dir() const {
  return cfg_.checkpoint.dir.empty() ? cfg_.run.dir + "/checkpoints" : cfg_.checkpoint.dir;
}

namespace {
// Rank 0's string to every rank (length, then bytes).
std::string broadcast_string(parallel::Communicator& c, std::string s) {
  int64_t n = static_cast<int64_t>(s.size());
  c.broadcast(&n, 1, parallel::DType::I64, 0);
  s.resize(static_cast<size_t>(n));
  std::vector<int32_t> buf((n + 3) / 4, 0);
  std::memcpy(buf.data(), s.data(), s.size());
  c.broadcast(buf.data(), buf.size(), parallel::DType::I32, 0);
  std::memcpy(s.data(), buf.data(), s.size());
  return s;
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
  d.params = model_->params().f32();
  d.num_params = model_->num_local_params();
  d.m = optim_->state_m().data();
  d.v = optim_->state_v().empty() ? nullptr : optim_->state_v().data();
  d.num_state = static_cast<int64_t>(optim_->state_m().size());
  d.ranges = sync_->owned_ranges();
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
                     {"trainer", {{"best_eval", best_eval_}, {"evals_without_gain", evals_without_gain_}}},
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
  const std::string& want = cfg_.checkpoint.resume;
  std::string chosen, reason;
  if (world_.rank() == 0) {
    if (want == "auto") {
      for (const auto& c : io::list_checkpoints(checkpoint_dir())) {
        const std::string bad = io::verify_checkpoint(c);
        if (bad.empty()) {
          chosen = c;
          break;
        }
        log::warn("skipping checkpoint {}: {}", c, bad);
      }
    } else {
      reason = io::verify_checkpoint(want);
      if (reason.empty()) chosen = want;
    }
  }
  chosen = broadcast_string(world_, chosen);
  reason = broadcast_string(world_, reason);
  if (chosen.empty()) {
    if (want == "auto") {
      if (world_.rank() == 0) log::info("resume=auto: no complete checkpoint under {}, starting fresh", checkpoint_dir());
      return 0;
    }
    throw core::Error("cannot resume from this checkpoint: " + reason).with_file(want)
        .with_hint("resume=auto picks the newest valid checkpoint under <run.dir>/checkpoints");
  }
  const nlohmann::json m = io::read_manifest(chosen);
  const auto& lay = m.at("layout");
  const auto& mod = m.at("model");
  auto mismatch = [&](const std::string& what, const std::string& was, const std::string& now) {
    throw core::Error(fmt::format("checkpoint was written with {} = {}, this run has {}", what, was, now))
        .with_file(chosen + "/manifest.json")
        .with_hint("resume with the same model and parallel layout (loading under another layout is not supported yet)");
  };
  for (const char* k : {"n_layer", "n_head", "n_embd", "vocab_size", "seq_len"}) {
    const int now = k == std::string("n_layer") ? cfg_.model.n_layer : k == std::string("n_head") ? cfg_.model.n_head
                  : k == std::string("n_embd") ? cfg_.model.n_embd : k == std::string("vocab_size") ? cfg_.model.vocab_size
                  : cfg_.model.seq_len;
    if (mod.at(k).get<int>() != now) mismatch(std::string("model.") + k, mod.at(k).dump(), std::to_string(now));
  }
  const std::string was_layout = fmt::format("world {} dp {} tp {} zero {}", lay.at("world").get<int>(),
                                             lay.at("dp").get<int>(), lay.at("tp").get<int>(), lay.at("zero").get<int>());
  const std::string now_layout = fmt::format("world {} dp {} tp {} zero {}", world_.size(), dp_, tp_, cfg_.parallel.zero);
  if (was_layout != now_layout) mismatch("layout", was_layout, now_layout);

  const auto& shard = m.at("shards").at(world_.rank());
  std::vector<float> params, mm, vv;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  io::read_shard(chosen + "/" + shard.at("file").get<std::string>(),
                 std::stoull(shard.at("checksum").get<std::string>(), nullptr, 16), params, mm, vv, ranges);
  MT_CHECK(static_cast<int64_t>(params.size()) == model_->num_local_params() && ranges == sync_->owned_ranges() &&
               mm.size() == optim_->state_m().size() && vv.size() == optim_->state_v().size(),
           "checkpoint shard {} does not match this rank's parameter or optimizer layout", shard.at("file").dump());
  std::memcpy(model_->params().f32(), params.data(), params.size() * sizeof(float));
  optim_->state_m() = std::move(mm);
  optim_->state_v() = std::move(vv);
  best_eval_ = m.at("trainer").at("best_eval").get<double>();
  evals_without_gain_ = m.at("trainer").at("evals_without_gain").get<int>();
  const int64_t step = m.at("step").get<int64_t>();
  if (world_.rank() == 0) log::info("resumed from {} (step {})", chosen, step);
  return step;
}

}  // namespace mt::launch
