// What: `meshtrain export CHECKPOINT --format hf --out DIR`: a meshtrain checkpoint of any
// layout (dp x pp x tp, ZeRO or not) written as a Hugging Face model directory: config.json
// (GPT2LMHeadModel or LlamaForCausalLM), generation_config.json, and model.safetensors, or
// model-0000x-of-0000n.safetensors shards + model.safetensors.index.json past
// max_shard_bytes. Streaming: for each parameter, the slices of the old tp ranks of the first
// pipeline stage holding it (a tied embedding: the first stage's copy) are read from one dp
// replica's shards with an HDF5 hyperslab of that parameter's range of the stage's flat
// buffer, assembled into the full tensor (vocabulary padding dropped), cut into its HF
// tensors and written: memory stays at about two full tensors whatever the model size.
// Why: the "no conversion step" in the other direction; written into DIR.tmp-<pid>
// and renamed when complete, so a failure never leaves a half-written DIR.
// quantize = "int8" (`export --quantize int8`): post-training weight quantization. Every 2-D
// weight (the embeddings and every linear layer's matrix) is stored as an I8 tensor under its
// HF name with symmetric per-output-channel scales (scale = max|row| / 127, q = round(w /
// scale)) in NAME.scale, F32, shaped to broadcast along the output channel ([out, 1], or
// [1, out] for GPT-2's (in, out) Conv1D layout); biases and norm weights stay F32.
// config.json gets a quantization_config {"quant_method": "meshtrain_int8", ...}: meshtrain
// (eval, generate, init_from hf:DIR) reads it dequantized to fp32; transformers does not.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mt::io::hf {

struct ExportOptions {
  std::string checkpoint;  // a step_<N> directory, a checkpoints/ directory or a run directory
  std::string out;         // the model directory to write
  int64_t max_shard_bytes = 5'000'000'000;  // "5GB", Hugging Face's default
  std::string dtype = "float32";            // float32 | bfloat16
  std::string quantize;                     // "" | "int8" (needs dtype float32)
  bool force = false;                       // replace a non-empty `out`
};

struct ExportResult {
  std::string checkpoint;          // the checkpoint exported (newest valid one under a run dir)
  std::vector<std::string> files;  // written into out, relative
  int64_t tensors = 0, bytes = 0;  // tensors and their data bytes
  int64_t fp32_bytes = 0;          // what the same tensors take in float32 (the int8 size reduction)
};

// The checkpoint `path` names: itself if it holds manifest.json, else the newest complete
// checkpoint under it (or under its checkpoints/) whose shards verify. Throws if none.
std::string resolve_checkpoint(const std::string& path);

ExportResult export_hf(const ExportOptions& opt);

}  // namespace mt::io::hf
