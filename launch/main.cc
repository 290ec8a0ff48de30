// What: the `meshtrain` binary: one executable for every subcommand, run alone, under mpirun
// or under srun. Parses the command line (CLI11), re-executes for the BLAS core type (see
// blas_env.h), initialises MPI once, runs the subcommand, and turns any error into a clear
// message; with more than one rank a failing rank aborts the whole job (MPI_Abort) so no
// peer waits forever in a collective.
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include <CLI/CLI.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "launch/bench_data.h"
#include "launch/bench_pipeline.h"
#include "launch/bench_tokenizer.h"
#include "launch/dry_run.h"
#include "launch/infer/eval.h"
#include "launch/lr_find.h"
#include "launch/infer/generate.h"
#include "launch/blas_env.h"
#include "launch/commands.h"
#include "launch/launch_env.h"
#include "launch/plan.h"
#include "launch/prep.h"
#include "launch/signals.h"
#include "launch/network_bench.h"
#include "launch/scale.h"
#include "launch/sweep/sweep.h"
#include "parallel/communicator.h"
#include "parallel/mpi_env.h"
#include "parallel/timeout_communicator.h"

using namespace mt;

namespace {
// `meshtrain trian`, `meshtrain bench setp`: CLI11 says only "A subcommand is required" (or
// that the word was not expected); name the word and the nearest subcommand instead. Returns
// the message, "" if the words before the first option are subcommands.
std::string unknown_subcommand(const CLI::App& app, int argc, char** argv) {
  const CLI::App* at = &app;
  std::string path = "meshtrain";
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') return "";
    const auto subs = at->get_subcommands([](const CLI::App*) { return true; });
    if (subs.empty()) return "";  // a positional argument of a leaf subcommand
    std::vector<std::string> names;
    const CLI::App* next = nullptr;
    for (const auto* s : subs) {
      names.push_back(s->get_name());
      if (s->get_name() == word) next = s;
    }
    if (!next) {
      std::string all;
      for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
      const std::string near = core::nearest_word(word, names);
      return fmt::format("unknown subcommand '{}' of `{}`{}\n  subcommands: {}\n", word, path,
                         near.empty() ? "" : fmt::format("; did you mean '{}'?", near), all);
    }
    at = next;
    path += " " + word;
  }
  return "";
}

// An integer option value past the range of every integer type ("--docs 1e30" as digits):
// CLI11 would saturate it to the type's maximum (64-bit options) and run with that. Options
// of 32-bit types fail CLI11's own conversion: main rewords that as "out of range".
std::string integer_out_of_range(const std::string& v) {
  size_t i = v[0] == '-' || v[0] == '+' ? 1 : 0;
  if (i >= v.size() || v.find_first_not_of("0123456789", i) != std::string::npos) return "";
  errno = 0;
  if (v[0] == '-') (void)std::strtoll(v.c_str(), nullptr, 10);
  else (void)std::strtoull(v.c_str(), nullptr, 10);
  return errno == ERANGE ? "value " + v + " out of range: must fit a 64-bit integer" : "";
}
void check_integer_ranges(CLI::App& app) {
  for (CLI::Option* o : app.get_options())
    if (!o->get_lnames().empty() || !o->get_snames().empty()) o->check(integer_out_of_range, "", "");
  for (CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; })) check_integer_ranges(*s);
}

std::string config_keys_help() {
  std::string s = "Config keys (set in YAML or as section.key=value):\n";
  for (const auto& [k, h] : core::config_keys()) s += fmt::format("  {:<30} {}\n", k, h);
  return s;
}
}  // namespace

int main(int argc, char** argv) {
  launch::maybe_reexec_for_blas(argc, argv);

  CLI::App app{"meshtrain: data- and tensor-parallel transformer training on CPU (MPI) and GPU (NCCL) clusters"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");

  launch::TrainArgs train;
  auto* c_train = app.add_subcommand("train", "Train a model: meshtrain train CONFIG [section.key=value ...]");
  c_train->add_option("config", train.config, "YAML config (see examples/)")->required();
  c_train->add_option("overrides", train.overrides, "overrides such as train.steps=100 run.dir=runs/x");
  c_train->footer(config_keys_help());

  auto* c_bench = app.add_subcommand("bench", "Benchmarks: step, allreduce, network, sgemm, data, tokenizer, generate, pipeline");
  c_bench->require_subcommand(1);
  launch::LrFindArgs lrf;
  auto* c_lrf = app.add_subcommand("lr-find", "Learning-rate range test: lr grows exponentially over the steps from the "
                                              "initial model; writes the loss-vs-lr curve and suggests optim.lr");
  c_lrf->add_option("config", lrf.config, "YAML config")->required();
  c_lrf->add_option("overrides", lrf.overrides, "section.key=value overrides");
  c_lrf->add_option("--steps", lrf.steps, "steps of the test (default min(100, train.steps); 10 .. train.steps)");
  c_lrf->add_option("--min-lr", lrf.min_lr, "first step's lr")->capture_default_str();
  c_lrf->add_option("--max-lr", lrf.max_lr, "last step's lr")->capture_default_str();
  c_lrf->add_option("--out", lrf.out, "directory for lr_find.csv / .json / .svg (default run.dir)");
  launch::BenchStepArgs bstep;
  auto* c_bstep = c_bench->add_subcommand("step", "Time forward+backward+update: bench step CONFIG [key=value ...]");
  c_bstep->add_option("config", bstep.config, "YAML config")->required();
  c_bstep->add_option("overrides", bstep.overrides, "section.key=value overrides");
  c_bstep->add_option("--warmup", bstep.warmup, "warm-up steps")->capture_default_str();
  c_bstep->add_option("--steps", bstep.steps, "timed steps")->capture_default_str();
  c_bstep->add_option("--json", bstep.json_out, "also write the figures to this JSON file");
  c_bstep->add_option("--metrics", bstep.metrics_dir,
                      "also write the timed steps to DIR/metrics.jsonl (one record per step, as train does)");
  c_bstep->add_flag("--profile", bstep.profile,
                    "time every kernel call with device events (CUDA events on a GPU) and print ms per step by op; "
                    "the events add a few microseconds per call");
  bool bstep_dry = false;
  int bstep_world = 0;
  c_bstep->add_flag("--dry-run", bstep_dry,
                    "print the memory per rank at the config's layout (and the other tp sizes) without allocating "
                    "anything or starting MPI");
  c_bstep->add_option("--world", bstep_world, "--dry-run: plan for this many ranks (default parallel.dp x parallel.tp)");
  launch::BenchAllreduceArgs bar;
  auto* c_bar = c_bench->add_subcommand("allreduce", "nccl-tests-style all-reduce table: framework vs raw MPI/NCCL");
  c_bar->add_option("--min-bytes", bar.min_bytes, "smallest message")->capture_default_str();
  c_bar->add_option("--max-bytes", bar.max_bytes, "largest message")->capture_default_str();
  c_bar->add_option("--iters", bar.iters, "timed iterations per size")->capture_default_str();
  c_bar->add_option("--warmup", bar.warmup, "warm-up iterations per size")->capture_default_str();
  c_bar->add_option("--rounds", bar.rounds, "timed rounds per size (the median round is reported)")->capture_default_str();
  c_bar->add_option("--factor", bar.factor, "size step: bytes x factor")->capture_default_str();
  c_bar->add_option("--json", bar.json_out, "also write the table as JSON here");
  c_bar->add_option("--device", bar.device, "where the buffers live: cpu, cuda (GPU local_rank % GPUs per node), cuda:N")->capture_default_str();
  c_bar->add_option("--backend", bar.backend, "device buffers: nccl, mpi (host staging) or auto")
      ->check(CLI::IsMember({"auto", "mpi", "nccl"}))
      ->capture_default_str();
  c_bar->add_option("--allreduce", bar.allreduce,
                    "the framework's all-reduce: flat, hierarchical, auto (parallel.allreduce) or both (flat, then "
                    "hierarchical: one table each)")
      ->check(CLI::IsMember({"flat", "hierarchical", "auto", "both"}))
      ->capture_default_str();
  c_bar->add_option("--fake-hosts", bar.fake_hosts,
                    "testing: pretend the ranks sit on this many hosts (contiguous blocks), as parallel.fake_hosts")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  launch::BenchNetworkArgs bnet;
  auto* c_bnet = c_bench->add_subcommand(
      "network", "Fit the two-level cost model (intra-/inter-host alpha, GB/s) and check it on the flat all-reduce");
  c_bnet->add_option("--min-bytes", bnet.min_bytes, "smallest message")->capture_default_str();
  c_bnet->add_option("--max-bytes", bnet.max_bytes, "largest message")->capture_default_str();
  c_bnet->add_option("--factor", bnet.factor, "size step")->capture_default_str();
  c_bnet->add_option("--iters", bnet.iters, "timed iterations per round (a quarter from 4 MiB)")->capture_default_str();
  c_bnet->add_option("--rounds", bnet.rounds, "timed rounds per size (the median counts)")->capture_default_str();
  c_bnet->add_option("--warmup", bnet.warmup, "warm-up iterations per size")->capture_default_str();
  c_bnet->add_option("--json", bnet.json_out, "write the fit (\"network\", for `meshtrain scale`) and the table here");
  int sgemm_threads = 0;
  auto* c_bsgemm = c_bench->add_subcommand("sgemm", "BLAS sgemm GFLOP/s at a few sizes");
  c_bsgemm->add_option("--threads", sgemm_threads, "threads (0 = cores per rank)");

  launch::BenchDataArgs bdata;  // loader throughput vs raw H5Dread (launch/bench_data.h)
  auto* c_bdata = c_bench->add_subcommand("data", "Loader throughput vs a raw sequential H5Dread: bench data DATASET");
  c_bdata->add_option("dataset", bdata.dataset, "dataset directory (meshtrain prep)")->required();
  c_bdata->add_option("--mode", bdata.mode, "concat | documents | packed")
      ->check(CLI::IsMember({"concat", "documents", "packed"}))
      ->capture_default_str();
  c_bdata->add_option("--seq-len", bdata.seq_len, "tokens per sample - 1")->capture_default_str();
  c_bdata->add_option("--batch", bdata.batch, "samples per step (concat), rows per step (packed)")->capture_default_str();
  c_bdata->add_option("--eod-token", bdata.eod_token, "documents/packed: end-of-document token appended to each "
                      "document (as data.eod_token; -1 = none)")->capture_default_str();
  c_bdata->add_option("--batch-tokens", bdata.batch_tokens, "targets per step (documents; 0 = batch x seq_len)");
  c_bdata->add_option("--prefetch", bdata.prefetch, "batches prepared ahead")->capture_default_str();
  c_bdata->add_option("--passes", bdata.passes, "raw passes and loader epochs (best of each reported)")->capture_default_str();
  c_bdata->add_option("--json", bdata.json_out, "also write the figures to this JSON file");

  launch::BenchTokenizerArgs btok;  // our tokenizer's MB/s on one thread (launch/bench_tokenizer.h)
  auto* c_btok = c_bench->add_subcommand("tokenizer", "Tokenizer encode MB/s on one thread: bench tokenizer [TEXT_FILE]");
  c_btok->add_option("text", btok.text_file, "text to encode (default: ~--mb MB generated from license texts)");
  c_btok->add_option("--tokenizer", btok.tokenizer, "tokenizer.json or its directory (default: the source tree's "
                     "tests/fixtures/hf/bpe-gpt2style)");
  c_btok->add_option("--mb", btok.mb, "size of the generated text in MB")->capture_default_str();
  c_btok->add_option("--passes", btok.passes, "timed passes (the best is reported)")->capture_default_str();
  c_btok->add_option("--save-text", btok.save_text, "write the text used here (scripts/bench_tokenizer.sh)");
  c_btok->add_option("--json", btok.json_out, "also write the figures to this JSON file");

  launch::PlanArgs plan;
  auto* c_plan = app.add_subcommand(
      "plan", "Memory and step-time plan of every layout: plan CONFIG --gpus N --gpu-mem 80GiB [--nodes M] [key=value ...]");
  c_plan->add_option("config", plan.config, "YAML config")->required();
  c_plan->add_option("overrides", plan.overrides, "section.key=value overrides");
  c_plan->add_option("--gpus", plan.gpus, "GPUs (ranks) in all")->required();
  c_plan->add_option("--gpu-mem", plan.gpu_mem, "memory per GPU: 80GiB, 40GB, bytes")->required();
  c_plan->add_option("--nodes", plan.nodes, "nodes the GPUs are spread over (tensor parallelism stays inside one)")
      ->capture_default_str();
  c_plan->add_option("--top", plan.top, "table rows (0 = every valid layout)")->capture_default_str();
  c_plan->add_flag("--json", plan.json, "print the plan as JSON (every layout)");

  std::string scale_spec, scale_out = "scale-results";
  auto* c_scale = app.add_subcommand("scale", "Run a scaling experiment (YAML) with mpirun; write CSV, plots, report");
  c_scale->add_option("experiment", scale_spec, "experiment YAML (see examples/scale.yaml)")->required();
  c_scale->add_option("--out", scale_out, "output directory")->capture_default_str();

  std::string sweep_spec;
  auto* c_sweep = app.add_subcommand("sweep", "Hyper-parameter sweep (YAML): grid or random search with optional successive "
                                     "halving, one mpirun (or srun) job per trial; sweep.csv, plots, report.md; rerun to resume");
  c_sweep->add_option("sweep", sweep_spec, "sweep YAML (see examples/sweep-tiny.yaml)")->required();
  c_sweep->footer("The sweep file: base (config, relative to the sweep file), dir (the sweep directory), overrides (common to "
                  "every trial), search (grid | random, with trials: N and seed), params (config key: [values] or "
                  "uniform(lo, hi) | log_uniform(lo, hi) | int_uniform(lo, hi)), halving (rungs: [steps] or min_steps, "
                  "eta), launch (np, launcher auto | mpirun | srun, mpirun_args, srun_args, parallel_trials). "
                  "docs/user-guide.md, \"Sweeps\", explains them.");

  launch::PrepArgs prep;
  auto* c_prep = app.add_subcommand("prep", "Build an HDF5 token dataset (markov | tokens | text | jsonl); text and "
                                    "jsonl run in parallel under mpirun");
  c_prep->add_option("--from", prep.from, "markov, tokens (.npy or raw), text or jsonl")->capture_default_str();
  c_prep->add_option("inputs", prep.inputs, "input files (tokens, text: one document per file; jsonl: per line)");
  c_prep->add_option("--out", prep.out, "output dataset directory")->required();
  c_prep->add_flag("--overwrite", prep.overwrite, "replace a dataset already in --out (its files are removed first)");
  c_prep->add_option("--dtype", prep.dtype, "uint16 | uint32 (default: uint16 if the vocabulary fits)");
  c_prep->add_option("--raw-dtype", prep.raw_dtype, "dtype of raw token files")->capture_default_str();
  c_prep->add_option("--vocab", prep.vocab, "vocabulary size of token files (0 = max id + 1)");
  c_prep->add_option("--shard-tokens", prep.shard_tokens, "tokens per shard")->capture_default_str();
  c_prep->add_option("--val-fraction", prep.val_fraction, "share of documents in the val split")->capture_default_str();
  c_prep->add_flag("--compress", prep.compress, "deflate the shards (random reads ~4x slower)");
  c_prep->add_option("--docs", prep.docs, "markov: documents")->capture_default_str();
  c_prep->add_option("--doc-len", prep.doc_len, "markov: tokens per document (the maximum if not fixed)")->capture_default_str();
  c_prep->add_option("--doc-len-dist", prep.doc_len_dist, "markov: fixed | uniform | skewed document lengths")->capture_default_str();
  c_prep->add_option("--doc-len-min", prep.doc_len_min, "markov: shortest document (uniform, skewed)")->capture_default_str();
  c_prep->add_option("--markov-vocab", prep.markov_vocab, "markov: vocabulary")->capture_default_str();
  c_prep->add_option("--markov-order", prep.markov_order, "markov: order")->capture_default_str();
  c_prep->add_option("--markov-sharpness", prep.markov_sharpness, "markov: peakedness of transitions")->capture_default_str();
  c_prep->add_option("--seed", prep.seed, "markov: seed of the language")->capture_default_str();
  c_prep->add_option("--tokenizer", prep.tokenizer, "text, jsonl: byte (default) or a Hugging Face tokenizer.json "
                     "(or its directory); its end-of-text token ends every document");
  c_prep->add_option("--text-key", prep.text_key, "jsonl: the key of each line's text")->capture_default_str();

  launch::PlotArgs plot;
  auto* c_plot = app.add_subcommand("plot", "Render runs' loss, learning-rate and accuracy curves to SVG (several runs: "
                                            "overlaid)");
  c_plot->add_option("run_dirs", plot.runs, "run directories (with metrics.jsonl)")->required();
  c_plot->add_option("--out", plot.out, "output directory (default: the first run directory)");
  c_plot->add_flag("--png", plot.png, "also convert each chart to PNG (needs rsvg-convert: librsvg2-bin)");

  bool info_json = false;
  auto* c_info = app.add_subcommand("info", "Print what each rank detected: launcher, ranks, hosts, GPUs, build, versions");
  c_info->add_flag("--json", info_json, "one JSON document (rank 0) with every rank's view");
  int info_tp = 0, info_pp = 1;
  c_info->add_option("--tp", info_tp, "also show where a layout's groups run on these hosts: parallel.tp (dp = world / "
                                      "(tp x pp)); warns when a tp group spans hosts")->check(CLI::PositiveNumber);
  c_info->add_option("--pp", info_pp, "parallel.pp of that layout (with --tp)")->capture_default_str()->check(CLI::PositiveNumber);

  launch::EvalArgs eval;
  auto* c_eval = app.add_subcommand("eval", "Loss and perplexity of a model on a dataset split: eval (CHECKPOINT | "
                                            "hf:DIR) [key=value ...]");
  c_eval->add_option("source", eval.source, "checkpoint (step_<N>), run directory (its newest checkpoint) or hf:DIR")
      ->required();
  c_eval->add_option("overrides", eval.overrides, "section.key=value, e.g. data.path=DATASET train.batch_size=8");
  c_eval->add_option("--split", eval.split, "val | train")->check(CLI::IsMember({"val", "train"}))->capture_default_str();
  c_eval->add_option("--batches", eval.batches, "global batches (default train.eval_batches: what train reports)");
  c_eval->add_flag("--all", eval.all, "every full batch of the split (concat mode)");
  c_eval->add_option("--json", eval.json_out, "also write the figures to this JSON file");

  // generation (launch/infer/generate.h)
  launch::GenerateArgs gen;
  auto* c_gen = app.add_subcommand("generate", "Generate text with a key/value cache: generate (CHECKPOINT | hf:DIR) "
                                               "--prompt TEXT [key=value ...]");
  c_gen->add_option("source", gen.source, "checkpoint (step_<N>), run directory (its newest checkpoint) or hf:DIR")
      ->required();
  c_gen->add_option("overrides", gen.overrides, "section.key=value, e.g. train.device=cuda");
  c_gen->add_option("--prompt", gen.prompt, "the text to continue")->required();
  c_gen->add_option("--tokenizer", gen.tokenizer, "tokenizer.json (or its directory), or byte (default: the source's, "
                                                  "else byte when the vocabulary fits in 256)");
  c_gen->add_option("--max-new-tokens", gen.max_new_tokens, "tokens to generate at most")->capture_default_str();
  c_gen->add_option("--temperature", gen.sampling.temperature, "softmax temperature; 0 = greedy (deterministic)")
      ->capture_default_str();
  c_gen->add_option("--top-k", gen.sampling.top_k, "sample among the k most probable tokens (0 = all)")
      ->capture_default_str();
  c_gen->add_option("--top-p", gen.sampling.top_p, "then among the smallest set with probability >= p (1 = all)")
      ->capture_default_str();
  c_gen->add_option("--seed", gen.sampling.seed, "sampling seed (the same output for the same seed)")
      ->capture_default_str();
  launch::BenchPipelineArgs bpipe;  // the schedules' bubble vs theory (launch/bench_pipeline.h)
  auto* c_bpipe = c_bench->add_subcommand("pipeline", "Pipeline schedules' bubble vs theory, one stage per rank: "
                                                      "mpirun -np P meshtrain bench pipeline");
  c_bpipe->add_option("--block-ms", bpipe.block_ms, "forward time of one block (backward: twice)")->capture_default_str();
  c_bpipe->add_option("--layers-per-stage", bpipe.layers_per_stage, "blocks per rank")->capture_default_str();
  c_bpipe->add_option("--micro", bpipe.micro, "micro-batch counts")->capture_default_str();
  c_bpipe->add_option("--schedules", bpipe.schedules, "gpipe, 1f1b, interleaved")->capture_default_str();
  c_bpipe->add_option("--virtual", bpipe.virtual_stages, "interleaved: virtual stages per rank")->capture_default_str();
  c_bpipe->add_option("--repeat", bpipe.repeat, "timed steps per row (median)")->capture_default_str();
  c_bpipe->add_option("--json", bpipe.json_out, "also write the rows as JSON");
  launch::BenchGenerateArgs bgen;
  auto* c_bgen = c_bench->add_subcommand("generate", "KV-cached decoding vs recomputing the prefix per token: bench "
                                                     "generate (CONFIG | SOURCE) [key=value ...]");
  c_bgen->add_option("config", bgen.config, "YAML config (random weights) or a checkpoint / hf:DIR")->required();
  c_bgen->add_option("overrides", bgen.overrides, "section.key=value overrides");
  c_bgen->add_option("--prompt-len", bgen.prompt_len, "prompt tokens (random)")->capture_default_str();
  c_bgen->add_option("--new-tokens", bgen.new_tokens, "tokens generated")->capture_default_str();
  c_bgen->add_option("--batch", bgen.batch, "rows generated together")->capture_default_str();
  c_bgen->add_option("--json", bgen.json_out, "also write the figures to this JSON file");

  std::string inspect_path;
  auto* c_inspect = app.add_subcommand("inspect", "Print a checkpoint's or dataset's manifest and verify its checksums");
  c_inspect->add_option("path", inspect_path, "checkpoint, checkpoints/, run or dataset directory")->required();

  launch::ExportArgs exp;  // Hugging Face export (io/hf/hf_export.h)
  auto* c_export = app.add_subcommand("export", "Write a checkpoint as a Hugging Face model: export CHECKPOINT --format hf --out DIR");
  c_export->add_option("checkpoint", exp.checkpoint, "checkpoint (step_<N>), checkpoints/ or run directory (its newest valid checkpoint)")->required();
  c_export->add_option("--format", exp.format, "output format")->check(CLI::IsMember({"hf"}))->capture_default_str();
  c_export->add_option("--out", exp.out, "model directory to write (config.json, generation_config.json, safetensors)")->required();
  c_export->add_option("--max-shard-size", exp.max_shard_size, "split the weights into shards of at most this size (5GB, 500MB, bytes)")->capture_default_str();
  c_export->add_option("--dtype", exp.dtype, "float32 (re-imports bitwise) | bfloat16")->check(CLI::IsMember({"float32", "bfloat16"}))->capture_default_str();
  c_export->add_option("--quantize", exp.quantize, "post-training weight quantization: int8 (per-output-channel symmetric "
                       "scales; biases and norms stay float32; read by meshtrain eval/generate hf:DIR)")
      ->check(CLI::IsMember({"int8"}));
  c_export->add_flag("--force", exp.force, "replace a non-empty --out");

  check_integer_ranges(app);
  if (const std::string bad = unknown_subcommand(app, argc, argv); !bad.empty()) {
    std::fprintf(stderr, "%s", bad.c_str());
    return 1;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ConversionError& e) {
    // "Could not convert: --steps = 99999999999": an integer the option's type cannot hold
    const std::string m = e.what();
    const auto eq = m.rfind(" = ");
    const std::string v = eq == std::string::npos ? "" : m.substr(eq + 3);
    const bool integer = !v.empty() && v.find_first_not_of("0123456789", v[0] == '-' || v[0] == '+') == std::string::npos;
    if (!integer) return app.exit(e);
    const auto colon = m.find(": ");
    std::fprintf(stderr, "%s = %s: value out of range for this option\nRun with --help for more information.\n",
                 m.substr(colon + 2, eq - colon - 2).c_str(), v.c_str());
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (c_scale->parsed()) {  // launches its own mpirun jobs: no MPI in this process
    try {
      return launch::run_scale(launch::load_scale_spec(scale_spec), launch::self_path(), scale_out);
    } catch (const std::exception& e) {
      core::log::error("{}", e.what());
      return 1;
    }
  }
  if (c_sweep->parsed()) {  // launches its own mpirun jobs: no MPI in this process
    try {
      return launch::sweep::run_sweep(sweep_spec, launch::self_path());
    } catch (const std::exception& e) {
      core::log::error("{}", e.what());
      return 1;
    }
  }
  const bool dry_run = c_bstep->parsed() && bstep_dry;
  if (c_prep->parsed() && launch::started_by_mpi_launcher()) {  // collective over the ranks mpirun started
    try {
      parallel::MpiEnv env(&argc, &argv);
      try {
        return launch::run_prep(prep, env.rank(), env.size());
      } catch (const std::exception& e) {
        core::log::error("{}", e.what());
        if (env.size() > 1) parallel::MpiEnv::abort_job(1);
        return 1;
      }
    } catch (const std::exception& e) {
      core::log::error("{}", e.what());
      return 1;
    }
  }
  if (c_inspect->parsed() || c_plot->parsed() || c_prep->parsed() || c_bdata->parsed() || c_btok->parsed() ||
      dry_run || c_export->parsed() || c_plan->parsed()) {  // no MPI
    try {
      if (c_plan->parsed()) return launch::cmd_plan(plan);
      if (c_export->parsed()) return launch::cmd_export(exp);
      if (dry_run) return launch::cmd_bench_dry_run({bstep.config, bstep.overrides, bstep_world});
      if (c_prep->parsed()) return launch::run_prep(prep);
      if (c_bdata->parsed()) return launch::cmd_bench_data(bdata);
      if (c_btok->parsed()) return launch::cmd_bench_tokenizer(btok);
      return c_plot->parsed() ? launch::cmd_plot(plot) : launch::cmd_inspect(inspect_path);
    } catch (const std::exception& e) {
      core::log::error("{}", e.what());
      return 1;
    }
  }

  int rc = 0;
  launch::snapshot_launch_vars();  // as the launcher set them, before MPI_Init adds its own
  // a launch known to die inside MPI_Init with a misleading message gets a hint first
  if (const std::string hint = launch::pre_mpi_hint(launch::launch_vars_from_environ()); !hint.empty()) {
    const char* procid = std::getenv("SLURM_PROCID");
    if (!procid || std::string(procid) == "0") core::log::warn("{}", hint);
  }
  try {
    parallel::MpiEnv env(&argc, &argv);
    // every collective gets a deadline (parallel.timeout_s, set once the config is read)
    auto world = std::make_unique<parallel::TimeoutCommunicator>(parallel::make_world_communicator("mpi"), 60.0);
    world->learn_hosts();  // a timeout then names its communicator's members' world ranks and hosts
    try {
      if (c_info->parsed()) {
        launch::JobLaunch job = launch::detect_job(env);
        if (info_tp > 0 && !launch::describe_placement(job, info_tp, info_pp, world->rank()) && env.rank() == 0)
          job.job_warnings.push_back(fmt::format("--tp {} --pp {}: tp x pp does not divide the world of {} ranks; no "
                                                 "placement shown", info_tp, info_pp, env.size()));
        rc = launch::cmd_info(job, info_json);
      } else if (c_train->parsed()) rc = launch::cmd_train(train, *world, env);
      else if (c_bstep->parsed()) rc = launch::cmd_bench_step(bstep, *world, env);
      else if (c_lrf->parsed()) rc = launch::cmd_lr_find(lrf, *world, env);
      else if (c_bar->parsed()) rc = launch::cmd_bench_allreduce(bar, *world, env);
      else if (c_bnet->parsed()) rc = launch::cmd_bench_network(bnet, *world);
      else if (c_bsgemm->parsed()) rc = launch::cmd_bench_sgemm(sgemm_threads, *world, env);
      else if (c_eval->parsed()) rc = launch::cmd_eval(eval, *world, env);
      else if (c_gen->parsed()) rc = launch::cmd_generate(gen, *world, env);
      else if (c_bgen->parsed()) rc = launch::cmd_bench_generate(bgen, *world, env);
      else if (c_bpipe->parsed()) rc = launch::cmd_bench_pipeline(bpipe, *world);
    } catch (const launch::AgreedError& e) {  // every rank has it: one message, a clean exit
      if (world->rank() == 0) core::log::error("{}", e.what());
      return 1;
    } catch (const std::exception& e) {
      launch::note_job_failing();  // mpirun's SIGTERM during the abort is no preemption: no checkpoint message
      core::log::error("{}", e.what());
      if (world->size() > 1) {
        core::log::error("aborting the job so that no rank waits for this one");
        parallel::MpiEnv::abort_job(1);
      }
      return 1;
    }
  } catch (const std::exception& e) {
    core::log::error("{}", e.what());
    return 1;
  }
  return rc;
}
