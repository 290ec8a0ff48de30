// What: generate_tokens, Utf8Streamer, choose_tokenizer and cmd_generate (see generate.h).
#include "launch/infer/generate.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "io/text/tokenizer.h"
#include "launch/infer/load_model.h"
#include "launch/launch_env.h"
#include "launch/train/train_util.h"

namespace mt::launch {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerationResult generate_tokens(parallel::Model& model, const std::vector<int32_t>& prompt, int max_new_tokens,
                                 const SamplingOptions& sampling, std::optional<int32_t> eos,
                                 const std::function<void(int32_t)>& on_token) {
  const core::ModelConfig& mc = model.arch().config();
  const int P = static_cast<int>(prompt.size()), S = mc.seq_len, V = mc.vocab_size;
  MT_CHECK(max_new_tokens >= 1, "--max-new-tokens {} must be >= 1", max_new_tokens);
  if (P < 1) throw core::Error("the prompt encodes to no tokens").with_hint("pass a non-empty --prompt");
  if (P >= S) {
    throw core::Error(fmt::format("the prompt has {} tokens; model.seq_len {} leaves no room to generate", P, S))
        .with_yaml("model.seq_len")
        .with_hint("shorten --prompt");
  }
  check_sampling(sampling);
  // the sequence never passes model.seq_len; the last token chosen is not fed back
  const int max_new = std::min(max_new_tokens, S - P);
  model.begin_decode(1, P + max_new - 1);
  std::vector<float> logits(static_cast<size_t>(V));
  GenerationResult r;
  auto t0 = std::chrono::steady_clock::now();
  model.decode(prompt.data(), 1, P, logits.data());
  r.prefill_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    const int32_t tok = sample_token(logits.data(), V, sampling, static_cast<uint64_t>(i));
    if (eos && tok == *eos) {
      r.stop = "eos";
      break;
    }
    r.tokens.push_back(tok);
    if (on_token) on_token(tok);
    if (static_cast<int>(r.tokens.size()) == max_new) {
      r.stop = max_new < max_new_tokens ? "model.seq_len" : "max-new-tokens";
      break;
    }
    model.decode(&tok, 1, 1, logits.data());
    ++r.decode_steps;
  }
  r.decode_s = seconds_since(t0);
  r.kv_cache_bytes = model.kv_cache_bytes();
  model.end_decode();
  return r;
}

std::string Utf8Streamer::feed(const std::string& decoded) {
  if (decoded.size() > consumed_) {
    pending_.append(decoded, consumed_, std::string::npos);
    consumed_ = decoded.size();
  }
  // the last lead byte among the final (up to 4) bytes: hold it back if its character is
  // not complete yet
  size_t cut = pending_.size();
  for (size_t back = 1; back <= std::min<size_t>(4, pending_.size()); ++back) {
    const auto c = static_cast<unsigned char>(pending_[pending_.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t need = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC0 && c < 0xE0 ? 2 : 1;
    if (need > back) cut = pending_.size() - back;
    break;
  }
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string Utf8Streamer::finish() {
  std::string out;
  out.swap(pending_);
  return out;
}

std::string choose_tokenizer(const std::string& flag, const std::string& hint, int vocab_size) {
  if (!flag.empty()) return flag;
  if (!hint.empty()) return hint;
  if (vocab_size <= 256) return "byte";
  throw core::Error(fmt::format("no tokenizer for a model of {} tokens: the source names none and the byte tokenizer "
                                "covers 256", vocab_size))
      .with_hint("pass --tokenizer PATH (a tokenizer.json or a directory holding one)");
}

int cmd_generate(const GenerateArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env) {
  check_sampling(a.sampling);
  if (a.max_new_tokens < 1) throw core::Error(fmt::format("--max-new-tokens {} must be >= 1", a.max_new_tokens));
  core::log::set_all_to_stderr(true);  // stdout carries the generated text alone
  InferenceModel im = load_inference_model(a.source, a.overrides, world, &env);
  core::log::set_level(core::log::parse_level(im.cfg.run.log_level));
  set_threads(threads_per_rank(im.cfg.train.threads, detect_job(env).self));
  parallel::Model& model = *im.model;
  const int V = im.cfg.model.vocab_size;

  const std::string spec = choose_tokenizer(a.tokenizer, im.tokenizer_hint, V);
  const std::unique_ptr<io::Tokenizer> tok = io::load_tokenizer(spec);
  if (tok->vocab_size() > V) {
    throw core::Error(
        fmt::format("the tokenizer {} has {} tokens, the model {}", tok->describe(), tok->vocab_size(), V))
        .with_hint("pass the tokenizer the model was trained with (--tokenizer)");
  }
  const std::vector<int32_t> prompt = tok->encode(a.prompt);
  if (world.rank() == 0) {
    core::log::info("generate: {} prompt tokens ({}), up to {} new, temperature {}, top-k {}, top-p {}, seed {}",
                    prompt.size(), tok->describe(), a.max_new_tokens, a.sampling.temperature, a.sampling.top_k,
                    a.sampling.top_p, a.sampling.seed);
  }

  // rank 0 streams the text as the tokens come (complete UTF-8 characters only)
  std::vector<int32_t> ids;
  Utf8Streamer streamer;
  const auto print = [](const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  const auto on_token = [&](int32_t t) {
    if (world.rank() != 0) return;
    ids.push_back(t);
    print(streamer.feed(tok->decode(ids)));
  };
  const GenerationResult r = generate_tokens(model, prompt, a.max_new_tokens, a.sampling, tok->eos_id(), on_token);
  if (world.rank() == 0) print(streamer.finish() + "\n");

  // every tp rank must have drawn the same tokens (same gathered logits, same RNG draws)
  uint64_t h = core::fnv1a64(r.tokens.data(), r.tokens.size() * sizeof(int32_t));
  std::vector<uint64_t> all(static_cast<size_t>(world.size()));
  world.all_gather(&h, all.data(), 1, parallel::DType::I64);
  if (std::any_of(all.begin(), all.end(), [&](uint64_t x) { return x != all[0]; }))
    throw core::Error("the tensor-parallel ranks generated different tokens (a bug: they share the logits and the "
                      "RNG)");

  if (world.rank() == 0) {
    // prefill: the prompt's positions per second; decode: one position (token) per step
    std::fprintf(stderr,
                 "generate: %zu prompt + %zu new tokens (stop: %s) | prefill %.0f tok/s (%.1f ms) | decode %.1f "
                 "tok/s (%d steps, %.1f ms) | tp %d, kv cache %.2f MiB per rank\n",
                 prompt.size(), r.tokens.size(), r.stop.c_str(), static_cast<double>(prompt.size()) / r.prefill_s,
                 r.prefill_s * 1e3, r.decode_steps > 0 ? r.decode_steps / r.decode_s : 0.0, r.decode_steps,
                 r.decode_s * 1e3, im.tp(), static_cast<double>(r.kv_cache_bytes) / (1 << 20));
  }
  return 0;
}

}  // namespace mt::launch
