// What: the config schema (one line per key), YAML loading with line numbers, overrides,
// cross-field validation and the resolved dump.
#include "core/config.h"

#include <algorithm>
#include <cmath>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "core/error.h"

namespace mt::core {

namespace {

enum class Kind { Int, Float, String, Bool, IntList };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Int: return "an integer";
    case Kind::Float: return "a number";
    case Kind::String: return "a string";
    case Kind::Bool: return "true or false";
    case Kind::IntList: return "a list of integers";
  }
  return "?";
}

struct Field {
  std::string path;  // "section.key"
  Kind kind;
  double min, max;                    // for Int / Float
  std::vector<std::string> choices;   // for String (empty = any)
  // IntList: min/max bound every element; the value is a YAML list ([3, 3], or a block list),
  // a bare comma-separated scalar (3,3 or 3), or [] / '' for the empty list
  std::string help;
  std::function<void(Config&, const YAML::Node&)> set;  // may throw YAML::Exception
  std::function<std::string(const Config&)> get;        // YAML scalar text
  bool auto_ok = false;  // Int: also takes `auto` (stored as a sentinel outside [min, max], shown as auto)
};

constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename T>
std::string scalar_text(const T& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    YAML::Emitter e;
    e << v;
    return e.c_str();
  } else if constexpr (std::is_floating_point_v<T>) {
    std::ostringstream os;
    os.precision(17);
    os << v;
    return os.str();
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::vector<int>>) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
  } else {
    return std::to_string(v);
  }
}

// An IntList value: a YAML list of integers, or a scalar "3,3" / "3" (what a shell override
// without brackets gives), "" or null for the empty list. Throws YAML::Exception on anything
// else (set_field turns it into an Error naming the key).
std::vector<int> int_list(const YAML::Node& n) {
  std::vector<int> v;
  if (n.IsNull()) return v;
  if (n.IsSequence()) {
    for (const auto& e : n) {
      if (!e.IsScalar()) throw YAML::Exception(YAML::Mark::null_mark(), "list element is not a scalar");
      v.push_back(e.as<int>());
    }
    return v;
  }
  std::string text = n.Scalar(), item;
  std::stringstream ss(text);
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) {
      if (text.find_first_not_of(" \t") == std::string::npos) return v;  // "" = empty
      throw YAML::Exception(YAML::Mark::null_mark(), "empty list element");
    }
    v.push_back(YAML::Node(item.substr(b, e - b + 1)).as<int>());
  }
  return v;
}

// One schema entry; `ref` returns the member it binds.
template <typename T, typename Ref>
Field F(const char* path, Ref ref, double mn, double mx, const char* help,
        std::vector<std::string> choices = {}) {
  Field f;
  f.path = path;
  if constexpr (std::is_same_v<T, std::string>) f.kind = Kind::String;
  else if constexpr (std::is_same_v<T, bool>) f.kind = Kind::Bool;
  else if constexpr (std::is_floating_point_v<T>) f.kind = Kind::Float;
  else if constexpr (std::is_same_v<T, std::vector<int>>) f.kind = Kind::IntList;
  else f.kind = Kind::Int;
  f.min = mn;
  f.max = mx;
  f.choices = std::move(choices);
  f.help = help;
  if constexpr (std::is_same_v<T, std::vector<int>>) {
    f.set = [ref](Config& c, const YAML::Node& n) { ref(c) = int_list(n); };
  } else {
    f.set = [ref](Config& c, const YAML::Node& n) { ref(c) = n.as<T>(); };
  }
  f.get = [ref](const Config& c) { return scalar_text(ref(const_cast<Config&>(c))); };
  return f;
}

#define MT_REF(sec, key) [](Config& c) -> auto& { return c.sec.key; }

// An integer key that also takes `auto`, stored as `sentinel` until a later stage resolves it
template <typename Ref>
Field F_auto(const char* path, Ref ref, double mn, double mx, const char* help, int sentinel) {
  Field f = F<int>(path, ref, mn, mx, help);
  f.auto_ok = true;
  f.set = [ref, sentinel](Config& c, const YAML::Node& n) {
    ref(c) = n.IsScalar() && n.Scalar() == "auto" ? sentinel : n.as<int>();
  };
  f.get = [ref, sentinel](const Config& c) {
    const int v = ref(const_cast<Config&>(c));
    return v == sentinel ? std::string("auto") : std::to_string(v);
  };
  return f;
}

const std::vector<Field>& schema() {
  static const std::vector<Field> fields = [] {
    std::vector<Field> v;
    // model
    v.push_back(F<std::string>("model.arch", MT_REF(model, arch), 0, 0, "model architecture: gpt2 | llama (parallel/models/registry.cc lists them)"));
    v.push_back(F<int>("model.n_layer", MT_REF(model, n_layer), 1, 1024, "transformer blocks"));
    v.push_back(F<int>("model.n_head", MT_REF(model, n_head), 1, 1024, "attention heads"));
    v.push_back(F<int>("model.n_embd", MT_REF(model, n_embd), 1, 65536, "model width (divisible by n_head)"));
    v.push_back(F<int>("model.vocab_size", MT_REF(model, vocab_size), 2, 1 << 24, "vocabulary size"));
    v.push_back(F<int>("model.seq_len", MT_REF(model, seq_len), 1, 1 << 20, "context length"));
    v.push_back(F<double>("model.init_std", MT_REF(model, init_std), 0, 10, "init std of weights (GPT-2: 0.02)"));
    v.push_back(F<int>("model.n_kv_head", MT_REF(model, n_kv_head), 0, 1024, "llama: key/value heads, grouped-query attention (0 = n_head; divides n_head)"));
    v.push_back(F<int>("model.ffn_dim", MT_REF(model, ffn_dim), 0, 1 << 22, "llama: SwiGLU hidden width (0 = Llama's rule: 2/3 of 4 n_embd rounded up to ffn_multiple_of)"));
    v.push_back(F<int>("model.ffn_multiple_of", MT_REF(model, ffn_multiple_of), 1, 1 << 20, "llama: the default ffn_dim is a multiple of this"));
    v.push_back(F<double>("model.rope_theta", MT_REF(model, rope_theta), 1, 1e12, "llama: rotary embedding base (Llama 2: 10000, Llama 3: 500000)"));
    v.push_back(F<double>("model.norm_eps", MT_REF(model, norm_eps), 0, 1, "llama: RMSNorm epsilon"));
    v.push_back(F<bool>("model.tie_embeddings", MT_REF(model, tie_embeddings), 0, 0, "llama: the output head shares the token embedding (default false: its own lm_head)"));
    v.push_back(F<std::string>("model.init_from", MT_REF(model, init_from), 0, 0, "hf:DIR: start from a Hugging Face model's weights (its config.json sets the model section)"));
    // train
    v.push_back(F<int64_t>("train.steps", MT_REF(train, steps), 0, 1e15, "optimizer steps"));
    v.push_back(F<int64_t>("train.stop_at_step", MT_REF(train, stop_at_step), 0, 1e15, "pause the run after this step (0 = off; at or past train.steps: off): an eval, a checkpoint, exit 0, no final eval or summary.json; resume=auto goes on (the lr schedule spans train.steps either way; meshtrain sweep's successive halving uses it)"));
    v.push_back(F<int>("train.batch_size", MT_REF(train, batch_size), 1, 1 << 30, "global batch in sequences per step"));
    v.push_back(F_auto("train.micro_batch", MT_REF(train, micro_batch), 1, 1 << 20, "sequences per rank per micro-step, or auto: the largest that divides the per-replica batch train.batch_size / dp (no gradient accumulation); with parallel.pp > 1 the largest that leaves >= pp micro-batches per step (interleaved: a multiple of pp)", kAutoMicroBatch));
    v.push_back(F<uint64_t>("train.seed", MT_REF(train, seed), 0, 1.8e19, "seed for init and sampling"));
    v.push_back(F<int>("train.eval_every", MT_REF(train, eval_every), 0, 1 << 30, "steps between evals (0 = end only)"));
    v.push_back(F<int>("train.eval_batches", MT_REF(train, eval_batches), 1, 1 << 20, "eval set size in global batches"));
    v.push_back(F<int>("train.log_every", MT_REF(train, log_every), 1, 1 << 30, "steps between log lines"));
    v.push_back(F<int>("train.early_stop_patience", MT_REF(train, early_stop_patience), 0, 1 << 30, "evals without improvement before stopping (0 = off)"));
    v.push_back(F<double>("train.early_stop_min_delta", MT_REF(train, early_stop_min_delta), 0, kInf, "improvement that counts for early stopping"));
    v.push_back(F<int>("train.threads", MT_REF(train, threads), 0, 4096, "threads per rank (0 = cores per rank)"));
    v.push_back(F<std::string>("train.device", MT_REF(train, device), 0, 0, "cpu | cuda (GPU local_rank % GPUs on the node) | cuda:N"));
    v.push_back(F<std::string>("train.precision", MT_REF(train, precision), 0, 0, "auto = fp32 on cpu, bf16 on cuda (bf16 weights/activations, fp32 master weights, grads and optimizer state)", {"auto", "fp32", "bf16"}));
    v.push_back(F<std::string>("train.attention", MT_REF(train, attention), 0, 0, "CUDA attention: auto (cuDNN fused attention where supported, else own kernel) | cudnn | own", {"auto", "cudnn", "own"}));
    v.push_back(F<std::string>("train.recompute", MT_REF(train, recompute), 0, 0, "activation recomputation: none (keep every block's activations) | full (keep only each block's input, re-run the block's forward before its backward: activation memory ~1/n_layer, ~1.3x step time, bitwise the same losses) | selective (keep all but the attention state (CPU: the T x T probabilities) and the MLP activation, re-derived before each block's backward: GPT-2 124M at 4 x 1024 on the CPU 0.58x the activations of none at ~1.2x step time, bitwise the same losses)", {"none", "full", "selective"}));
    v.push_back(F<std::string>("train.nonfinite", MT_REF(train, nonfinite), 0, 0, "on a non-finite loss or gradient norm: skip the update or stop", {"skip", "stop"}));
    v.push_back(F<int>("train.max_skips_in_row", MT_REF(train, max_skips_in_row), 0, 1 << 30, "nonfinite: skip: after this many consecutive skipped steps the run stops like nonfinite: stop (0 = unlimited)"));
    v.push_back(F<std::string>("train.distill.teacher", MT_REF(train, distill.teacher), 0, 0, "knowledge distillation: the teacher model, a checkpoint (step_<N>, checkpoints/ or run directory) or hf:DIR ('' = off); any architecture with the same vocab_size, run forward on every micro-batch at the run's tp (parallel.pp = 1)"));
    v.push_back(F<double>("train.distill.alpha", MT_REF(train, distill.alpha), 0, 1, "distillation: loss = (1 - alpha) cross-entropy + alpha T^2 KL(teacher || student) at temperature T"));
    v.push_back(F<double>("train.distill.temperature", MT_REF(train, distill.temperature), 0, 1e6, "distillation: temperature T > 0 softening the teacher's and the student's distributions"));
    v.push_back(F<int64_t>("train.debug_nan_step", MT_REF(train, debug_nan_step), -1, 1e15, "testing: poison gradients at this step (-1 = off)"));
    v.push_back(F<int64_t>("train.debug_nan_steps", MT_REF(train, debug_nan_steps), 1, 1e15, "testing: consecutive steps poisoned from train.debug_nan_step on"));
    // optim
    v.push_back(F<std::string>("optim.name", MT_REF(optim, name), 0, 0, "optimizer", {"adamw", "sgd"}));
    v.push_back(F<double>("optim.lr", MT_REF(optim, lr), 0, 100, "peak learning rate"));
    v.push_back(F<double>("optim.min_lr_ratio", MT_REF(optim, min_lr_ratio), 0, 1, "final lr / peak lr (cosine)"));
    v.push_back(F<int>("optim.warmup_steps", MT_REF(optim, warmup_steps), 0, 1 << 30, "linear warmup steps"));
    v.push_back(F<std::string>("optim.schedule", MT_REF(optim, schedule), 0, 0, "lr schedule", {"cosine", "constant"}));
    v.push_back(F<double>("optim.beta1", MT_REF(optim, beta1), 0, 0.999999, "AdamW beta1"));
    v.push_back(F<double>("optim.beta2", MT_REF(optim, beta2), 0, 0.999999, "AdamW beta2"));
    v.push_back(F<double>("optim.eps", MT_REF(optim, eps), 0, 1, "AdamW epsilon"));
    v.push_back(F<double>("optim.weight_decay", MT_REF(optim, weight_decay), 0, 10, "decoupled weight decay (matrices only)"));
    v.push_back(F<double>("optim.momentum", MT_REF(optim, momentum), 0, 0.999999, "SGD momentum"));
    v.push_back(F<double>("optim.grad_clip", MT_REF(optim, grad_clip), 0, kInf, "max global grad norm (0 = off)"));
    // data
    v.push_back(F<std::string>("data.source", MT_REF(data, source), 0, 0, "where batches come from", {"markov", "hdf5"}));
    v.push_back(F<std::string>("data.path", MT_REF(data, path), 0, 0, "HDF5 dataset directory (data.source: hdf5; see meshtrain prep)"));
    v.push_back(F<int>("data.markov_order", MT_REF(data, markov_order), 1, 4, "context length of the synthetic Markov language"));
    v.push_back(F<int>("data.markov_vocab", MT_REF(data, markov_vocab), 0, 1 << 24, "tokens the Markov language uses (0 = model.vocab_size)"));
    v.push_back(F<double>("data.markov_sharpness", MT_REF(data, markov_sharpness), 0, 100, "peakedness of its transitions"));
    v.push_back(F<uint64_t>("data.seed", MT_REF(data, seed), 0, 1.8e19, "seed of the synthetic language"));
    v.push_back(F<std::string>("data.mode", MT_REF(data, mode), 0, 0, "samples: concat = seq_len windows of the token stream, documents = one document per row (padded), packed = documents end to end in rows of seq_len (hdf5; packed needs data.eod_token)", {"concat", "documents", "packed"}));
    v.push_back(F<std::string>("data.schedule", MT_REF(data, schedule), 0, 0, "split of each global batch across dp ranks: static (contiguous), round_robin (interleaved), balanced (documents, packed rows: by modelled cost), dynamic (by measured throughput)", {"static", "round_robin", "balanced", "dynamic"}));
    v.push_back(F<int64_t>("data.batch_tokens", MT_REF(data, batch_tokens), 0, 1e15, "documents mode: target tokens per global batch (0 = train.batch_size x model.seq_len); packed mode's batch is train.batch_size rows"));
    v.push_back(F<int>("data.eod_token", MT_REF(data, eod_token), -1, 1 << 24, "documents/packed modes: end-of-document token id, appended to every document that does not end with it (-1 = none; required by packed)"));
    v.push_back(F<int>("data.prefetch", MT_REF(data, prefetch), 1, 64, "batches the background loader prepares ahead"));
    v.push_back(F<bool>("data.verify", MT_REF(data, verify), 0, 0, "hdf5: verify every shard's checksum and token ids before training"));
    v.push_back(F<int>("data.debug_slow_rank", MT_REF(data, debug_slow_rank), -1, 1 << 20, "testing: the dp replica that runs debug_slow_factor x slower (-1 = off)"));
    v.push_back(F<double>("data.debug_slow_factor", MT_REF(data, debug_slow_factor), 1, 1000, "testing: slow-down factor of data.debug_slow_rank (sleeps in proportion to its compute)"));
    // parallel
    v.push_back(F<int>("parallel.dp", MT_REF(parallel, dp), 0, 1 << 20, "data-parallel size (0 = world / (tp x pp))"));
    v.push_back(F<int>("parallel.tp", MT_REF(parallel, tp), 1, 1 << 20, "tensor-parallel size"));
    v.push_back(F<int>("parallel.pp", MT_REF(parallel, pp), 1, 1 << 20, "pipeline-parallel size: the model's blocks split into pp stages on consecutive ranks of the mesh dp x pp x tp (tp innermost)"));
    v.push_back(F<std::string>("parallel.pp_schedule", MT_REF(parallel, pp_schedule), 0, 0, "pipeline schedule (parallel.pp > 1): gpipe (all forwards, then all backwards: m micro-batches of activations), 1f1b (one forward one backward: at most pp), interleaved (1f1b over parallel.pp_virtual virtual stages per rank: bubble / pp_virtual; micro-batches a multiple of pp)", {"gpipe", "1f1b", "interleaved"}));
    v.push_back(F<int>("parallel.pp_virtual", MT_REF(parallel, pp_virtual), 1, 1024, "virtual pipeline stages per rank: >= 2 with pp_schedule interleaved (model.n_layer divisible by pp x pp_virtual), else 1"));
    v.push_back(F<std::vector<int>>("parallel.pp_layers", MT_REF(parallel, pp_layers), 1, 1 << 20, "blocks of each pipeline stage, pp entries summing to model.n_layer ([] = balanced by the model's cost, the embedding on the first stage and the head on the last; not with interleaved)"));
    v.push_back(F<int>("parallel.zero", MT_REF(parallel, zero), 0, 3, "ZeRO level over dp: 1 shards optimizer state, 2 also gradients, 3 also parameters (FSDP)"));
    v.push_back(F<bool>("parallel.sp", MT_REF(parallel, sp), 0, 0, "sequence parallelism (Megatron): in each tp group the norm and residual regions hold 1/tp of the tokens; all-gather before and reduce-scatter after the tp regions instead of all-reduces (needs parallel.tp > 1; same losses, those activations / tp)"));
    v.push_back(F<double>("parallel.bucket_mb", MT_REF(parallel, bucket_mb), 0.001, 4096, "gradient bucket size in MiB"));
    v.push_back(F<double>("parallel.timeout_s", MT_REF(parallel, timeout_s), 0.1, 1e9, "seconds a collective may wait before the job is aborted"));
    v.push_back(F<std::string>("parallel.backend", MT_REF(parallel, backend), 0, 0, "communication backend", {"auto", "mpi", "nccl"}));
    v.push_back(F<std::string>("parallel.allreduce", MT_REF(parallel, allreduce), 0, 0, "data-parallel all-reduce across hosts (MPI backend): hierarchical = reduce-scatter inside each host, all-reduce of 1/ranks-per-host across hosts, all-gather inside; auto = hierarchical when the dp group spans several hosts with the same number (> 1) of its ranks on each, else flat (one host: flat, unchanged)", {"auto", "flat", "hierarchical"}));
    v.push_back(F<int>("parallel.fake_hosts", MT_REF(parallel, fake_hosts), 0, 1 << 20, "testing: pretend the world's ranks sit on this many hosts (contiguous blocks of ranks) for parallel.allreduce (0 = real host names)"));
    v.push_back(F<std::string>("parallel.grad_reduce_dtype", MT_REF(parallel, grad_reduce_dtype), 0, 0, "dtype of the gradient all-reduce (bf16: CUDA only)", {"fp32", "bf16"}));
    // checkpoint
    v.push_back(F<int>("checkpoint.every", MT_REF(checkpoint, every), 0, 1 << 30, "steps between checkpoints (0 = off)"));
    v.push_back(F<int>("checkpoint.keep", MT_REF(checkpoint, keep), 1, 1 << 20, "newest complete checkpoints to keep"));
    v.push_back(F<std::string>("checkpoint.dir", MT_REF(checkpoint, dir), 0, 0, "checkpoint directory (default <run.dir>/checkpoints)"));
    v.push_back(F<std::string>("checkpoint.resume", MT_REF(checkpoint, resume), 0, 0, "'' or none (a fresh start) | auto | PATH (also `resume=...` on the command line)"));
    // run
    v.push_back(F<std::string>("run.dir", MT_REF(run, dir), 0, 0, "run directory (config, metrics.jsonl, summary.json)"));
    v.push_back(F<double>("run.peak_gflops", MT_REF(run, peak_gflops), 0, 1e9, "per-rank peak GFLOP/s for MFU (0 = measured sgemm on cpu; on cuda the H100 SXM dense peak of train.precision: bf16 989e3, fp32 67e3 (fp32 matmuls use CUBLAS_COMPUTE_32F, no TF32))"));
    v.push_back(F<bool>("run.tensorboard", MT_REF(run, tensorboard), 0, 0, "write TensorBoard event files under <run.dir>/tb"));
    v.push_back(F<std::string>("run.log_level", MT_REF(run, log_level), 0, 0, "log level", {"debug", "info", "warn", "error", "off"}));
    return v;
  }();
  return fields;
}

const Field* find_field(const std::string& path) {
  for (const auto& f : schema())
    if (f.path == path) return &f;
  return nullptr;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::vector<std::string> section_names() {
  std::vector<std::string> s;
  for (const auto& f : schema()) {
    auto sec = f.path.substr(0, f.path.find('.'));
    if (std::find(s.begin(), s.end(), sec) == s.end()) s.push_back(sec);
  }
  return s;
}

// "123", "-7", "+0x1F": what YAML reads as an integer (any size)
bool is_integer_literal(const std::string& t) {
  size_t i = t.find_first_not_of(" \t");
  if (i == std::string::npos) return false;
  if (t[i] == '-' || t[i] == '+') ++i;
  const bool hex = t.compare(i, 2, "0x") == 0;
  if (hex) i += 2;
  const size_t end = t.find_last_not_of(" \t") + 1;
  if (i >= end) return false;
  for (; i < end; ++i)
    if (!(hex ? std::isxdigit(static_cast<unsigned char>(t[i])) : std::isdigit(static_cast<unsigned char>(t[i]))))
      return false;
  return true;
}

// Duplicate keys in any mapping of the document (yaml-cpp keeps the last silently): an error
// naming both lines. `where` is the path of `n` ("" at the top).
void check_duplicate_keys(const YAML::Node& n, const std::string& where, const std::string& origin) {
  if (n.IsSequence()) {
    for (const auto& e : n) check_duplicate_keys(e, where, origin);
    return;
  }
  if (!n.IsMap()) return;
  std::map<std::string, int> seen;  // key -> 1-based line
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string key = it->first.IsScalar() ? it->first.Scalar() : std::string();
    const std::string path = where.empty() ? key : where + "." + key;
    const int line = it->first.Mark().line + 1;
    if (!key.empty()) {
      const auto [prev, fresh] = seen.emplace(key, line);
      if (!fresh) {
        throw Error(fmt::format("duplicate key '{}': first on line {}, again on line {}", path, prev->second, line))
            .with_file(origin).with_yaml(path, line)
            .with_hint("a key may appear once per section (YAML would silently keep the last); delete one of them");
      }
    }
    check_duplicate_keys(it->second, path, origin);
  }
}

Error unknown_key_error(const std::string& path) {
  Error e(fmt::format("unknown key '{}'", path));
  const std::string near = suggest_key(path);
  e.with_hint(near.empty() ? "`meshtrain train --help` lists the valid keys"
                           : fmt::format("did you mean '{}'?", near));
  return e;
}

// Set one field from a YAML scalar, turning conversion and range failures into Errors.
void set_field(Config& cfg, const Field& f, const YAML::Node& n) {
  if (f.kind == Kind::IntList) {
    const std::string shown = n.IsScalar() ? "'" + n.Scalar() + "'" : n.IsMap() ? "a mapping" : "a nested list";
    std::vector<int> v;
    try {
      if (n.IsMap()) throw YAML::Exception(YAML::Mark::null_mark(), "mapping");
      v = int_list(n);
    } catch (const YAML::Exception&) {
      throw Error(fmt::format("expected {}, got {}", kind_name(f.kind), shown))
          .with_hint(f.help + " (e.g. [3, 3]; on the command line also 3,3)");
    }
    for (int x : v) {
      if (x < f.min || x > f.max) {
        throw Error(fmt::format("list element {} out of range: each must be in [{}, {}]", x, f.min, f.max))
            .with_hint(f.help);
      }
    }
    f.set(cfg, n);
    return;
  }
  if (!n.IsScalar()) {
    throw Error(fmt::format("expected {}, got a {}", kind_name(f.kind), n.IsMap() ? "mapping" : n.IsSequence() ? "list" : "null"))
        .with_hint(f.help);
  }
  const std::string text = n.Scalar();
  try {
    f.set(cfg, n);
  } catch (const YAML::Exception&) {
    // an integer too large for the key's type is out of range, not "not an integer"
    if (f.kind == Kind::Int && is_integer_literal(text)) {
      throw Error(fmt::format("value {} out of range: must be in [{}, {}]{}", text, f.min, f.max,
                              f.auto_ok ? " or auto" : ""))
          .with_hint(f.help);
    }
    throw Error(fmt::format("expected {}{}, got '{}'", kind_name(f.kind), f.auto_ok ? " or auto" : "", text))
        .with_hint(f.help);
  }
  if ((f.kind == Kind::Int || f.kind == Kind::Float) && !(f.auto_ok && text == "auto")) {
    const std::string got = f.get(cfg);  // (a number that is auto's sentinel shows as auto: out of range)
    const double v = f.auto_ok && got == "auto" ? f.min - 1 : std::stod(got);
    if (!(v >= f.min && v <= f.max)) {  // also rejects NaN
      std::string range = std::isinf(f.max) ? fmt::format(">= {}", f.min) : fmt::format("in [{}, {}]", f.min, f.max);
      throw Error(fmt::format("value {} out of range: must be {}", text, range)).with_hint(f.help);
    }
  }
  if (f.kind == Kind::String && !f.choices.empty()) {
    const std::string v = n.as<std::string>();
    if (std::find(f.choices.begin(), f.choices.end(), v) == f.choices.end()) {
      std::string all;
      for (const auto& c : f.choices) all += (all.empty() ? "" : ", ") + c;
      throw Error(fmt::format("invalid value '{}'", v)).with_hint("valid values: " + all);
    }
  }
}

// The keys of mapping `m` under `prefix` ("train"); a mapping value whose path is a group of
// keys rather than a key ("train.distill" of train.distill.teacher, ...) is walked in turn.
void apply_keys(Config& cfg, const YAML::Node& m, const std::string& prefix, const std::string& origin) {
  for (auto kv = m.begin(); kv != m.end(); ++kv) {
    const std::string path = prefix + "." + kv->first.as<std::string>();
    const int line = kv->first.Mark().line + 1;
    const Field* f = find_field(path);
    if (!f && kv->second.IsMap()) {
      bool group = false;
      for (const auto& g : schema()) group |= g.path.rfind(path + ".", 0) == 0;
      if (group) {
        apply_keys(cfg, kv->second, path, origin);
        continue;
      }
    }
    if (!f) throw unknown_key_error(path).with_file(origin).with_yaml(path, line);
    try {
      set_field(cfg, *f, kv->second);
    } catch (Error& e) {
      e.with_file(origin).with_yaml(path, line);
      throw;
    }
    cfg.key_lines[path] = line;
    cfg.set_keys.insert(path);
  }
}

void apply_yaml(Config& cfg, const YAML::Node& root, const std::string& origin) {
  if (root.IsNull()) return;
  if (!root.IsMap()) {
    throw Error("the top level must be a mapping of sections").with_file(origin)
        .with_hint("sections: model, train, optim, data, parallel, checkpoint, run");
  }
  const auto sections = section_names();
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string sec = it->first.as<std::string>();
    const int sec_line = it->first.Mark().line + 1;
    if (std::find(sections.begin(), sections.end(), sec) == sections.end()) {
      std::string best;
      size_t bd = 3;
      for (const auto& s : sections) {
        size_t d = edit_distance(sec, s);
        if (d < bd) bd = d, best = s;
      }
      Error e(fmt::format("unknown section '{}'", sec));
      e.with_file(origin).with_yaml(sec, sec_line);
      e.with_hint(best.empty() ? "valid sections: model, train, optim, data, parallel, checkpoint, run"
                               : fmt::format("did you mean '{}'?", best));
      throw e;
    }
    if (it->second.IsNull()) continue;
    if (!it->second.IsMap()) {
      throw Error("a section must be a mapping of key: value").with_file(origin).with_yaml(sec, sec_line);
    }
    apply_keys(cfg, it->second, sec, origin);
  }
}

Error at_key(const Config& cfg, const std::string& path, const std::string& msg, const std::string& hint) {
  Error e(msg);
  auto it = cfg.key_lines.find(path);
  if (!cfg.source_file.empty() && it != cfg.key_lines.end()) e.with_file(cfg.source_file);
  e.with_yaml(path, it != cfg.key_lines.end() ? it->second : -1);
  if (!hint.empty()) e.with_hint(hint);
  return e;
}

// The keys whose values are filesystem paths: a leading `~` (the value `~` or `~/...`) is
// expanded from $HOME here, once, after the file and the overrides, so every consumer and
// the resolved config.yaml see the real path (YAML and `section.key=~/x` on a command line
// reach us unexpanded: the shell expands `~` only at the start of a word). `~user/...` is
// left as written. checkpoint.resume's other values ("", auto) do not start with `~`.
void expand_home_paths(Config& cfg) {
  const std::pair<const char*, std::string*> paths[] = {{"run.dir", &cfg.run.dir},
                                                        {"data.path", &cfg.data.path},
                                                        {"checkpoint.dir", &cfg.checkpoint.dir},
                                                        {"checkpoint.resume", &cfg.checkpoint.resume},
                                                        {"train.distill.teacher", &cfg.train.distill.teacher}};
  for (const auto& [key, value] : paths) {
    std::string& v = *value;
    if (v != "~" && v.rfind("~/", 0) != 0) continue;
    const char* home = std::getenv("HOME");
    if (!home || !*home) {
      throw at_key(cfg, key, fmt::format("{} = '{}' starts with ~ but $HOME is not set", key, v),
                   fmt::format("set HOME, or write {} as an absolute path", key));
    }
    std::string h = home;
    while (h.size() > 1 && h.back() == '/') h.pop_back();  // HOME=/home/u/ gives /home/u/x, not //x
    v = v == "~" ? h : (h == "/" ? "" : h) + v.substr(1);
  }
}

}  // namespace

std::vector<std::pair<std::string, std::string>> config_keys() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& f : schema()) out.emplace_back(f.path, f.help);
  return out;
}

std::string suggest_key(const std::string& key) {
  std::string best;
  size_t best_d = std::max<size_t>(3, key.size() / 3);
  for (const auto& f : schema()) {
    size_t d = edit_distance(key, f.path);
    // Also compare the key part alone, so `model.nlayer` and `train.n_layer` both find it.
    const auto dot = key.find('.');
    const std::string k = dot == std::string::npos ? key : key.substr(dot + 1);
    d = std::min(d, edit_distance(k, f.path.substr(f.path.find('.') + 1)) + 1);
    if (d < best_d) best_d = d, best = f.path;
  }
  return best;
}

std::string nearest_word(const std::string& word, const std::vector<std::string>& choices) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 2) + 1;
  for (const auto& c : choices) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

void apply_override(Config& cfg, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw Error(fmt::format("override '{}' is not of the form section.key=value", assignment))
        .with_hint("e.g. train.steps=100");
  }
  std::string path = assignment.substr(0, eq);
  if (path == "resume") path = "checkpoint.resume";  // the documented shorthand `resume=auto`
  const std::string value = assignment.substr(eq + 1);
  const Field* f = find_field(path);
  const std::string origin = fmt::format("command-line override '{}'", assignment);
  if (!f) throw unknown_key_error(path).with_file(origin);
  YAML::Node n;
  try {
    n = YAML::Load(value.empty() ? "''" : value);
  } catch (const YAML::Exception& ex) {
    throw Error("cannot parse the value").with_file(origin).with_library(ex.what());
  }
  // keep strings verbatim (also `~`, YAML's null: `run.dir=~` means the home directory)
  if (f->kind == Kind::String && (n.IsScalar() || n.IsNull())) n = YAML::Node(value);
  try {
    set_field(cfg, *f, n);
  } catch (Error& e) {
    e.with_file(origin).with_yaml(path);
    throw;
  }
  cfg.key_lines.erase(path);
  cfg.set_keys.insert(path);
  cfg.overrides.push_back(assignment);
}

void validate_config(const Config& c, bool model_final) {
  if (model_final && c.model.n_embd % c.model.n_head != 0) {
    throw at_key(c, "model.n_embd",
                 fmt::format("n_embd = {} is not divisible by n_head = {}", c.model.n_embd, c.model.n_head),
                 "choose n_embd as a multiple of n_head (head size = n_embd / n_head)");
  }
  // documents mode sizes the global batch by data.batch_tokens: batch_size does not apply
  if (c.data.mode != "documents" && c.train.micro_batch != kAutoMicroBatch && c.train.micro_batch > c.train.batch_size) {
    throw at_key(c, "train.micro_batch",
                 fmt::format("micro_batch = {} is larger than batch_size = {}", c.train.micro_batch, c.train.batch_size),
                 "micro_batch is per rank and per micro-step; batch_size is the global batch per step");
  }
  if (c.data.source == "hdf5" && c.data.path.empty()) {
    throw at_key(c, "data.source", "data.source is hdf5 but data.path is empty",
                 "set data.path to a directory made by `meshtrain prep`");
  }
  if (c.data.mode != "concat" && c.data.source != "hdf5") {
    throw at_key(c, "data.mode",
                 fmt::format("data.mode {} needs a dataset with document boundaries (data.source: hdf5)", c.data.mode),
                 "build one with `meshtrain prep`, or use data.mode: concat");
  }
  if (c.data.source == "markov" && !c.data.path.empty()) {
    throw at_key(c, "data.path",
                 fmt::format("data.path = '{}' is set but data.source is markov (the built-in synthetic language, "
                             "which reads no files): the dataset would be ignored", c.data.path),
                 "set data.source: hdf5 to train on the dataset (a data.path given without data.source implies it), "
                 "or remove data.path");
  }
  // packed rows hold several documents: without an end-of-document token the model could not
  // learn where one ends (documents mode pads each on its own row, so the token is optional)
  if (c.data.mode == "packed" && c.data.eod_token < 0) {
    const auto mode_line = c.key_lines.find("data.mode");
    const std::string where = mode_line != c.key_lines.end() && !c.source_file.empty()
                                  ? fmt::format(" ({}:{})", c.source_file, mode_line->second)
                                  : "";
    throw at_key(c, "data.eod_token", fmt::format("data.mode packed{} needs data.eod_token (the end-of-document token "
                                                  "id), which is -1 (none)", where),
                 "set data.eod_token to the id your tokenizer uses to end a document (< model.vocab_size), or use "
                 "data.mode: documents");
  }
  if (model_final && c.data.eod_token >= c.model.vocab_size) {
    throw at_key(c, "data.eod_token",
                 fmt::format("eod_token = {} is not below model.vocab_size = {}", c.data.eod_token, c.model.vocab_size),
                 "the end-of-document token must be an id the model knows");
  }
  if (model_final && c.data.mode == "documents" && c.data.batch_tokens > 0 && c.data.batch_tokens < c.model.seq_len) {
    throw at_key(c, "data.batch_tokens",
                 fmt::format("batch_tokens = {} is smaller than model.seq_len = {}", c.data.batch_tokens, c.model.seq_len),
                 "a global batch must hold at least one full-length document");
  }
  if (model_final && c.data.source == "markov") {
    const int mv = c.data.markov_vocab > 0 ? c.data.markov_vocab : c.model.vocab_size;
    if (mv > c.model.vocab_size) {
      throw at_key(c, "data.markov_vocab",
                   fmt::format("markov_vocab = {} exceeds model.vocab_size = {}", mv, c.model.vocab_size),
                   "the language's tokens must be ids the model knows");
    }
    const double entries = std::pow(static_cast<double>(mv), c.data.markov_order + 1);
    if (entries > 2e8) {
      throw at_key(c, "data.markov_order",
                   fmt::format("the Markov language with {} tokens and order {} has {:.3g} transition entries",
                               mv, c.data.markov_order, entries),
                   "set data.markov_vocab (e.g. 256) or a smaller data.markov_order");
    }
  }
  if (c.train.device != "cpu" && c.train.device != "cuda" && c.train.device.rfind("cuda:", 0) != 0) {
    throw at_key(c, "train.device", fmt::format("unknown device '{}'", c.train.device), "use cpu or cuda");
  }
  if (c.parallel.sp && c.parallel.tp < 2) {
    throw at_key(c, "parallel.sp",
                 fmt::format("parallel.sp = true needs parallel.tp > 1 (it is {}): sequence parallelism splits the "
                             "tokens of a tensor-parallel group", c.parallel.tp),
                 "set parallel.tp to 2 or more, or parallel.sp=false");
  }
  // sp splits the rows x seq_len tokens of every micro-batch into tp equal parts: concat and
  // packed rows are seq_len long (a micro-batch may have fewer rows), documents rows are not
  if (c.parallel.sp && model_final && c.model.seq_len % c.parallel.tp != 0) {
    throw at_key(c, "parallel.sp",
                 fmt::format("parallel.sp splits the tokens of a micro-batch into parallel.tp = {} equal parts, but "
                             "model.seq_len = {} is not a multiple of it", c.parallel.tp, c.model.seq_len),
                 "choose a model.seq_len that parallel.tp divides, or parallel.sp=false");
  }
  if (c.parallel.sp && c.data.mode == "documents") {
    throw at_key(c, "parallel.sp",
                 "parallel.sp is not built for data.mode documents (rows as long as a micro-batch's longest "
                 "document: their tokens need not split into parallel.tp equal parts)",
                 "use data.mode packed (rows of model.seq_len) or concat, or parallel.sp=false");
  }
  if (c.parallel.sp && c.train.device != "cpu") {
    throw at_key(c, "parallel.sp", "parallel.sp is not tested on train.device = cuda yet",
                 "use train.device=cpu, or parallel.sp=false");
  }
  // pipeline: the schedule and the virtual stages agree (split_layers and check_pipeline in
  // parallel/pipeline/ check what needs the model or the micro-batch count)
  if (c.parallel.pp_schedule == "interleaved" && c.parallel.pp_virtual < 2) {
    throw at_key(c, "parallel.pp_virtual",
                 fmt::format("parallel.pp_schedule = interleaved needs parallel.pp_virtual >= 2 virtual stages per "
                             "rank (it is {})", c.parallel.pp_virtual),
                 "set parallel.pp_virtual=2 (or more), or parallel.pp_schedule=1f1b");
  }
  if (c.parallel.pp_schedule != "interleaved" && c.parallel.pp_virtual > 1) {
    throw at_key(c, "parallel.pp_virtual",
                 fmt::format("parallel.pp_virtual = {} needs parallel.pp_schedule = interleaved (it is {})",
                             c.parallel.pp_virtual, c.parallel.pp_schedule),
                 "set parallel.pp_schedule=interleaved, or parallel.pp_virtual=1");
  }
  if (!c.parallel.pp_layers.empty() && static_cast<int>(c.parallel.pp_layers.size()) != c.parallel.pp) {
    throw at_key(c, "parallel.pp_layers",
                 fmt::format("parallel.pp_layers has {} entries but parallel.pp = {} (one layer count per stage)",
                             c.parallel.pp_layers.size(), c.parallel.pp),
                 "give one entry per stage, or parallel.pp_layers=[] to balance the stages by cost");
  }
  if (c.train.distill.temperature <= 0) {
    throw at_key(c, "train.distill.temperature",
                 fmt::format("train.distill.temperature = {} must be > 0 (it divides the logits)",
                             c.train.distill.temperature),
                 "use 1 (the plain distributions) or more (softer ones; 2 is common)");
  }
  if (!c.train.distill.teacher.empty() && c.parallel.pp > 1) {
    throw at_key(c, "train.distill.teacher",
                 fmt::format("train.distill.teacher is not supported with parallel.pp = {} (the teacher runs "
                             "whole on each rank of the tp group, beside a student split into pipeline stages)",
                             c.parallel.pp),
                 "distill at parallel.pp=1 (dp and tp are supported), or remove train.distill.teacher");
  }
  if (c.train.device == "cpu" && c.train.precision == "bf16") {
    throw at_key(c, "train.precision", "train.precision = bf16 needs train.device = cuda (the CPU kernels are fp32)",
                 "use train.precision=fp32 (or auto) on the CPU");
  }
  if (c.train.device == "cpu" && c.parallel.grad_reduce_dtype == "bf16") {
    throw at_key(c, "parallel.grad_reduce_dtype",
                 "parallel.grad_reduce_dtype = bf16 needs train.device = cuda (the CPU kernels have no fp32 <-> bf16 cast for the gradients)",
                 "use parallel.grad_reduce_dtype=fp32 on the CPU");
  }
}

Config parse_config(const std::string& text, const std::string& origin, const std::vector<std::string>& overrides) {
  Config cfg;
  cfg.source_file = origin;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& ex) {
    Error e("malformed YAML");
    e.with_file(origin).with_yaml("", ex.mark.line + 1).with_library(ex.msg);
    e.with_hint("check indentation and `key: value` syntax near that line");
    throw e;
  }
  check_duplicate_keys(root, "", origin);
  apply_yaml(cfg, root, origin);
  const bool yaml_source = cfg.set_keys.count("data.source") > 0;
  bool override_path = false, override_source = false;
  for (const auto& o : overrides) {
    apply_override(cfg, o);
    const std::string key = o.substr(0, o.find('='));
    override_path |= key == "data.path";
    override_source |= key == "data.source";
  }
  // data.path alone names a prepared dataset: the source is hdf5 unless data.source is given
  // at the same level (the YAML for a YAML path, an override for an override path); an
  // explicit markov with a path is a contradiction validate_config refuses
  if (!cfg.data.path.empty() && cfg.data.source == "markov" && !override_source && (override_path || !yaml_source)) {
    cfg.data.source = "hdf5";
  }
  if (cfg.checkpoint.resume == "none") cfg.checkpoint.resume = "";  // an explicit fresh start
  expand_home_paths(cfg);
  validate_config(cfg, /*model_final=*/cfg.model.init_from.empty());
  return cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw Error("is a directory, not a config file").with_file(path)
        .with_hint("pass a YAML file, e.g. examples/tiny.yaml");
  }
  std::ifstream in(path);
  if (!in) {
    throw Error("cannot open the config file").with_file(path)
        .with_hint("check the path; examples/tiny.yaml is a working config");
  }
  std::stringstream ss;
  ss << in.rdbuf();
  // an empty or comments-only file would train the built-in defaults: refuse (a wrong path or
  // a truncated copy loses a run); defaults on purpose are one explicit line away
  bool empty = false;
  try {
    empty = YAML::Load(ss.str()).IsNull();
  } catch (const YAML::Exception&) {  // malformed: parse_config names the line
  }
  if (empty) {
    throw Error("the config file is empty (no sections, only blanks or comments): it would train the built-in "
                "defaults").with_file(path)
        .with_hint("check the path; to train the defaults on purpose write one section, e.g. `train: {}`, and set the "
                   "rest with section.key=value overrides");
  }
  return parse_config(ss.str(), path, overrides);
}

int auto_micro_batch(const Config& c, int dp, int pp) {
  dp = std::max(1, dp);
  pp = std::max(1, pp);
  const bool even = c.data.mode == "concat" && c.data.schedule != "dynamic";  // the trainer's check_batch_split
  if (even && c.train.batch_size % dp != 0) {
    throw at_key(c, "train.batch_size",
                 fmt::format("train.micro_batch = auto splits train.batch_size = {} over dp = {} replicas, but dp "
                             "does not divide it", c.train.batch_size, dp),
                 fmt::format("choose train.batch_size as a multiple of dp (e.g. {}), or data.schedule=dynamic",
                             (c.train.batch_size + dp - 1) / dp * dp));
  }
  int64_t rows = c.train.batch_size;
  if (c.data.mode == "documents") {  // micro_batch x seq_len positions per micro-batch
    const int64_t tokens = c.data.batch_tokens > 0 ? c.data.batch_tokens
                                                   : static_cast<int64_t>(c.train.batch_size) * c.model.seq_len;
    rows = tokens / std::max(1, c.model.seq_len);
  }
  const int per = static_cast<int>(std::max<int64_t>(1, rows / dp));
  if (pp == 1) return per;
  for (int m = per; m >= 1; --m) {
    if (per % m != 0) continue;
    const int n = per / m;
    if (n < pp) continue;
    if (c.parallel.pp_schedule == "interleaved" && n % pp != 0) continue;
    return m;
  }
  return 1;  // fewer rows than stages: check_pipeline names the keys
}

void resolve_micro_batch(Config& cfg, int world) {
  if (cfg.train.micro_batch != kAutoMicroBatch) return;
  const int tp = std::max(1, cfg.parallel.tp), pp = std::max(1, cfg.parallel.pp);
  const int dp = cfg.parallel.dp > 0 ? cfg.parallel.dp : std::max(1, world / (tp * pp));
  cfg.train.micro_batch = auto_micro_batch(cfg, dp, pp);
  cfg.train.micro_batch_auto = true;
}

std::string config_to_yaml(const Config& cfg) {
  std::string out = "# resolved meshtrain config";
  if (!cfg.source_file.empty()) out += " (from " + cfg.source_file + ")";
  out += "\n";
  for (const auto& o : cfg.overrides) out += "# override: " + o + "\n";
  std::string current;
  for (const auto& f : schema()) {
    const auto dot = f.path.find('.');
    const std::string sec = f.path.substr(0, dot);
    if (sec != current) {
      out += sec + ":\n";
      current = sec;
    }
    out += "  " + f.path.substr(dot + 1) + ": " + f.get(cfg);
    if (f.path == "train.micro_batch" && cfg.train.micro_batch_auto) out += "  # auto";
    out += "\n";
  }
  return out;
}

}  // namespace mt::core
