// What: cmd_eval (see eval.h). Every rank is one tp slice of the model and reads the same
// batches (dp = 1); the loss is summed over the positions with a target in double and divided
// once, exactly as Trainer::evaluate does.
#include "launch/infer/eval.h"

#include <chrono>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "io/data_source.h"
#include "io/loader.h"
#include "launch/infer/load_model.h"
#include "launch/launch_env.h"
#include "launch/train/train_util.h"
#include "parallel/models/accuracy.h"

namespace mt::launch {

int cmd_eval(const EvalArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env) {
  if (a.split != "val" && a.split != "train")
    throw core::Error("--split must be val or train, not " + a.split);
  std::vector<std::string> overrides = a.overrides;
  // data.path alone names a prepared dataset (the checkpoint's or the defaults' data.source
  // may be the synthetic language)
  if (overrides_set(overrides, "data.path") && !overrides_set(overrides, "data.source"))
    overrides.push_back("data.source=hdf5");
  InferenceModel im = load_inference_model(a.source, overrides, world, &env);
  if (im.cfg.train.micro_batch == core::kAutoMicroBatch)  // (train.micro_batch=auto): one replica
    im.cfg.train.micro_batch = core::auto_micro_batch(im.cfg, 1, 1);
  const core::Config& cfg = im.cfg;
  set_threads(threads_per_rank(cfg.train.threads, detect_job(env).self));

  const auto data = io::make_data_source(cfg, world.rank(), world.size());
  if (data->vocab_size() > cfg.model.vocab_size) {
    throw core::Error(fmt::format("the data's vocabulary ({}) is larger than the model's ({})", data->vocab_size(),
                                  cfg.model.vocab_size))
        .with_file(cfg.data.path)
        .with_hint("evaluate on data prepared with the model's tokenizer");
  }
  const io::LoaderOptions lopt = io::LoaderOptions::from_config(cfg, 1, 0);
  io::Loader loader(*data, lopt, cfg.data.source == "hdf5" ? cfg.data.path : "");
  int64_t batches = a.batches > 0 ? a.batches : cfg.train.eval_batches;
  if (a.all) {
    const uint64_t n = data->epoch_samples(a.split == "val" ? io::Split::Eval : io::Split::Train);
    if (n == 0 || lopt.mode != io::SampleMode::Concat)
      throw core::Error("--all needs a dataset (data.source=hdf5) in data.mode=concat")
          .with_hint("pass --batches N instead");
    batches = static_cast<int64_t>(n / static_cast<uint64_t>(lopt.batch_samples));
  }

  const auto t0 = std::chrono::steady_clock::now();
  double acc[2] = {0, 0};  // sum of token losses, tokens with a target
  parallel::TopkCounts hits;  // eval_acc / eval_acc_top5 (parallel/models/accuracy.h)
  io::Batch eval_batch;
  for (int64_t k = 0; k < batches; ++k) {
    const io::Batch* b = &eval_batch;
    if (a.split == "val") loader.eval_batch(k, eval_batch);
    else b = &loader.next(k);
    for (int m = 0; m < b->n_micro; ++m) {
      const io::MicroBatch& mb = b->micro[static_cast<size_t>(m)];
      const double loss = im.model->forward(mb.inputs.data(), mb.targets.data(), mb.B, mb.T,
                                            mb.doc_ids.empty() ? nullptr : mb.doc_ids.data());
      acc[0] += loss * static_cast<double>(im.model->loss_tokens());
      acc[1] += static_cast<double>(im.model->loss_tokens());
      hits.add(parallel::head_topk_counts(*im.model));
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double loss = acc[1] > 0 ? acc[0] / acc[1] : 0.0;
  const double ppl = std::exp(loss);
  const auto frac = [&](int64_t n) { return hits.targets > 0 ? static_cast<double>(n) / hits.targets : 0.0; };
  const double acc1 = frac(hits.top1), acc5 = frac(hits.topk);
  if (world.rank() == 0) {
    std::printf("eval %s split of %s: loss %.6f  perplexity %.4f  acc %.4f  acc_top5 %.4f  (%lld target tokens, "
                "%lld batches, %.1f s)\n",
                a.split.c_str(), data->describe().c_str(), loss, ppl, acc1, acc5, static_cast<long long>(acc[1]),
                static_cast<long long>(batches), secs);
    std::fflush(stdout);
    if (!a.json_out.empty()) {
      nlohmann::json j{{"source", im.source}, {"data", data->describe()}, {"split", a.split}, {"loss", loss},
                       {"perplexity", ppl}, {"eval_acc", acc1}, {"eval_acc_top5", acc5},
                       {"top1_hits", hits.top1}, {"top5_hits", hits.topk}, {"tokens", static_cast<int64_t>(acc[1])},
                       {"batches", batches}, {"tp", im.tp()}, {"seconds", secs}};
      std::ofstream(a.json_out) << j.dump(2) << "\n";
    }
  }
  return 0;
}

}  // namespace mt::launch
