// What: a trained model for inference (generate, eval): from a meshtrain checkpoint (its
// manifest's resolved config, parameters resharded to this job's tp) or from a Hugging Face
// directory (`hf:DIR`, io/hf/hf_import.h), on tp = the job's ranks (or parallel.tp), with no
// optimizer state and no data-parallel replicas beyond tp.
// Why: generate and eval start from either kind of source with the same few lines.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "kernels/ops.h"
#include "parallel/communicator.h"
#include "parallel/mpi_env.h"
#include "parallel/models/model.h"

namespace mt::launch {

struct InferenceModel {
  core::Config cfg;  // the checkpoint's resolved config (or defaults + config.json), overrides applied
  std::string source;  // what was loaded, for logs ("runs/x/checkpoints/step_00000100", "hf:DIR")
  std::string tokenizer_hint;  // a tokenizer the source names ("" = none): the HF dir's tokenizer.json,
                               // or the dataset's (data.path) tokenizer.json when it has one
  core::Device* device = nullptr;  // train.device's (not owned)
  std::unique_ptr<kernels::Ops> ops;
  // The tp group: the job's ranks (null at tp 1), and its communicator for device buffers
  // (null on the CPU, where tp_host carries them). Declared before the model, which uses them.
  std::unique_ptr<parallel::Communicator> tp_host, tp_device;
  std::shared_ptr<const parallel::Architecture> arch;
  std::unique_ptr<parallel::Model> model;

  int tp() const { return model->tp().size(); }
  // The communicator the model's tensor-parallel collectives use (null at tp 1).
  parallel::Communicator* tp_comm() const { return tp_device ? tp_device.get() : tp_host.get(); }
};

// A model source resolved: its config (a checkpoint's manifest config, or the defaults with
// config.json's model section for hf:DIR; overrides on top) and where its weights are.
struct ModelSource {
  core::Config cfg;
  std::string source;          // for logs: the checkpoint directory, or "hf:DIR"
  std::string path;            // the checkpoint directory, or DIR
  bool hf = false;
  std::string tokenizer_hint;  // as InferenceModel's
};
// Collective over `world` (the ranks verify a checkpoint's shards together). Throws naming the
// source when it is neither a complete checkpoint, a directory holding one, nor hf:DIR (a
// directory with config.json and model.safetensors, such as an `export` output, counts as
// hf:DIR without the prefix).
ModelSource resolve_model_source(const std::string& source, const std::vector<std::string>& overrides,
                                 parallel::Communicator& world);
// This rank's slice of every parameter of `model` (built from src.cfg.model, at any tp) from
// the source: resharded from the checkpoint's shards, or read from DIR's safetensors.
void load_source_weights(const ModelSource& src, parallel::Model& model);

// source: a checkpoint directory (step_N), a checkpoints/ directory or run directory (its
// newest valid checkpoint), or "hf:DIR". overrides: section.key=value (e.g. parallel.tp=2,
// data.path=...). Collective over `world`: every rank of the job holds one tp slice, so
// world.size() must equal parallel.tp (default: world.size()).
// Collective over `world`: builds im.model (parameters zero) from im.cfg on tp = world.size()
// ranks (parallel.tp/dp set accordingly), with its device, kernels and tp communicators.
void build_inference_model(InferenceModel& im, parallel::Communicator& world, const parallel::MpiEnv* env);

// True if one of `overrides` sets `key` ("parallel.tp=2" sets "parallel.tp").
bool overrides_set(const std::vector<std::string>& overrides, const std::string& key);

// env (may be null: one rank per node) places the ranks of a node on its GPUs as training does
// (train.device=cuda: GPU local_rank % GPUs per node).
InferenceModel load_inference_model(const std::string& source, const std::vector<std::string>& overrides,
                                    parallel::Communicator& world, const parallel::MpiEnv* env = nullptr);

}  // namespace mt::launch
