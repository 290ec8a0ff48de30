// What: text generation with a key/value cache.
//   generate_tokens   the loop on a built Model (any architecture with decoding, any tp):
//                     prefill the prompt, then one position per token, sampling each next
//                     token (sampler.h) until max_new_tokens, the end-of-text token or
//                     model.seq_len; calls back with each token as it is chosen.
//   Utf8Streamer      turns the growing decoded text into printable pieces: byte-level BPE
//                     tokens may end inside a UTF-8 character, whose bytes are held back until
//                     it is complete.
//   cmd_generate      `meshtrain generate SOURCE --prompt ...`: loads the model (a meshtrain
//                     checkpoint or run directory, or hf:DIR; launch/infer/load_model.h) at tp
//                     = the job's ranks, picks the tokenizer, streams text to stdout (rank 0)
//                     and a summary to stderr.
//   cmd_bench_generate `meshtrain bench generate CONFIG`: KV-cached decoding against
//                     recomputing the whole prefix for each token (bench_generate.cc).
// Why: issue #15's generation. Every tp rank runs the same loop on the same gathered logits
// and draws the same token from the counter-based RNG, so no rank waits for another's choice.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "launch/infer/sampler.h"
#include "parallel/communicator.h"
#include "parallel/models/model.h"
#include "parallel/mpi_env.h"

namespace mt::launch {

struct GenerationResult {
  std::vector<int32_t> tokens;  // the new tokens (the end-of-text token, if met, excluded)
  std::string stop;             // "max-new-tokens", "eos" or "model.seq_len"
  double prefill_s = 0;         // the prompt's decode call (to its logits on the host)
  double decode_s = 0;          // every later decode call
  int decode_steps = 0;         // decode calls after the prompt's (one position each)
  size_t kv_cache_bytes = 0;    // this rank's cache
};

// prompt: token ids (1 <= size < model.seq_len). The cache holds min(prompt + max_new_tokens,
// model.seq_len) positions; the sequence never grows past model.seq_len. on_token (may be
// empty) sees each new token as soon as it is chosen. Collective over the model's tp group.
GenerationResult generate_tokens(parallel::Model& model, const std::vector<int32_t>& prompt, int max_new_tokens,
                                 const SamplingOptions& sampling, std::optional<int32_t> eos,
                                 const std::function<void(int32_t)>& on_token = {});

// Feed the whole decoded text so far (it only grows); returns the bytes not printed yet up
// to the last complete UTF-8 character (bytes that cannot start or continue a character are
// passed through). finish() returns whatever is held back.
class Utf8Streamer {
 public:
  std::string feed(const std::string& decoded);
  std::string finish();

 private:
  std::string pending_;
  size_t consumed_ = 0;  // bytes of the decoded text already taken into pending_ or printed
};

// The tokenizer spec for a model of vocab_size ids: the flag if given, else the source's
// hint, else "byte" when the vocabulary fits in 256 ids; otherwise an error saying to pass
// --tokenizer.
std::string choose_tokenizer(const std::string& flag, const std::string& hint, int vocab_size);

struct GenerateArgs {
  std::string source;  // checkpoint, checkpoints/ or run directory, or hf:DIR
  std::vector<std::string> overrides;
  std::string prompt;
  std::string tokenizer;  // "" = the source's, or byte
  int max_new_tokens = 64;
  SamplingOptions sampling;
};
int cmd_generate(const GenerateArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env);

struct BenchGenerateArgs {
  std::string config;  // a YAML config (random init), or a SOURCE as generate takes
  std::vector<std::string> overrides;
  int prompt_len = 32;
  int new_tokens = 256;
  int batch = 1;
  std::string json_out;
};
int cmd_bench_generate(const BenchGenerateArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env);

}  // namespace mt::launch
