// What: reading a Hugging Face model directory (config.json and model.safetensors, or
// model.safetensors.index.json with several shards) into meshtrain: the ModelConfig its
// config.json describes (GPT2LMHeadModel -> model.arch gpt2, LlamaForCausalLM -> llama), and
// this rank's slices of every parameter, read through the Partition of each parameter from
// memory-mapped safetensors (a rank never holds more than its own slices).
// Why: `model.init_from: hf:DIR`, `meshtrain generate hf:DIR` and `meshtrain eval hf:DIR` all
// start from a Hugging Face checkpoint at any tp size without a conversion step.
#pragma once

#include <string>

#include "core/config.h"
#include "parallel/models/model.h"

namespace mt::io::hf {

// The model config.json in `dir` describes (arch, sizes; seq_len from max_position_embeddings
// / n_positions). Throws Error naming the file and the key for a missing or malformed file,
// an unsupported model_type, or an unsupported feature (rope_scaling, attention biases, ...).
core::ModelConfig read_model_config(const std::string& dir);

// Throws Error naming both values when a key set in `cfg` (the run's model section) disagrees
// with what config.json says; keys the user did not set are taken from `hf`.
void check_model_config(const core::ModelConfig& hf, const core::ModelConfig& cfg, const std::string& dir);

// Loads this rank's slice of every parameter of `model` (built from read_model_config(dir) at
// any tp) from dir's safetensors; vocabulary padding rows are zero. Refreshes the working copy.
void load_weights(const std::string& dir, parallel::Model& model);

}  // namespace mt::io::hf
