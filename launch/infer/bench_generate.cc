// What: cmd_bench_generate (see generate.h): the time to generate N tokens after a prompt of
// P random tokens, B rows, greedy, two ways on the same model:
//   kv cache   one prefill of the prompt, then N - 1 decode calls of one position each
//              (Model::decode with the key/value cache);
//   recompute  for every token, a fresh forward of the whole prefix so far (a cache begun
//              anew and filled by one decode call of P + i positions: the same kernels, no
//              reuse; only the last position goes through the head), fed the tokens the
//              cached run chose, so both do the same sequence of work and their greedy
//              choices can be compared.
// Prints tokens/s of both (slowest rank), the ratio, and how many greedy choices agree. A
// YAML config is built with random weights (train.seed), model.seq_len raised to P + N if
// shorter; anything else is a SOURCE for load_inference_model (a checkpoint or hf:DIR).
// Why: issue #15's target "KV-cached decoding of 256 tokens is at least 10x faster than
// recomputing the prefix each token", measured, not assumed.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "launch/infer/generate.h"
#include "launch/infer/load_model.h"
#include "launch/launch_env.h"
#include "launch/train/train_util.h"
#include "parallel/models/registry.h"

namespace mt::launch {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Greedy token per row of logits (B, V).
void argmax_rows(const std::vector<float>& logits, int B, int V, int32_t* out) {
  for (int b = 0; b < B; ++b) out[b] = argmax_token(logits.data() + static_cast<size_t>(b) * V, V);
}

// A model and what it needs, from a config (random init) or a source.
struct BenchModel {
  InferenceModel im;  // the source's, or (config) ops/communicators/model built here
  std::string what;
};

BenchModel open_model(const BenchGenerateArgs& a, int need_len, parallel::Communicator& world,
                      const parallel::MpiEnv& env) {
  BenchModel bm;
  const std::string ext = std::filesystem::path(a.config).extension().string();
  if (ext != ".yaml" && ext != ".yml") {
    bm.im = load_inference_model(a.config, a.overrides, world, &env);
    bm.what = bm.im.source + " (loaded)";
    return bm;
  }
  InferenceModel& im = bm.im;
  im.cfg = core::load_config(a.config, a.overrides);
  if (im.cfg.model.seq_len < need_len) {
    if (world.rank() == 0)
      core::log::info("model.seq_len {} raised to {} (prompt + new tokens; random weights)", im.cfg.model.seq_len,
                      need_len);
    im.cfg.model.seq_len = need_len;
  }
  build_inference_model(im, world, &env);
  im.model->init_weights(im.cfg.train.seed);
  bm.what = a.config + " (random weights)";
  return bm;
}

}  // namespace

int cmd_bench_generate(const BenchGenerateArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env) {
  const int P = a.prompt_len, N = a.new_tokens, B = a.batch;
  if (P < 1 || N < 1 || B < 1)
    throw core::Error(fmt::format("--prompt-len {}, --new-tokens {}, --batch {}: each must be >= 1", P, N, B));
  BenchModel bm = open_model(a, P + N, world, env);
  const core::Config& cfg = bm.im.cfg;
  core::log::set_level(core::log::parse_level(cfg.run.log_level));
  const int threads = threads_per_rank(cfg.train.threads, detect_job(env).self);
  set_threads(threads);
  parallel::Model& model = *bm.im.model;
  const int V = cfg.model.vocab_size, L = P + N - 1;  // the last token chosen is not fed back
  if (L > cfg.model.seq_len) {
    throw core::Error(fmt::format("--prompt-len {} + --new-tokens {} need {} positions; model.seq_len is {}", P, N, L,
                                  cfg.model.seq_len))
        .with_yaml("model.seq_len");
  }

  // seq: (B, L) row-major, the prompt then the cached run's greedy tokens
  std::mt19937 g(1234);
  std::vector<int32_t> seq(static_cast<size_t>(B) * L);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < P; ++t)
      seq[static_cast<size_t>(b) * L + t] = static_cast<int32_t>(g() % static_cast<unsigned>(V));
  std::vector<int32_t> cached_tok(static_cast<size_t>(B) * N), recompute_tok(cached_tok.size());
  std::vector<float> logits(static_cast<size_t>(B) * V);
  std::vector<int32_t> buf(static_cast<size_t>(B) * L), step(static_cast<size_t>(B));
  const auto prefix = [&](int len) {  // (B, len) copy of the first len positions
    for (int b = 0; b < B; ++b)
      std::copy_n(seq.data() + static_cast<size_t>(b) * L, len, buf.data() + static_cast<size_t>(b) * len);
    return buf.data();
  };

  // warm-up: allocations, the BLAS thread pool
  model.begin_decode(B, std::min(L, P + 2));
  model.decode(prefix(P), B, P, logits.data());
  for (int i = 0; i < std::min(N - 1, 2); ++i) model.decode(step.data(), B, 1, logits.data());

  // kv cache
  world.barrier();
  double t0 = now_s();
  model.begin_decode(B, L);
  model.decode(prefix(P), B, P, logits.data());
  const double prefill_s = now_s() - t0;
  for (int i = 0; i < N; ++i) {
    argmax_rows(logits, B, V, step.data());
    for (int b = 0; b < B; ++b) {
      cached_tok[static_cast<size_t>(b) * N + i] = step[b];
      if (P + i < L) seq[static_cast<size_t>(b) * L + P + i] = step[b];
    }
    if (i + 1 < N) model.decode(step.data(), B, 1, logits.data());
  }
  double cached_s = now_s() - t0;
  model.end_decode();

  // recompute: a forward of the whole prefix for every token
  world.barrier();
  t0 = now_s();
  for (int i = 0; i < N; ++i) {
    model.begin_decode(B, P + i);
    model.decode(prefix(P + i), B, P + i, logits.data());
    argmax_rows(logits, B, V, step.data());
    for (int b = 0; b < B; ++b) recompute_tok[static_cast<size_t>(b) * N + i] = step[b];
  }
  double recompute_s = now_s() - t0;
  model.end_decode();

  double times[3] = {cached_s, recompute_s, prefill_s};
  world.all_reduce(times, 3, parallel::DType::F64, parallel::ReduceOp::Max);
  cached_s = times[0], recompute_s = times[1];
  int64_t agree = 0;
  for (size_t i = 0; i < cached_tok.size(); ++i) agree += cached_tok[i] == recompute_tok[i];
  const double tokens = static_cast<double>(B) * N;
  const double cached_tps = tokens / cached_s, recompute_tps = tokens / recompute_s;
  if (world.rank() == 0) {
    std::printf("bench generate: %s\n  %s\n  tp %d, batch %d, prompt %d, %d new tokens, %d thread(s)/rank, %s\n",
                bm.what.c_str(), bm.im.arch->describe(model.tp().size()).c_str(), model.tp().size(), B, P, N, threads,
                bm.im.ops->describe().c_str());
    std::printf("  kv cache    %10.1f tok/s   (%.1f ms: prefill %.1f ms, then %.3f ms/token)\n", cached_tps,
                cached_s * 1e3, times[2] * 1e3, N > 1 ? (cached_s - times[2]) * 1e3 / (N - 1) : 0.0);
    std::printf("  recompute   %10.1f tok/s   (%.1f ms: a forward of the whole prefix per token)\n", recompute_tps,
                recompute_s * 1e3);
    std::printf("  speedup     %10.1fx\n", recompute_s / cached_s);
    std::printf("  greedy tokens agree: %lld of %lld\n", static_cast<long long>(agree),
                static_cast<long long>(cached_tok.size()));
    std::fflush(stdout);
    if (!a.json_out.empty()) {
      nlohmann::json j{{"model", bm.what}, {"tp", model.tp().size()}, {"batch", B}, {"prompt_len", P},
                       {"new_tokens", N}, {"threads_per_rank", threads}, {"cached_tokens_per_s", cached_tps},
                       {"recompute_tokens_per_s", recompute_tps}, {"speedup", recompute_s / cached_s},
                       {"cached_s", cached_s}, {"recompute_s", recompute_s}, {"prefill_s", times[2]},
                       {"tokens_agree", agree}};
      std::ofstream(a.json_out) << j.dump(2) << "\n";
    }
  }
  return 0;
}

}  // namespace mt::launch
