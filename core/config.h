// What: the run configuration: YAML parsed ONCE into typed structs, validated, overridable
// from the command line as `section.key=value`, and written back out resolved.
// Why: users lose runs to typos. Every key is declared once in a schema (config.cc) with its
// type, range and help, so an unknown key names the nearest valid one, and a wrong type or
// out-of-range value names the YAML path and line.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace mt::core {

struct ModelConfig {
  std::string arch = "gpt2";  // parallel/models/registry.cc lists the architectures
  int n_layer = 2;
  int n_head = 4;
  int n_embd = 64;
  int vocab_size = 64;
  int seq_len = 64;
  double init_std = 0.02;
  // llama (ignored by gpt2)
  int n_kv_head = 0;           // key/value heads (grouped-query attention); 0 = n_head
  int ffn_dim = 0;             // SwiGLU hidden width; 0 = Llama's rule from n_embd and ffn_multiple_of
  int ffn_multiple_of = 256;   // ... rounded up to a multiple of this
  double rope_theta = 10000.0; // rotary embedding base
  double norm_eps = 1e-5;      // RMSNorm epsilon
  bool tie_embeddings = false; // output head shares the token embedding
  std::string init_from;       // "hf:DIR": start from a Hugging Face model (io/hf/hf_import.h)
};

// train.distill: knowledge distillation from a teacher model (launch/train/distill.h).
struct DistillConfig {
  std::string teacher;         // "" = off; a checkpoint (step_N, checkpoints/ or run dir) or hf:DIR
  double alpha = 0.5;          // weight of the KL term: (1 - alpha) CE + alpha T^2 KL
  double temperature = 2.0;    // softens both distributions (> 0)
};

struct TrainConfig {
  int64_t steps = 200;
  int64_t stop_at_step = 0;  // pause after this step (eval, checkpoint, exit 0); resume=auto goes on; 0 = off
  int batch_size = 16;       // GLOBAL sequences per optimizer step, independent of dp
  int micro_batch = 8;       // sequences per rank per forward/backward; kAutoMicroBatch = `auto` until resolved
  uint64_t seed = 1337;      // parameter init and dropout-free sampling
  int eval_every = 50;       // 0 = only at the end
  int eval_batches = 4;      // eval set = eval_batches * batch_size sequences
  int log_every = 1;
  int early_stop_patience = 0;   // evals without improvement before stopping; 0 = off
  double early_stop_min_delta = 0.0;
  int threads = 0;           // OpenMP/BLAS threads per rank; 0 = cores / ranks on the node
  std::string nonfinite = "stop";  // non-finite loss or grad norm: skip the update | stop
  int max_skips_in_row = 10;       // skip: stop after this many consecutive skipped steps (0 = unlimited)
  int64_t debug_nan_step = -1;     // testing: poison the gradients at this step (-1 = off)
  int64_t debug_nan_steps = 1;     // testing: ... and at the debug_nan_steps - 1 steps after it
  std::string device = "cpu";      // cpu | cuda (GPU local_rank % GPUs per node) | cuda:N
  std::string precision = "auto";  // auto (cpu: fp32, cuda: bf16) | fp32 | bf16 (CUDA only)
  std::string attention = "auto";  // CUDA attention kernel: auto | cudnn | own
  std::string recompute = "none";  // activation recomputation: none | full | selective
  bool micro_batch_auto = false;   // micro_batch was `auto`, resolved by resolve_micro_batch (config.yaml says so)
  DistillConfig distill;
};

struct OptimConfig {
  std::string name = "adamw";    // adamw | sgd
  double lr = 1e-3;
  double min_lr_ratio = 0.1;     // cosine decays to lr * min_lr_ratio
  int warmup_steps = 0;
  std::string schedule = "cosine";  // cosine | constant
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;     // decoupled; applied to matrices only (not biases, norms)
  double momentum = 0.9;         // sgd
  double grad_clip = 1.0;        // global-norm clipping; 0 = off
};

struct DataConfig {
  std::string source = "markov";  // markov (built-in synthetic language) | hdf5
  std::string path;               // hdf5: dataset directory
  int markov_order = 2;           // context length of the Markov source
  int markov_vocab = 0;           // tokens the language uses (0 = model.vocab_size)
  double markov_sharpness = 2.0;  // larger = more predictable language (lower entropy)
  uint64_t seed = 1234;           // the language itself (fixed across training seeds)
  // the loader (io/loader.h, docs/dataset-format.md)
  std::string mode = "concat";        // concat (seq_len windows) | documents (one per row) | packed (end to end in rows)
  std::string schedule = "balanced";  // split of each global batch across dp: static | round_robin | balanced | dynamic
  int64_t batch_tokens = 0;           // documents: target tokens per global batch (0 = batch_size x seq_len)
  int eod_token = -1;                 // documents/packed: every document sample ends with it (-1 = none)
  int prefetch = 2;                   // batches prepared ahead by the background thread
  bool verify = true;                 // hdf5: checksums and token ids of every shard at start
  int debug_slow_rank = -1;           // testing: this dp replica sleeps to run debug_slow_factor x slower
  double debug_slow_factor = 2.0;
};

struct ParallelConfig {
  int dp = 0;                  // data-parallel size; 0 = world / (tp x pp)
  int tp = 1;                  // tensor-parallel size
  int pp = 1;                  // pipeline-parallel size (stages)
  std::string pp_schedule = "1f1b";  // gpipe | 1f1b | interleaved (parallel/pipeline/schedule.h)
  int pp_virtual = 1;          // virtual stages per pp rank (interleaved: >= 2; else 1)
  std::vector<int> pp_layers;  // blocks per stage (pp entries, summing to model.n_layer); empty = balanced by cost
  int zero = 0;                // 0 = off; 1/2/3 shard optimizer state / + gradients / + parameters over dp
  bool sp = false;             // sequence parallelism: norms and residuals hold 1/tp of the tokens
  double bucket_mb = 4.0;      // gradient all-reduce bucket size
  std::string backend = "auto";  // auto | mpi | nccl
  std::string grad_reduce_dtype = "fp32";  // fp32 | bf16 (CUDA): dtype of the gradient all-reduce
  double timeout_s = 60;       // a collective waiting longer ends the job (hang detection)
  std::string allreduce = "auto";  // auto | flat | hierarchical: the dp gradient all-reduce (parallel/hierarchical.h)
  int fake_hosts = 0;          // testing: split the world into this many pretend hosts (0 = real host names)
};

struct CheckpointConfig {
  int every = 0;            // steps between checkpoints (0 = only on request)
  int keep = 3;             // newest complete checkpoints kept
  std::string dir;          // "" = <run.dir>/checkpoints
  std::string resume;       // "" (or "none" as written) = fresh start, "auto" = newest valid checkpoint, or a path
};

struct RunConfig {
  std::string dir = "runs/default";
  std::string log_level = "info";
  double peak_gflops = 0;   // per-rank peak for MFU; 0 = measured sgemm (CPU), H100 SXM on CUDA: 989e3 bf16, 67e3 fp32
  bool tensorboard = true;  // write <run.dir>/tb event files
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  OptimConfig optim;
  DataConfig data;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  RunConfig run;

  std::string source_file;               // the YAML file it came from ("" if none)
  std::map<std::string, int> key_lines;  // yaml path -> 1-based line in source_file
  std::vector<std::string> overrides;    // command-line overrides, in order
  std::set<std::string> set_keys;        // "section.key" given in the YAML or an override (the rest are defaults)
};

// Parse a YAML file (throws mt::core::Error with file, YAML path, line and a hint). After the
// file and the overrides, a leading `~` / `~/` of the path keys (run.dir, data.path,
// checkpoint.dir, checkpoint.resume) is expanded from $HOME.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Parse YAML text (for tests and embedded configs); `origin` names it in messages.
Config parse_config(const std::string& yaml_text, const std::string& origin,
                    const std::vector<std::string>& overrides = {});
// Apply one `section.key=value` override.
void apply_override(Config& cfg, const std::string& assignment);
// Cross-field checks (n_embd divisible by n_head, batch arithmetic, ...). model_final = false
// skips the checks that need the model section: with model.init_from it is only known once
// io::hf::resolve_model_config has read config.json (parse_config skips them then; the
// caller validates again after resolving).
void validate_config(const Config& cfg, bool model_final = true);
// The resolved configuration as YAML (every key, with overrides applied).
std::string config_to_yaml(const Config& cfg);
// train.micro_batch: auto, as stored until resolve_micro_batch replaces it by a number.
constexpr int kAutoMicroBatch = 0;
// The micro-batch `train.micro_batch: auto` stands for at data-parallel size dp and pipeline
// depth pp (the other keys from cfg): the largest micro-batch m that divides the per-replica
// batch R = train.batch_size / dp (documents mode: R = data.batch_tokens / model.seq_len / dp,
// at least 1), i.e. no gradient accumulation; with pp > 1 the largest m that still leaves
// R / m >= pp micro-batches per step (1f1b fills the pipeline only then; gpipe's bubble
// shrinks with them too), for pp_schedule interleaved also R / m a multiple of pp; 1 where
// no m qualifies (the pipeline check then names the keys). Throws core::Error at
// train.batch_size where an even split is required (data.mode concat, data.schedule not
// dynamic) and dp does not divide the batch.
int auto_micro_batch(const Config& cfg, int dp, int pp);
// Replace `auto` by auto_micro_batch at dp = parallel.dp (0: world / (tp x pp)) and pp =
// parallel.pp; a number stays as it is. Every command that builds batches calls it once the
// world size is known, so the resolved config.yaml, the banner and checkpoints hold the number.
void resolve_micro_batch(Config& cfg, int world);
// All valid keys "section.key" with their help text (for --help and suggestions).
std::vector<std::pair<std::string, std::string>> config_keys();
// Nearest valid key to `key` by edit distance ("" if none is close).
std::string suggest_key(const std::string& key);
// The choice nearest to `word` by edit distance ("" if none is within max(2, length / 2)):
// `meshtrain trian` suggests `train`.
std::string nearest_word(const std::string& word, const std::vector<std::string>& choices);

}  // namespace mt::core
