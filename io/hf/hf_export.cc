// What: export of a checkpoint as a Hugging Face model directory (see hf_export.h).
#include "io/hf/hf_export.h"

#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "io/checkpoint.h"
#include "io/checkpoint_pipeline.h"
#include "io/h5_util.h"
#include "io/hf/hf_import.h"
#include "io/hf/hf_names.h"
#include "io/hf/safetensors.h"
#include "io/metrics.h"
#include "io/text/tokenizer.h"
#include "parallel/grad_sync.h"
#include "parallel/models/registry.h"

namespace mt::io::hf {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The old (stage, tp rank)s' shards (dp replica 0's), open for hyperslab reads of "params".
class ShardSlices {
 public:
  ShardSlices(const std::string& ckpt, const json& manifest, const CheckpointPipeline& pipe) {
    const auto& lay = manifest.at("layout");
    const int world = lay.at("world").get<int>(), dp = lay.at("dp").get<int>();
    tp_ = lay.at("tp").get<int>();
    pp_ = pipe.pp;
    if (world != dp * pp_ * tp_ || manifest.at("shards").size() != static_cast<size_t>(world)) {
      throw core::Error(fmt::format("the manifest's layout (world {} = dp {} x pp {} x tp {}) does not match its {} "
                                    "shards", world, dp, pp_, tp_, manifest.at("shards").size()))
          .with_file(ckpt + "/manifest.json");
    }
    // ZeRO-3 at dp > 1: each dp rank holds its owned ranges of the slice (in order), so a
    // tensor is read from every replica's pieces
    sharded_ = lay.at("zero").get<int>() == 3 && dp > 1;
    dp_ = sharded_ ? dp : 1;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    for (int st = 0; st < pp_; ++st) {
      for (int t = 0; t < tp_; ++t) {
        for (int d = 0; d < dp_; ++d) {
          const auto& s = manifest.at("shards").at(pipe.rank_of(d, st, t, tp_));
          const std::string path = ckpt + "/" + s.at("file").get<std::string>();
          files_.push_back(path);
          handles_.push_back(std::make_unique<H5Handle>(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose));
          h5check(handles_.back()->id, "H5Fopen", path);
          datasets_.push_back(std::make_unique<H5Handle>(H5Dopen2(handles_.back()->id, "params", H5P_DEFAULT), H5Dclose));
          h5check(datasets_.back()->id, "H5Dopen2(params)", path);
          std::vector<std::pair<int64_t, int64_t>> pieces;  // (flat begin, flat end) in storage order
          if (sharded_) {
            H5Handle rd{H5Dopen2(handles_.back()->id, "optim_ranges", H5P_DEFAULT), H5Dclose};
            h5check(rd.id, "H5Dopen2(optim_ranges)", path);
            H5Handle rs{H5Dget_space(rd.id), H5Sclose};
            hsize_t n[1] = {0};
            H5Sget_simple_extent_dims(rs.id, n, nullptr);
            std::vector<int64_t> flat(n[0]);
            if (n[0] > 0) h5check(H5Dread(rd.id, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, flat.data()), "H5Dread", path);
            for (size_t i = 0; i + 1 < flat.size(); i += 2) pieces.emplace_back(flat[i], flat[i + 1]);
          }
          pieces_.push_back(std::move(pieces));
        }
      }
    }
  }
  int tp() const { return tp_; }
  // elements [offset, offset + n) of the flat parameters of old stage st's tp rank t
  void read(int st, int t, int64_t offset, int64_t n, float* out) const {
    const int first = (st * tp_ + t) * dp_;  // its first file
    if (!sharded_) return read_stored(static_cast<size_t>(first), offset, n, out);
    int64_t found = 0;
    for (int d = 0; d < dp_; ++d) {
      const size_t k = static_cast<size_t>(first + d);
      int64_t at = 0;  // where the piece starts in the stored parameters
      for (const auto& [b, e] : pieces_[k]) {
        const int64_t lo = std::max(b, offset), hi = std::min(e, offset + n);
        if (lo < hi) {
          read_stored(k, at + (lo - b), hi - lo, out + (lo - offset));
          found += hi - lo;
        }
        at += e - b;
      }
    }
    if (found != n) {
      throw core::Error(fmt::format("the ZeRO-3 shards of stage {} tp rank {} hold {} of the {} elements at {}", st, t,
                                    found, n, offset))
          .with_file(files_[static_cast<size_t>(first)])
          .with_hint("the checkpoint was written by another model or meshtrain version");
    }
  }

 private:
  // elements [offset, offset + n) of what file k stores
  void read_stored(size_t k, int64_t offset, int64_t n, float* out) const {
    const hid_t ds = datasets_[k]->id;
    const std::string& path = files_[k];
    H5Handle space{H5Dget_space(ds), H5Sclose};
    hsize_t dims[1] = {0};
    H5Sget_simple_extent_dims(space.id, dims, nullptr);
    if (offset < 0 || static_cast<hsize_t>(offset + n) > dims[0]) {
      throw core::Error(fmt::format("the shard holds {} parameters, the manifest's model needs {}", dims[0], offset + n))
          .with_file(path).with_hint("the checkpoint was written by another model or meshtrain version");
    }
    hsize_t start[1] = {static_cast<hsize_t>(offset)}, count[1] = {static_cast<hsize_t>(n)};
    h5check(H5Sselect_hyperslab(space.id, H5S_SELECT_SET, start, nullptr, count, nullptr), "H5Sselect_hyperslab", path);
    H5Handle mem{H5Screate_simple(1, count, nullptr), H5Sclose};
    h5check(H5Dread(ds, H5T_NATIVE_FLOAT, mem.id, space.id, H5P_DEFAULT, out), "H5Dread", path);
  }

  int tp_ = 1, dp_ = 1, pp_ = 1;
  bool sharded_ = false;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> pieces_;  // per file
  std::vector<std::string> files_;
  std::vector<std::unique_ptr<H5Handle>> handles_, datasets_;
};

// bos / eos ids: those of the Hugging Face model it was imported from (if still readable),
// else the dataset's end-of-document token as eos.
json special_ids(const core::Config& cfg) {
  json ids = json::object();
  if (cfg.model.init_from.rfind("hf:", 0) == 0) {
    try {
      const json src = json::parse(read_file(cfg.model.init_from.substr(3) + "/config.json"));
      for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id"})
        if (src.contains(k) && !src[k].is_null()) ids[k] = src[k];
    } catch (const std::exception&) {
    }
  }
  if (!ids.contains("eos_token_id") && cfg.data.eod_token >= 0) ids["eos_token_id"] = cfg.data.eod_token;
  return ids;
}

// The tokenizer.json of the data the model was trained on, else of the Hugging Face model it
// was imported from; "" if neither has one.
std::string source_tokenizer(const core::Config& cfg) {
  std::error_code ec;
  for (const std::string& dir : {cfg.data.source == "hdf5" ? cfg.data.path : std::string(),
                                 cfg.model.init_from.rfind("hf:", 0) == 0 ? cfg.model.init_from.substr(3) : std::string()})
    if (!dir.empty() && fs::is_regular_file(fs::path(dir) / "tokenizer.json", ec))
      return (fs::path(dir) / "tokenizer.json").string();
  return "";
}

json hf_config_json(const core::Config& cfg, const parallel::Architecture& arch, const std::string& dtype,
                    const json& ids) {
  const core::ModelConfig& m = cfg.model;
  json j;
  j["architectures"] = {hf_architecture_class(arch.name())};
  j["model_type"] = hf_model_type(arch.name());
  j["vocab_size"] = m.vocab_size;
  if (arch.name() == "gpt2") {
    j.update({{"n_layer", m.n_layer}, {"n_head", m.n_head}, {"n_embd", m.n_embd}, {"n_positions", m.seq_len},
              {"n_inner", nullptr}, {"activation_function", "gelu_new"}, {"layer_norm_epsilon", 1e-5},
              {"resid_pdrop", 0.0}, {"embd_pdrop", 0.0}, {"attn_pdrop", 0.0}, {"scale_attn_weights", true},
              {"scale_attn_by_inverse_layer_idx", false}, {"reorder_and_upcast_attn", false},
              {"tie_word_embeddings", true}, {"initializer_range", m.init_std}});
  } else {
    const auto specs = arch.param_specs();
    int64_t ffn = 0, kv_rows = 0;
    for (const auto& s : specs) {
      if (s.name == "h0.mlp.gate_up.w") ffn = s.full_shape[0] / 2;
      if (s.name == "h0.attn.qkv.w") kv_rows = (s.full_shape[0] - m.n_embd) / 2;
    }
    const int hs = m.n_embd / m.n_head;
    j.update({{"num_hidden_layers", m.n_layer}, {"num_attention_heads", m.n_head},
              {"num_key_value_heads", kv_rows / hs}, {"hidden_size", m.n_embd}, {"head_dim", hs},
              {"intermediate_size", ffn}, {"max_position_embeddings", m.seq_len}, {"rms_norm_eps", m.norm_eps},
              {"rope_theta", m.rope_theta}, {"rope_scaling", nullptr},
              {"rope_parameters", {{"rope_theta", m.rope_theta}, {"rope_type", "default"}}}, {"hidden_act", "silu"},
              {"attention_bias", false}, {"attention_dropout", 0.0}, {"mlp_bias", false}, {"pretraining_tp", 1},
              {"tie_word_embeddings", m.tie_embeddings}, {"initializer_range", m.init_std}});
  }
  j["torch_dtype"] = dtype;  // transformers 4
  j["dtype"] = dtype;        // transformers 5
  j["use_cache"] = true;
  j.update(ids);
  return j;
}

// Moves `tmp` to `out` (replacing an existing `out` only with force).
void publish(const std::string& tmp, const std::string& out, bool force) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_empty(out, ec) && !force) MT_FAIL("{} became non-empty during the export", out);
    const std::string old = out + fmt::format(".old-{}", ::getpid());
    fs::rename(out, old, ec);
    if (ec) throw core::Error("cannot move the old export aside").with_file(out).with_library(ec.message());
    fs::rename(tmp, out, ec);
    if (ec) throw core::Error("cannot rename the export into place").with_file(out).with_library(ec.message());
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp, out, ec);
    if (ec) throw core::Error("cannot rename the export into place").with_file(out).with_library(ec.message());
  }
  const fs::path parent = fs::absolute(out).parent_path();
  fsync_path(parent.string());
}

}  // namespace

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::exists(fs::path(path) / "manifest.json", ec)) {
    if (!fs::exists(fs::path(path) / "COMPLETE", ec))
      throw core::Error("incomplete checkpoint: no COMPLETE marker (its write did not finish)").with_file(path);
    if (const std::string bad = verify_checkpoint(path); !bad.empty())
      throw core::Error("the checkpoint does not verify: " + bad).with_file(path);
    return path;
  }
  std::vector<std::string> found = list_checkpoints(path);
  if (found.empty()) found = list_checkpoints(path + "/checkpoints");
  for (const auto& c : found) {
    const std::string bad = verify_checkpoint(c);
    if (bad.empty()) return c;
    core::log::warn("skipping checkpoint {}: {}", c, bad);
  }
  throw core::Error("no valid checkpoint found").with_file(path)
      .with_hint("pass a checkpoint (step_<N>), a checkpoints/ directory or a run directory");
}

ExportResult export_hf(const ExportOptions& opt) {
  if (opt.dtype != "float32" && opt.dtype != "bfloat16")
    throw core::Error(fmt::format("--dtype {} is not float32 or bfloat16", opt.dtype));
  if (!opt.quantize.empty() && opt.quantize != "int8")
    throw core::Error(fmt::format("--quantize {}: the only quantization is int8", opt.quantize));
  const bool int8 = opt.quantize == "int8";
  if (int8 && opt.dtype != "float32") {
    throw core::Error(fmt::format("--quantize int8 with --dtype {}: an int8 export stores int8 weights with float32 "
                                  "scales and float32 biases and norms", opt.dtype))
        .with_hint("drop --dtype (or pass --dtype float32) with --quantize int8");
  }
  if (opt.out.empty()) throw core::Error("--out is required");
  std::error_code ec;
  if (fs::exists(opt.out, ec) && (!fs::is_directory(opt.out, ec) || !fs::is_empty(opt.out, ec)) && !opt.force) {
    throw core::Error("the output directory exists and is not empty").with_file(opt.out)
        .with_hint("choose another --out, or --force to replace it");
  }
  ExportResult res;
  res.checkpoint = resolve_checkpoint(opt.checkpoint);
  const json manifest = read_manifest(res.checkpoint);
  if (!manifest.contains("config"))
    throw core::Error("the manifest has no resolved config (a checkpoint from an older meshtrain)").with_file(res.checkpoint + "/manifest.json");
  const core::Config cfg = core::parse_config(manifest.at("config").get<std::string>(), res.checkpoint + "/manifest.json");
  const auto arch = parallel::make_architecture(cfg.model);
  const auto mapping = hf_mapping(*arch);
  const auto& lay = manifest.at("layout");
  const int old_tp = lay.at("tp").get<int>(), old_dp = lay.at("dp").get<int>();
  const auto specs = arch->param_specs();
  const bool aligned = lay.at("zero").get<int>() >= 2 && old_dp > 1;  // ZeRO-2/3: layers aligned
  // each stage's own flat layout; a parameter is read from the first stage holding it (a tied
  // embedding: the first stage's copy)
  const int n_layer = cfg.model.n_layer;
  const CheckpointPipeline pipe =
      CheckpointPipeline::from_manifest(manifest, n_layer, res.checkpoint + "/manifest.json");
  std::vector<std::vector<parallel::ParamInfo>> oinfo(static_cast<size_t>(pipe.pp));
  std::vector<std::vector<int>> olocal(static_cast<size_t>(pipe.pp));  // per stage: full index -> its index
  for (int st = 0; st < pipe.pp; ++st) {
    const parallel::StageLayers layers = pipe.stage(st);
    int held = 0;
    for (const auto& sp : specs) olocal[static_cast<size_t>(st)].push_back(layers.holds(sp, n_layer) ? held++ : -1);
    oinfo[static_cast<size_t>(st)] = parallel::layout_params(parallel::stage_specs(specs, layers, n_layer), old_tp,
                                                             parallel::GradSync::flat_alignment(old_dp), nullptr, aligned);
  }
  const ShardSlices shards(res.checkpoint, manifest, pipe);

  // a fresh temporary directory beside `out`, removed unless it is published
  const std::string tmp = fs::absolute(opt.out).lexically_normal().string() + fmt::format(".tmp-{}", ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) throw core::Error("cannot create the output directory").with_file(tmp).with_library(ec.message());
  try {
    std::vector<TensorPlan> plan;
    for (const auto& p : mapping) {
      for (const auto& pc : p.pieces) {
        if (int8 && pc.shape.size() == 2) {
          plan.push_back({pc.tensor, pc.shape, "I8"});
          plan.push_back({pc.tensor + ".scale", pc.transposed ? std::vector<int64_t>{1, pc.rows}
                                                              : std::vector<int64_t>{pc.rows, 1}, "F32"});
        } else {
          plan.push_back({pc.tensor, pc.shape, ""});
        }
      }
    }
    SafetensorsWriter writer(tmp, plan, opt.dtype == "float32" ? "F32" : "BF16", opt.max_shard_bytes);
    std::vector<float> full, slice, piece, scales;
    std::vector<int8_t> q;
    for (const HfParam& hp : mapping) {
      const int st = pipe.holder(specs[static_cast<size_t>(hp.index)], n_layer);
      const size_t sst = static_cast<size_t>(st);
      const parallel::ParamInfo& o = oinfo[sst][static_cast<size_t>(olocal[sst][static_cast<size_t>(hp.index)])];
      const int64_t R = parallel::shape_rows(o.full_shape), C = parallel::shape_cols(o.full_shape);
      const int64_t lrows = parallel::shape_rows(o.local_shape), lcols = parallel::shape_cols(o.local_shape);
      full.assign(static_cast<size_t>(R * C), 0.0f);
      slice.resize(static_cast<size_t>(o.numel));
      // the old slices into our full tensor (replicas hold equal values; padding is dropped)
      for (int t = 0; t < (o.partition.replicated_over_tp() ? 1 : old_tp); ++t) {
        shards.read(st, t, o.offset, o.numel, slice.data());
        for (int64_t r = 0; r < lrows; ++r) {
          const parallel::Partition::Place at = o.partition.to_full(o.full_shape, old_tp, t, r);
          if (at.row >= R) continue;
          std::copy(slice.begin() + r * lcols, slice.begin() + (r + 1) * lcols, full.begin() + at.row * C + at.col);
        }
      }
      int64_t row0 = 0;
      for (const HfPiece& pc : hp.pieces) {
        const float* src = full.data() + row0 * C;
        res.fp32_bytes += pc.rows * C * 4;
        if (int8 && pc.shape.size() == 2) {  // per output channel (our row): scale = max|w| / 127
          scales.assign(static_cast<size_t>(pc.rows), 0.0f);
          q.resize(static_cast<size_t>(pc.rows * C));
          for (int64_t r = 0; r < pc.rows; ++r) {
            float mx = 0.0f;
            for (int64_t c = 0; c < C; ++c) mx = std::max(mx, std::fabs(src[r * C + c]));
            const float sc = mx > 0 ? mx / 127.0f : 1.0f;
            scales[static_cast<size_t>(r)] = sc;
            for (int64_t c = 0; c < C; ++c) {
              const float v = std::nearbyint(src[r * C + c] / sc);
              // HF (in, out) for a transposed piece: element (c, r)
              const int64_t at = pc.transposed ? c * pc.rows + r : r * C + c;
              q[static_cast<size_t>(at)] = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, v)));
            }
          }
          writer.write_i8(pc.tensor, q.data());
          writer.write(pc.tensor + ".scale", scales.data());
          res.bytes += pc.rows * C + pc.rows * 4;
          res.tensors += 2;
          row0 += pc.rows;
          continue;
        }
        if (pc.transposed) {  // HF (in, out) = ours (out, in) transposed
          piece.resize(static_cast<size_t>(pc.rows * C));
          for (int64_t r = 0; r < pc.rows; ++r)
            for (int64_t c = 0; c < C; ++c) piece[static_cast<size_t>(c * pc.rows + r)] = src[r * C + c];
          src = piece.data();
        }
        writer.write(pc.tensor, src);
        res.bytes += pc.rows * C * (opt.dtype == "float32" ? 4 : 2);
        ++res.tensors;
        row0 += pc.rows;
      }
    }
    writer.finish();
    res.files = writer.files();
    if (writer.num_shards() > 1) res.files.push_back("model.safetensors.index.json");
    // the tokenizer the model was trained with (the dataset's, from prep --tokenizer, or the
    // Hugging Face model's it was imported from) travels with it, so `generate hf:OUT` and
    // transformers' AutoTokenizer find it
    const std::string tok = source_tokenizer(cfg);
    json ids = special_ids(cfg);
    if (!tok.empty()) {
      fs::copy_file(tok, tmp + "/tokenizer.json", fs::copy_options::overwrite_existing);
      res.files.push_back("tokenizer.json");
      if (!ids.contains("eos_token_id"))
        if (const auto eos = load_tokenizer(tok)->eos_id()) ids["eos_token_id"] = *eos;
    }
    json config = hf_config_json(cfg, *arch, opt.dtype, ids);
    if (int8) {
      config["quantization_config"] = {
          {"quant_method", kInt8QuantMethod}, {"bits", 8}, {"symmetric", true},
          {"granularity", "per_output_channel"}, {"scale_suffix", ".scale"},
          {"quantized", "every 2-D weight (embeddings and linear layers) as I8, w = q * NAME.scale"},
          {"not_quantized", "biases and norm weights (F32)"}};
    }
    write_file_atomic(tmp + "/config.json", config.dump(2) + "\n");
    json gen{{"_from_model_config", true}};
    gen.update(ids);
    gen.erase("pad_token_id");
    write_file_atomic(tmp + "/generation_config.json", gen.dump(2) + "\n");
    res.files.push_back("config.json");
    res.files.push_back("generation_config.json");
    for (const auto& f : res.files) fsync_path(tmp + "/" + f);
    publish(tmp, opt.out, opt.force);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return res;
}

}  // namespace mt::io::hf
