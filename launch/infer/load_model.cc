// What: load_inference_model (see load_model.h). A checkpoint source: the checkpoint (a step
// directory, or the newest valid one under a checkpoints/ or run directory) is verified by the
// ranks together, its manifest's resolved config is the run's (key=value overrides on top),
// and each rank cuts its tp slice of the parameters out of the old shards, whatever layout
// wrote them (launch/train/reshard.h, with no optimizer state). An `hf:DIR` source: the model
// section comes from DIR/config.json, every other key from the defaults and overrides, and
// each rank reads its slices from DIR's safetensors (io/hf/hf_import.h).
// Why: inference runs on the tp group alone (no dp replicas, no optimizer), at any tp the
// model allows, from what training or Hugging Face left behind.
#include "launch/infer/load_model.h"

#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "io/checkpoint.h"
#include "io/hf/hf_import.h"
#include "launch/train/reshard.h"
#include "launch/train/train_util.h"
#include "parallel/models/registry.h"

namespace mt::launch {

namespace fs = std::filesystem;

namespace {

// The checkpoint `source` names: itself if it holds a manifest, else the newest complete one
// under it or under its checkpoints/ (a run directory). "" with *why set if none.
std::string find_checkpoint(const std::string& source, std::string* why) {
  std::error_code ec;
  if (!fs::exists(source, ec)) {
    *why = "it does not exist";
    return "";
  }
  if (fs::exists(fs::path(source) / "manifest.json", ec)) {
    if (!fs::exists(fs::path(source) / "COMPLETE", ec)) {
      *why = "it is an incomplete checkpoint (no COMPLETE marker: its write did not finish)";
      return "";
    }
    return source;
  }
  auto found = io::list_checkpoints(source);
  if (found.empty()) found = io::list_checkpoints(source + "/checkpoints");
  if (found.empty()) {
    *why = "it is neither a checkpoint nor a directory holding complete checkpoints (step_<N>/)";
    return "";
  }
  return found.front();
}

// Every rank's verdict on the checkpoint's shards (rank r checks r, r + world, ...): "" when
// all are good on every rank.
std::string verify_together(parallel::Communicator& world, const std::string& dir) {
  const std::string bad = io::verify_checkpoint(dir, world.rank(), world.size());
  int32_t any = bad.empty() ? 0 : 1;
  if (world.size() > 1) world.all_reduce(&any, 1, parallel::DType::I32, parallel::ReduceOp::Max);
  if (any == 0) return "";
  return bad.empty() ? "another rank found a shard that does not verify (see its message)" : bad;
}

}  // namespace

bool overrides_set(const std::vector<std::string>& overrides, const std::string& key) {
  for (const auto& o : overrides)
    if (o.rfind(key + "=", 0) == 0) return true;
  return false;
}

void build_inference_model(InferenceModel& im, parallel::Communicator& world, const parallel::MpiEnv* env) {
  const int tp = world.size();
  im.cfg.parallel.tp = tp;
  im.cfg.parallel.dp = 1;
  im.arch = parallel::make_architecture(im.cfg.model);
  if (const std::string bad = im.arch->tp_violation(tp); !bad.empty())
    throw core::Error(bad).with_yaml("parallel.tp").with_hint("run as many ranks as a valid tp size: " +
                                                               im.arch->tp_constraint());
  im.device = &core::select_device(im.cfg.train.device, env ? env->local_rank() : 0, env ? env->local_size() : 1);
  kernels::OpsOptions opt;
  opt.working = working_dtype(im.cfg, *im.device);
  opt.attention = im.cfg.train.attention;
  im.ops = kernels::make_ops(*im.device, opt);
  if (tp > 1) {
    im.tp_host = world.split(0, world.rank());
    im.tp_device = parallel::make_device_communicator(*im.tp_host, *im.device, im.cfg.parallel.backend);
  }
  parallel::ModelContext ctx;
  ctx.tp = tp;
  ctx.tp_rank = world.rank();
  ctx.tp_comm = im.tp_comm();
  ctx.ops = im.ops.get();
  im.model = im.arch->build(ctx);
}

ModelSource resolve_model_source(const std::string& source, const std::vector<std::string>& overrides,
                                 parallel::Communicator& world) {
  ModelSource src;
  src.source = source;
  src.hf = source.rfind("hf:", 0) == 0;
  // a model directory (config.json + safetensors, e.g. an `export` output) also without hf:
  std::error_code ec;
  const fs::path p(source);
  const bool model_dir = !src.hf && fs::is_regular_file(p / "config.json", ec) && !fs::exists(p / "manifest.json", ec) &&
                         (fs::exists(p / "model.safetensors", ec) || fs::exists(p / "model.safetensors.index.json", ec));
  if (src.hf || model_dir) {
    src.hf = true;
    src.path = model_dir ? source : source.substr(3);
    if (model_dir) src.source = "hf:" + source;
    const std::string& dir = src.path;
    src.cfg = core::parse_config("{}", "defaults", overrides);
    const core::ModelConfig from_hf = io::hf::read_model_config(dir);
    io::hf::check_model_config(from_hf, src.cfg.model, dir);
    src.cfg.model = from_hf;
    if (fs::exists(fs::path(dir) / "tokenizer.json")) src.tokenizer_hint = (fs::path(dir) / "tokenizer.json").string();
    return src;
  }
  std::string why;
  const std::string ckpt = find_checkpoint(source, &why);
  if (ckpt.empty()) {
    throw core::Error(fmt::format("cannot load a model from {}: {}", source, why))
        .with_file(source)
        .with_hint("pass a checkpoint (run/checkpoints/step_<N>), a run directory (its newest checkpoint), "
                   "or hf:DIR for a Hugging Face model directory");
  }
  if (const std::string bad = verify_together(world, ckpt); !bad.empty())
    throw core::Error("the checkpoint does not verify: " + bad).with_file(ckpt);
  const nlohmann::json manifest = io::read_manifest(ckpt);
  if (!manifest.contains("config"))
    throw core::Error("the checkpoint's manifest records no config (written by an older meshtrain)")
        .with_file(ckpt + "/manifest.json");
  src.cfg = core::parse_config(manifest.at("config").get<std::string>(), ckpt + "/manifest.json", overrides);
  src.source = src.path = ckpt;
  const std::string tok = (fs::path(src.cfg.data.path) / "tokenizer.json").string();
  if (!src.cfg.data.path.empty() && fs::exists(tok, ec)) src.tokenizer_hint = tok;
  return src;
}

void load_source_weights(const ModelSource& src, parallel::Model& model) {
  if (src.hf) {
    io::hf::load_weights(src.path, model);
    return;
  }
  const nlohmann::json manifest = io::read_manifest(src.path);
  const auto& mod = manifest.at("model");
  if (mod.value("arch", std::string(parallel::kDefaultArch)) != model.arch().name())
    throw core::Error("the manifest's model.arch disagrees with its config").with_file(src.path + "/manifest.json");
  const ReshardedState s = reshard_state(CheckpointLayout::from_manifest(src.path, manifest), model, {}, 0, false);
  model.load_master(s.params.data());
}

InferenceModel load_inference_model(const std::string& source, const std::vector<std::string>& overrides,
                                    parallel::Communicator& world, const parallel::MpiEnv* env) {
  InferenceModel im;
  const ModelSource src = resolve_model_source(source, overrides, world);
  im.cfg = src.cfg;
  im.source = src.source;
  im.tokenizer_hint = src.tokenizer_hint;

  // inference runs on the tp group alone: every rank of the job is one tp slice
  const int tp = overrides_set(overrides, "parallel.tp") ? im.cfg.parallel.tp : world.size();
  if (tp != world.size()) {
    throw core::Error(fmt::format("parallel.tp = {} but the job has {} ranks", tp, world.size()))
        .with_yaml("parallel.tp")
        .with_hint("inference runs each rank as one tensor-parallel slice: launch as many ranks as parallel.tp "
                   "(or leave parallel.tp unset)");
  }
  build_inference_model(im, world, env);
  load_source_weights(src, *im.model);
  if (world.rank() == 0)
    core::log::info("loaded {} at tp {}: {}", im.source, tp, im.arch->describe(tp));
  return im;
}

}  // namespace mt::launch
