// What: reading a Hugging Face model directory (config.json and model.safetensors, or
// model.safetensors.index.json with several shards) into meshtrain: the ModelConfig its
// config.json describes (GPT2LMHeadModel -> model.arch gpt2, LlamaForCausalLM -> llama), and
// this rank's slices of every parameter, read through the Partition of each parameter from
// memory-mapped safetensors (a rank never holds more than its own slices).
// Why: `model.init_from: hf:DIR`, `meshtrain generate hf:DIR` and `meshtrain eval hf:DIR` all
// start from a Hugging Face checkpoint at any tp size without a conversion step.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "core/config.h"
#include "io/hf/safetensors.h"
#include "parallel/models/model.h"

namespace mt::io::hf {

// config.json's quantization_config.quant_method of meshtrain's int8 export (hf_export.h).
inline constexpr const char* kInt8QuantMethod = "meshtrain_int8";

// The model config.json in `dir` describes (arch, sizes; seq_len from max_position_embeddings
// / n_positions). Throws Error naming the file and the key for a missing or malformed file,
// an unsupported model_type, or an unsupported feature (rope_scaling, attention biases, ...).
core::ModelConfig read_model_config(const std::string& dir);

// Throws Error naming both values when a key set in `cfg` (the run's model section) disagrees
// with what config.json says; keys the user did not set are taken from `hf`. Which keys were
// set: `set_keys` ("model.n_layer", ...: core::Config::set_keys) when given, else those whose
// value differs from the ModelConfig default. Compared: arch, n_layer, n_head, n_embd,
// vocab_size, seq_len (Llama: a shorter context than max_position_embeddings is allowed) and
// for Llama n_kv_head, ffn_dim (as effective values), rope_theta, norm_eps, tie_embeddings.
void check_model_config(const core::ModelConfig& hf, const core::ModelConfig& cfg, const std::string& dir,
                        const std::set<std::string>* set_keys = nullptr);

// "hf:DIR" -> DIR (throws naming model.init_from for anything else).
std::string hf_dir(const std::string& init_from);
// The model section of a run with model.init_from = hf:DIR: config.json's model, checked
// against the keys the run set (check_model_config with cfg.set_keys), keeping init_from,
// init_std and (Llama) a shorter seq_len the run asked for.
core::ModelConfig resolve_model_config(const core::Config& cfg);

// Checks that the files hold every tensor of `arch` with the shape config.json implies (an
// Error names a missing tensor or a wrong shape, and the file), and a tied head, if present,
// equal to the embedding; returns the names that are neither ours nor known buffers (load_weights
// warns about them).
std::vector<std::string> check_tensors(const SafetensorsModel& st, const parallel::Architecture& arch);

// Fills `flat` (host memory in the model's flat layout, num_local_params() floats) with this
// rank's slices of the tensors of `st` named as Hugging Face names them (hf_names.h), of the
// parameters its pipeline stage holds (Model::stage(); a tied head's copy from the embedding),
// vocabulary padding rows zero: exactly the elements it holds are read. load_weights uses it;
// tests read gradient files with it. The files are not checked (check_tensors).
void read_slices(const SafetensorsModel& st, const parallel::Model& model, float* flat);

// Loads this rank's slice of every parameter of `model` (built from read_model_config(dir) at
// any tp) from dir's safetensors; vocabulary padding rows are zero. Refreshes the working copy.
void load_weights(const std::string& dir, parallel::Model& model);

}  // namespace mt::io::hf
