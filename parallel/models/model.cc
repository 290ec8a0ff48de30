// What: the parts of every model that do not depend on its architecture (see model.h): the
// flat-buffer layout, layout-independent init, the working copy, token staging and losses.
#include "parallel/models/model.h"

#include <cstring>

#include "core/error.h"
#include "core/memory.h"
#include "core/rng.h"

namespace mt::parallel {

using core::Tensor;

std::vector<ParamInfo> layout_params(const std::vector<ParamSpec>& specs, int tp, int64_t flat_align,
                                     int64_t* total_out, bool align_units) {
  std::vector<ParamInfo> v;
  v.reserve(specs.size());
  int64_t total = 0;
  MT_CHECK(flat_align >= 1, "flat alignment {} < 1", flat_align);
  for (const ParamSpec& s : specs) {
    if (align_units && !v.empty() && v.back().layer != s.layer) total = (total + flat_align - 1) / flat_align * flat_align;
    const std::string bad = s.partition.check(s.full_shape, tp);
    MT_CHECK(bad.empty(), "parameter {} ({} split {}) at tensor-parallel size {}: {}", s.name,
             core::shape_str(s.full_shape), s.partition.describe(), tp, bad);
    ParamInfo p;
    static_cast<ParamSpec&>(p) = s;
    p.local_shape = s.partition.local_shape(s.full_shape, tp);
    p.numel = core::shape_numel(p.local_shape);
    p.offset = total;
    total += p.numel;
    v.push_back(std::move(p));
  }
  if (total_out) *total_out = (total + flat_align - 1) / flat_align * flat_align;
  return v;
}

std::vector<ParamUnit> param_units(const std::vector<ParamInfo>& params, int64_t total, int n_layer) {
  std::vector<ParamUnit> u;
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    if (u.empty() || u.back().layer != p.layer) {
      if (!u.empty()) u.back().end = p.offset;
      ParamUnit n;
      n.layer = p.layer;
      n.first = static_cast<int>(i);
      n.begin = u.empty() ? 0 : p.offset;
      n.block = p.layer >= 0 && p.layer < n_layer;
      u.push_back(n);
    }
    u.back().end_param = static_cast<int>(i) + 1;
  }
  if (!u.empty()) u.back().end = total;
  for (size_t a = 0; a < u.size(); ++a)
    for (size_t b = a + 1; b < u.size(); ++b)
      MT_CHECK(u[a].layer != u[b].layer, "parameters of layer {} are not consecutive in param_specs()", u[a].layer);
  return u;
}

bool StageLayers::holds(const ParamSpec& s, int n_layer) const {
  if (s.layer < 0) return embed || (head && s.tied_head);
  if (s.layer >= n_layer) return head;
  return chunks.empty() || chunk_of(s.layer) >= 0;
}

int StageLayers::chunk_of(int layer) const {
  if (chunks.empty()) return 0;
  for (size_t c = 0; c < chunks.size(); ++c)
    if (layer >= chunks[c].first && layer < chunks[c].second) return static_cast<int>(c);
  return -1;
}

std::vector<ParamSpec> stage_specs(const std::vector<ParamSpec>& specs, const StageLayers& st, int n_layer) {
  if (st.whole()) return specs;
  std::vector<ParamSpec> v;
  for (const ParamSpec& s : specs)
    if (st.holds(s, n_layer)) v.push_back(s);
  return v;
}

int64_t Architecture::num_params() const {
  int64_t n = 0;
  for (const auto& p : param_specs()) n += core::shape_numel(p.full_shape);
  return n;
}

TpRule tp_rule(const Architecture& arch) {
  TpRule r;
  r.constraint = arch.tp_constraint();
  r.violation = [a = arch.shared_from_this()](int tp) { return a->tp_violation(tp); };
  return r;
}

Recompute parse_recompute(const std::string& s) {
  if (s == "none") return Recompute::None;
  if (s == "full") return Recompute::Full;
  if (s == "selective") return Recompute::Selective;
  throw core::Error(fmt::format("unknown train.recompute = {}", s))
      .with_yaml("train.recompute")
      .with_hint("use none, selective or full");
}

Model::Model(std::shared_ptr<const Architecture> arch, const ModelContext& ctx)
    : cfg_(arch->config()),
      tp_(ctx.tp_comm, ctx.tp, ctx.tp_rank),
      recompute_(ctx.recompute),
      sp_(ctx.sp),
      arch_(std::move(arch)),
      ops_(ctx.ops ? ctx.ops : &kernels::cpu_ops()) {
  if (const std::string bad = arch_->tp_violation(ctx.tp); !bad.empty()) {
    throw core::Error(bad).with_yaml("parallel.tp").with_hint(fmt::format("tensor-parallel sizes need {}",
                                                                          arch_->tp_constraint()));
  }
  if (ctx.sp && ctx.tp < 2) {
    throw core::Error(fmt::format("parallel.sp = true needs parallel.tp > 1 (it is {})", ctx.tp))
        .with_yaml("parallel.sp")
        .with_hint("sequence parallelism splits the tokens of a tensor-parallel group: set parallel.tp >= 2");
  }
  wdt_ = ops_->working_dtype();
  core::Device& dev = ops_->device();
  stage_layers_ = ctx.stage;
  {
    const std::vector<ParamSpec> all = arch_->param_specs();
    for (const ParamSpec& s : all) local_of_full_.push_back(stage_layers_.holds(s, cfg_.n_layer) ? held_++ : -1);
    info_ = layout_params(stage_specs(all, stage_layers_, cfg_.n_layer), ctx.tp, ctx.flat_align, &total_, ctx.align_units);
  }
  for (const ParamInfo& p : info_) replica_runs_.push_back(p.partition.replicated_runs(p.full_shape, ctx.tp, ctx.tp_rank));
  units_ = param_units(info_, total_, cfg_.n_layer);
  for (size_t u = 0; u < units_.size(); ++u)
    for (int i = units_[u].first; i < units_[u].end_param; ++i) unit_of_.push_back(static_cast<int>(u));
  unit_w_.assign(units_.size(), nullptr);
  unit_g_.assign(units_.size(), nullptr);
  own_params_ = ctx.own_params;
  own_grads_ = ctx.own_grads;
  work_is_master_ = wdt_ == core::DType::F32;
  if (ctx.share_with) {  // a pipeline's further micro-batch: the first one's parameters
    Model& o = *ctx.share_with;
    MT_CHECK(o.own_params_ && o.own_grads_ && o.total_ == total_ && o.wdt_ == wdt_,
             "a model sharing parameters needs an identical layout with whole flat buffers (no ZeRO-2/3)");
    own_params_ = own_grads_ = false;
    params_ = o.params_, grads_ = o.grads_, work_ = o.work_;
    unit_w_ = o.unit_w_, unit_g_ = o.unit_g_;
    shared_ = true;
  } else if (own_params_) {
    core::MemoryScope scope(core::MemCat::Params);  // master and working copy
    params_ = Tensor::zeros({total_}, core::DType::F32, dev);
    work_ = work_is_master_ ? params_ : Tensor::zeros({total_}, wdt_, dev);
  }
  if (own_grads_ && !shared_) {
    core::MemoryScope scope(core::MemCat::Grads);
    grads_ = Tensor::zeros({total_}, core::DType::F32, dev);
  }
  const size_t ws = core::dtype_size(wdt_);
  for (size_t u = 0; u < units_.size() && !shared_; ++u) {
    bind_unit_params(static_cast<int>(u), own_params_ ? static_cast<char*>(work_.raw()) + units_[u].begin * ws : nullptr);
    bind_unit_grads(static_cast<int>(u), own_grads_ ? grads_.f32() + units_[u].begin : nullptr);
  }
  stage_free_ = dev.create_event();
}

int64_t Model::stream_numel(int B, int T) const {
  return static_cast<int64_t>(B) * T / (sp_ ? tp_.size() : 1) * cfg_.n_embd;
}

namespace {
[[noreturn]] void no_stages(const Architecture& a) {
  throw core::Error(fmt::format("model.arch {} does not support pipeline stages", a.name()))
      .with_yaml("parallel.pp")
      .with_hint("set parallel.pp = 1");
}
}  // namespace

void* Model::chunk_input(int, int, int) { no_stages(*arch_); }
double Model::forward_chunk(int, const int32_t*, const int32_t*, int, int, const int32_t*) { no_stages(*arch_); }
const void* Model::chunk_output(int) const { no_stages(*arch_); }
void* Model::chunk_output_grad(int) { no_stages(*arch_); }
void Model::backward_chunk(int, float, const GradReadyFn&) { no_stages(*arch_); }
const void* Model::chunk_input_grad(int) const { no_stages(*arch_); }

Model::~Model() {
  // Queued work may still read the staging memory or the buffers: let it finish first.
  try {
    device().synchronize();
  } catch (...) {
  }
}

void Model::init_weights(uint64_t seed) {
  // Host memory first (the RNG runs on the host), then one copy to the device. On the CPU the
  // parameter buffer is host memory already. ZeRO-3: one parameter at a time on the host, of
  // which the residence keeps its pieces (no host copy of the whole slice).
  core::Device& dev = device();
  if (!own_params_) {
    MT_CHECK(residence_ != nullptr, "the model's parameters are sharded but no residence holds them");
    std::vector<float> one;
    for (const ParamInfo& p : info_) {
      one.assign(static_cast<size_t>(p.numel), 0.0f);
      init_param(p, seed, one.data());
      residence_->load_master_range(p.offset, one.data(), p.numel);
    }
    residence_->refresh_working_params();
    zero_grads();
    return;
  }
  const bool host_params = dev.kind() == core::DeviceKind::CPU;
  std::vector<float> staging(host_params ? 0 : static_cast<size_t>(total_), 0.0f);
  float* base = host_params ? params_.f32() : staging.data();
  for (const ParamInfo& p : info_) init_param(p, seed, base + p.offset);
  if (!host_params) {
    load_master(staging.data());
  } else {
    refresh_working_params();
  }
  zero_grads();
}

void Model::init_param(const ParamInfo& p, uint64_t seed, float* dst) const {
  if (p.init_std == 0.0f) {
    for (int64_t i = 0; i < p.numel; ++i) dst[i] = p.init_value;
    return;
  }
  // element (r, c) of the slice draws normal01(seed, hash(name), its index in the FULL
  // tensor); a slice row is a run of columns of one full row
  const uint64_t stream = core::hash_string(p.name.c_str());
  const int64_t rows = shape_rows(p.local_shape), cols = shape_cols(p.local_shape);
  const int64_t full_cols = shape_cols(p.full_shape);
  if (p.partition.kind() == Partition::Kind::Rows && !p.partition.blocks().empty()) {
    // fused blocks (replicated units included): runs of local rows at consecutive full rows
    for (int64_t r = 0; r < rows;) {
      const Partition::Place at = p.partition.to_full(p.full_shape, tp_.size(), tp_.rank(), r);
      int64_t n = 1;
      while (r + n < rows && p.partition.to_full(p.full_shape, tp_.size(), tp_.rank(), r + n).row == at.row + n) ++n;
      core::fill_normal_block(dst + r * cols, n, cols, at.row, at.col, full_cols, p.init_std, seed, stream);
      r += n;
    }
  } else {
    const Partition::Place at = p.partition.to_full(p.full_shape, tp_.size(), tp_.rank(), 0);
    core::fill_normal_block(dst, rows, cols, at.row, at.col, full_cols, p.init_std, seed, stream);
  }
}

void Model::load_master(const float* host_flat) {
  if (own_params_) {
    device().copy(params_.raw(), host_flat, params_.nbytes());
    refresh_working_params();
  } else {
    MT_CHECK(residence_ != nullptr, "the model's parameters are sharded but no residence holds them");
    residence_->load_master(host_flat);
  }
}

void Model::begin_replicated_grad(int i) {
  const ParamInfo& p = info_[static_cast<size_t>(i)];
  const int64_t cols = shape_cols(p.local_shape);
  for (const auto& r : replica_runs_[static_cast<size_t>(i)]) {
    if (!r.first_holder) device().memset_zero(grad(i) + r.local_row * cols, static_cast<size_t>(r.rows * cols) * sizeof(float));
  }
}

void Model::sum_replicated_grad(int i) {
  const auto& runs = replica_runs_[static_cast<size_t>(i)];
  if (runs.empty()) return;
  const ParamInfo& p = info_[static_cast<size_t>(i)];
  // The replicated blocks at full size, one after the other: each rank adds its partial sums
  // at its units' rows (zeros elsewhere); the sum over the group is every unit's gradient.
  const int64_t cols = shape_cols(p.local_shape);
  int64_t total = 0;
  for (const auto& r : runs) total += r.block_rows * cols;
  if (replica_scratch_.numel() < total) replica_scratch_ = Tensor::empty({total}, core::DType::F32, device());
  float* scratch = replica_scratch_.f32();
  core::Device& dev = device();
  dev.memset_zero(scratch, static_cast<size_t>(total) * sizeof(float));
  const size_t fbytes = sizeof(float);
  int64_t at = 0;
  for (const auto& r : runs) {
    dev.copy_async(scratch + at + (r.full_row - r.block_row) * cols, grad(i) + r.local_row * cols,
                   static_cast<size_t>(r.rows * cols) * fbytes);
    at += r.block_rows * cols;
  }
  tp_.sum_f32(scratch, total);
  at = 0;
  for (const auto& r : runs) {
    dev.copy_async(grad(i) + r.local_row * cols, scratch + at + (r.full_row - r.block_row) * cols,
                   static_cast<size_t>(r.rows * cols) * fbytes);
    at += r.block_rows * cols;
  }
}

void Model::refresh_working_params() {
  if (!own_params_) {
    if (residence_) residence_->refresh_working_params();
    return;
  }
  if (!work_is_master_) ops_->cast(work_.raw(), wdt_, params_.raw(), core::DType::F32, params_.numel());
}

const void* Model::wparam(int i) const {
  const size_t u = static_cast<size_t>(unit_of_[static_cast<size_t>(i)]);
  MT_CHECK(unit_w_[u] != nullptr, "parameter {} ({}) read outside its block's residence", i, info_[i].name);
  return unit_w_[u] + (info_[i].offset - units_[u].begin) * static_cast<int64_t>(core::dtype_size(wdt_));
}

void Model::ensure_token_buffers(int64_t N) {
  if (N == staged_n_) return;
  core::Device& dev = device();
  staged_n_ = N;
  tokens_d_ = Tensor::empty({N}, core::DType::I32, dev);
  targets_d_ = Tensor::empty({N}, core::DType::I32, dev);
  doc_ids_d_ = Tensor::empty({N}, core::DType::I32, dev);
  positions_d_ = Tensor::empty({N}, core::DType::I32, dev);
  dloss_d_ = Tensor::empty({N}, core::DType::F32, dev);
  // staging memory only grows (page-locked allocations are slow; eval alternates shapes)
  const size_t stage_bytes = static_cast<size_t>(5 * N) * sizeof(int32_t);
  if (stage_.bytes() < stage_bytes) stage_ = core::HostBuffer(dev, stage_bytes);
  losses_host_.assign(static_cast<size_t>(N), 0.0f);
}

// The staging memory holds five (N) arrays: inputs | targets | doc_ids | positions (int32) |
// loss weights (fp32). Before it is rewritten, the copies queued out of it by the previous call
// must be done.
Model::StagedTokens Model::stage_tokens(const int32_t* inputs, const int32_t* targets, const int32_t* doc_ids,
                                        int B, int T, int vocab, int pos_offset) {
  const int N = B * T;
  MT_CHECK(N == staged_n_, "stage_tokens: {} positions, buffers for {}", N, staged_n_);
  for (int i = 0; i < N; ++i) {
    MT_CHECK(inputs[i] >= 0 && inputs[i] < vocab, "token id {} at position {} outside vocab [0, {})", inputs[i], i,
             vocab);
  }
  if (targets) {
    for (int i = 0; i < N; ++i) {
      MT_CHECK(targets[i] >= -1 && targets[i] < vocab, "target id {} outside vocab [0, {}) (-1 = no loss)",
               targets[i], vocab);
    }
  }
  core::Device& dev = device();
  const size_t bytes = static_cast<size_t>(N) * sizeof(int32_t);
  int32_t* stage = static_cast<int32_t*>(stage_.data());
  stage_free_->synchronize();
  std::memcpy(stage, inputs, bytes);
  dev.copy_async(tokens_d_.raw(), stage, bytes);
  if (targets) {
    std::memcpy(stage + N, targets, bytes);
    dev.copy_async(targets_d_.raw(), stage + N, bytes);
  }
  if (doc_ids) {
    std::memcpy(stage + 2 * N, doc_ids, bytes);
    dev.copy_async(doc_ids_d_.raw(), stage + 2 * N, bytes);
  }
  // positions: pos_offset + t, or restarting at 0 wherever the document id changes along a row
  int32_t* pos = stage + 3 * N;
  for (int b = 0; b < B; ++b) {
    const int64_t row = static_cast<int64_t>(b) * T;
    for (int t = 0; t < T; ++t) {
      const bool restart = doc_ids != nullptr && t > 0 && doc_ids[row + t] != doc_ids[row + t - 1];
      pos[row + t] = doc_ids == nullptr ? pos_offset + t : (t == 0 || restart ? 0 : pos[row + t - 1] + 1);
    }
  }
  dev.copy_async(positions_d_.raw(), pos, bytes);
  stage_free_->record();
  loss_tokens_ = 0;
  if (targets) {
    targets_.assign(targets, targets + N);
    for (int i = 0; i < N; ++i) loss_tokens_ += targets[i] >= 0;
  } else {
    targets_.clear();
  }
  StagedTokens s;
  s.tokens = static_cast<const int32_t*>(tokens_d_.raw());
  s.targets = targets ? static_cast<const int32_t*>(targets_d_.raw()) : nullptr;
  s.doc_ids = doc_ids ? static_cast<const int32_t*>(doc_ids_d_.raw()) : nullptr;
  s.positions = static_cast<const int32_t*>(positions_d_.raw());
  return s;
}

const float* Model::stage_loss_weights(float loss_weight) {
  MT_CHECK(!targets_.empty(), "backward() needs a forward() with targets");
  const int64_t N = staged_n_;
  float* dloss = reinterpret_cast<float*>(static_cast<int32_t*>(stage_.data()) + 4 * N);
  stage_free_->synchronize();
  for (int64_t i = 0; i < N; ++i) dloss[i] = targets_[static_cast<size_t>(i)] >= 0 ? loss_weight : 0.0f;
  device().copy_async(dloss_d_.raw(), dloss, static_cast<size_t>(N) * sizeof(float));
  stage_free_->record();
  return dloss_d_.f32();
}

double Model::finish_losses(const float* losses_dev, const int32_t* targets, int N) {
  // the per-token losses to the host (waits for the forward); positions without a target own
  // no logit: their "loss" is meaningless, zero it
  tp_.host_wait();
  device().copy(losses_host_.data(), losses_dev, static_cast<size_t>(N) * sizeof(float));
  double sum = 0.0;
  for (int i = 0; i < N; ++i) {
    if (targets[i] < 0) losses_host_[static_cast<size_t>(i)] = 0.0f;
    sum += losses_host_[static_cast<size_t>(i)];
  }
  // a distilled forward: its cross-entropy and KL parts, for the metrics
  kd_ce_sum_ = kd_kl_sum_ = 0;
  if (kd_ce_dev_ && kd_kl_dev_) {
    kd_host_.resize(2 * static_cast<size_t>(N));
    device().copy(kd_host_.data(), kd_ce_dev_, static_cast<size_t>(N) * sizeof(float));
    device().copy(kd_host_.data() + N, kd_kl_dev_, static_cast<size_t>(N) * sizeof(float));
    for (int i = 0; i < N; ++i) {
      if (targets[i] < 0) continue;
      kd_ce_sum_ += kd_host_[static_cast<size_t>(i)];
      kd_kl_sum_ += kd_host_[static_cast<size_t>(N + i)];
    }
  }
  kd_ce_dev_ = kd_kl_dev_ = nullptr;
  return loss_tokens_ > 0 ? sum / loss_tokens_ : 0.0;
}

// ------------------------------------------------------------------ decoding
void Model::begin_decode(int, int) {
  throw core::Error(fmt::format("model.arch {} does not support incremental decoding", arch_->name()))
      .with_yaml("model.arch");
}

void Model::decode(const int32_t*, int, int, float*, bool) {
  throw core::Error(fmt::format("model.arch {} does not support incremental decoding", arch_->name()))
      .with_yaml("model.arch");
}

void Model::end_decode() {
  tp_.host_wait();
  device().synchronize();
  kv_cache_.clear();
  decode_B_ = decode_max_len_ = decode_len_ = 0;
}

size_t Model::kv_cache_bytes() const {
  size_t n = 0;
  for (const Tensor& t : kv_cache_) n += t.defined() ? t.nbytes() : 0;
  return n;
}

void Model::check_sp_rows(int B, int T) const {
  if (!sp_ || static_cast<int64_t>(B) * T % tp_.size() == 0) return;
  throw core::Error(fmt::format("parallel.sp splits the {} x {} tokens of a micro-batch into parallel.tp = {} equal "
                                "parts", B, T, tp_.size()))
      .with_yaml("parallel.sp")
      .with_hint("choose a model.seq_len that parallel.tp divides (or train.micro_batch rows whose tokens it "
                 "divides), or parallel.sp=false");
}

void Model::set_decode_shape(int B, int max_len) {
  MT_CHECK(B >= 1, "begin_decode: {} rows", B);
  if (max_len < 1 || max_len > cfg_.seq_len) {
    throw core::Error(fmt::format("begin_decode: a cache of {} positions; model.seq_len is {} (the longest sequence "
                                  "the model has positions for)", max_len, cfg_.seq_len))
        .with_yaml("model.seq_len");
  }
  end_decode();  // the old cache, if any, is no longer read
  decode_B_ = B;
  decode_max_len_ = max_len;
  decode_len_ = 0;
}

int Model::start_decode(int B, int n_new) {
  MT_CHECK(decode_B_ > 0, "decode() before begin_decode()");
  MT_CHECK(B == decode_B_, "decode: {} rows, the cache was begun for {}", B, decode_B_);
  MT_CHECK(n_new >= 1, "decode: {} new positions", n_new);
  if (decode_len_ + n_new > decode_max_len_) {
    throw core::Error(fmt::format("decode: {} cached + {} new positions exceed the cache's max_len {} (begin_decode; "
                                  "model.seq_len is {})", decode_len_, n_new, decode_max_len_, cfg_.seq_len))
        .with_yaml("model.seq_len");
  }
  return decode_len_;
}

}  // namespace mt::parallel
