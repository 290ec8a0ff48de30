// What: ShardedSync (see sharded_sync.h).
#include "parallel/sharded_sync.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "core/memory.h"

namespace mt::parallel {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

DType comm_dtype(core::DType t) { return t == core::DType::BF16 ? DType::BF16 : DType::F32; }
}  // namespace

ShardedSync::ShardedSync(int zero, Communicator* dp, Model& model, kernels::Ops* ops)
    : zero_(zero), dp_(dp), model_(model), ops_(ops ? ops : &kernels::cpu_ops()) {
  MT_CHECK(zero == 2 || zero == 3, "ShardedSync is ZeRO-2 or 3, not {}", zero);
  MT_CHECK(dp != nullptr && dp->size() > 1, "ShardedSync needs a data-parallel group of more than one rank");
  dp_size_ = dp->size();
  dp_rank_ = dp->rank();
  MT_CHECK(!model.owns_grads() && model.owns_params() == (zero == 2),
           "the model was not built for ZeRO-{} (parallel::model_context_for_zero)", zero);
  wdt_ = model.working_dtype();
  ws_ = core::dtype_size(wdt_);
  core::Device& dev = ops_->device();
  int64_t max_block = 0;
  const auto& units = model.units();
  for (size_t i = 0; i < units.size(); ++i) {
    UnitState s;
    s.u = units[i];
    MT_CHECK(s.u.size() % dp_size_ == 0, "unit of layer {} ({} elements) is not aligned to {} ranks", s.u.layer,
             s.u.size(), dp_size_);
    s.piece = s.u.size() / dp_size_;
    s.shard_at = shard_elems_;
    shard_elems_ += s.piece;
    owned_.push_back({s.u.begin + dp_rank_ * s.piece, s.u.begin + (dp_rank_ + 1) * s.piece});
    if (s.u.block) {
      max_block = std::max(max_block, s.u.size());
      if (static_cast<int>(block_unit_.size()) <= s.u.layer) block_unit_.resize(static_cast<size_t>(s.u.layer) + 1, -1);
      block_unit_[static_cast<size_t>(s.u.layer)] = static_cast<int>(i);
    } else {
      s.outer = static_cast<int>(outer_units_.size());
      outer_units_.push_back(static_cast<int>(i));
    }
    units_.push_back(s);
  }
  {  // the memory accounting's categories: everything gradient-shaped is grads
    core::MemoryScope scope(core::MemCat::Grads);
    gshard_ = core::Tensor::zeros({shard_elems_}, core::DType::F32, dev);
    for (int u : outer_units_) {
      const UnitState& s = units_[static_cast<size_t>(u)];
      outer_g_.push_back(core::Tensor::zeros({s.u.size()}, core::DType::F32, dev));
      outer_recv_.push_back(core::Tensor::zeros({s.piece}, core::DType::F32, dev));
      outer_red_.emplace_back();
    }
    for (GradSlot& g : gslot_) {
      if (max_block == 0) break;
      g.buf = core::Tensor::zeros({max_block}, core::DType::F32, dev);
      g.recv = core::Tensor::zeros({max_block / dp_size_}, core::DType::F32, dev);
    }
  }
  if (zero_ == 3) {  // ... and parameter-shaped params
    core::MemoryScope scope(core::MemCat::Params);
    master_ = core::Tensor::zeros({shard_elems_}, core::DType::F32, dev);
    if (wdt_ != core::DType::F32) wshard_ = core::Tensor::zeros({shard_elems_}, wdt_, dev);
    for (int u : outer_units_)
      outer_w_.push_back(core::Tensor::zeros({units_[static_cast<size_t>(u)].u.size()}, wdt_, dev));
    for (ParamSlot& p : pslot_)
      if (max_block > 0) p.buf = core::Tensor::zeros({max_block}, wdt_, dev);
    for (size_t o = 0; o < outer_units_.size(); ++o) model_.bind_unit_params(outer_units_[o], outer_w_[o].raw());
  }
  for (size_t u = 0; u < units_.size(); ++u) model_.bind_unit_grads(static_cast<int>(u), nullptr);
  model_.set_residence(this);
}

ShardedSync::~ShardedSync() {
  if (model_.residence() == this) model_.set_residence(nullptr);
  // in-flight collectives write into buffers freed here: let them finish (errors are moot now)
  try {
    for (ParamSlot& p : pslot_)
      if (p.work) p.work->wait();
    for (GradSlot& g : gslot_)
      if (g.red.work) g.red.work->wait();
    for (Reduce& r : outer_red_)
      if (r.work) r.work->wait();
  } catch (...) {
  }
}

int ShardedSync::unit_of_layer(int layer) const {
  if (layer >= 0 && layer < static_cast<int>(block_unit_.size()) && block_unit_[static_cast<size_t>(layer)] >= 0)
    return block_unit_[static_cast<size_t>(layer)];
  throw core::Error(fmt::format("no block parameters belong to layer {}", layer));
}

void* ShardedSync::wshard_at(int64_t shard_at) const {
  if (wshard_.defined()) return static_cast<char*>(wshard_.raw()) + shard_at * static_cast<int64_t>(ws_);
  return master_.f32() + shard_at;
}

void ShardedSync::timed_wait(const std::shared_ptr<Work>& w) {
  const auto t0 = Clock::now();
  w->wait();
  const double dt = ms_since(t0);
  exposed_ms_ += dt;
  comm_ms_ += dt;
}

void ShardedSync::poll() {
  const auto t0 = Clock::now();
  for (ParamSlot& p : pslot_)
    if (p.work) p.work->test();
  for (GradSlot& g : gslot_)
    if (g.red.work) g.red.work->test();
  for (Reduce& r : outer_red_)
    if (r.work) r.work->test();
  comm_ms_ += ms_since(t0);
}

// ------------------------------------------------------------------ parameters (ZeRO-3)
void ShardedSync::gather_into(int unit, void* dst, std::shared_ptr<Work>* work) {
  const UnitState& s = units_[static_cast<size_t>(unit)];
  const auto t0 = Clock::now();
  *work = dp_->iall_gather(wshard_at(s.shard_at), dst, static_cast<size_t>(s.piece), comm_dtype(wdt_));
  comm_ms_ += ms_since(t0);
}

void ShardedSync::ensure_params(int unit, Pass pass) {
  int k = -1;
  for (int i = 0; i < 2; ++i)
    if (pslot_[i].unit == unit && pslot_[i].gen == gen_) k = i;
  if (k < 0) {  // not gathered (nor prefetched): into a slot without a gather in flight, now
    k = pslot_[0].work && !pslot_[1].work ? 1 : 0;
    ParamSlot& p = pslot_[k];
    if (p.work) timed_wait(p.work), p.work.reset();
    if (p.unit >= 0) model_.bind_unit_params(p.unit, nullptr);
    p.unit = unit;
    p.gen = gen_;
    gather_into(unit, p.buf.raw(), &p.work);
  }
  ParamSlot& p = pslot_[k];
  if (p.work) timed_wait(p.work), p.work.reset();
  model_.bind_unit_params(unit, p.buf.raw());
  // prefetch the block that runs next into the other slot (its previous block is done)
  const int layer = units_[static_cast<size_t>(unit)].u.layer + (pass == Pass::Forward ? 1 : -1);
  if (layer < 0 || layer >= model_.arch().config().n_layer) return;
  const int next = unit_of_layer(layer);
  ParamSlot& q = pslot_[k ^ 1];
  if (q.unit == next && q.gen == gen_) return;
  if (q.work) timed_wait(q.work), q.work.reset();
  if (q.unit >= 0) model_.bind_unit_params(q.unit, nullptr);
  q.unit = next;
  q.gen = gen_;
  gather_into(next, q.buf.raw(), &q.work);
}

void ShardedSync::refresh_working_params() {
  MT_CHECK(zero_ == 3, "refresh_working_params: ZeRO-2 parameters are the model's own");
  ++gen_;
  for (ParamSlot& p : pslot_) {
    if (p.work) timed_wait(p.work), p.work.reset();
    if (p.unit >= 0) model_.bind_unit_params(p.unit, nullptr);
    p.unit = -1;
  }
  if (wshard_.defined()) ops_->cast(wshard_.raw(), wdt_, master_.raw(), core::DType::F32, shard_elems_);
  std::vector<std::shared_ptr<Work>> works(outer_units_.size());
  for (size_t o = 0; o < outer_units_.size(); ++o) gather_into(outer_units_[o], outer_w_[o].raw(), &works[o]);
  for (auto& w : works) timed_wait(w);
  // the first block's gather overlaps whatever comes before the next forward
  if (model_.arch().config().n_layer > 0 && pslot_[0].buf.defined()) {
    ParamSlot& p = pslot_[0];
    p.unit = unit_of_layer(0);
    p.gen = gen_;
    gather_into(p.unit, p.buf.raw(), &p.work);
  }
}

void ShardedSync::load_master(const float* host_flat) {
  load_master_range(0, host_flat, model_.num_local_params());
  refresh_working_params();
}

void ShardedSync::load_master_range(int64_t flat_begin, const float* host, int64_t n) {
  MT_CHECK(zero_ == 3, "load_master: ZeRO-2 parameters are the model's own");
  core::Device& dev = ops_->device();
  for (size_t k = 0; k < units_.size(); ++k) {
    const auto [b, e] = owned_[k];
    const int64_t lo = std::max(b, flat_begin), hi = std::min(e, flat_begin + n);
    if (lo < hi)
      dev.copy(master_.f32() + units_[k].shard_at + (lo - b), host + (lo - flat_begin),
               static_cast<size_t>(hi - lo) * sizeof(float));
  }
}

// ------------------------------------------------------------------ gradients
void ShardedSync::zero_grads() {
  gshard_.zero_();
  comm_ms_ = exposed_ms_ = 0;
}

void ShardedSync::bind_outer_grads() {
  for (size_t o = 0; o < outer_units_.size(); ++o) {
    const int u = outer_units_[o];
    UnitState& s = units_[static_cast<size_t>(u)];
    if (outer_red_[o].work) complete(outer_red_[o], outer_recv_[o]);
    outer_g_[o].zero_();
    model_.bind_unit_grads(u, outer_g_[o].f32());
    s.pending = s.u.end_param - s.u.first;
  }
}

void ShardedSync::begin(Model&) { bind_outer_grads(); }

void ShardedSync::enter_block(int layer, Pass pass) {
  const int u = unit_of_layer(layer);
  poll();
  if (zero_ == 3) ensure_params(u, pass);
  if (pass != Pass::Backward) return;
  UnitState& s = units_[static_cast<size_t>(u)];
  if (s.gslot >= 0) return;  // (entered twice in one backward)
  // a slot no unit accumulates into, idle if there is one, else the one reducing (two blocks
  // back: its reduction must be done before the slot is reused)
  int g = -1;
  for (int i = 0; i < 2; ++i)
    if (gslot_[i].open < 0 && (g < 0 || !gslot_[i].red.work)) g = i;
  MT_CHECK(g >= 0, "block {}: both gradient slots hold blocks whose gradients are not complete", layer);
  GradSlot& slot = gslot_[g];
  if (slot.red.work) complete(slot.red, slot.recv);
  ops_->device().memset_zero(slot.buf.raw(), static_cast<size_t>(s.u.size()) * sizeof(float));
  model_.bind_unit_grads(u, slot.buf.f32());
  slot.open = u;
  s.gslot = g;
  s.pending = s.u.end_param - s.u.first;
}

void ShardedSync::on_grad_ready(int i) {
  const int u = model_.unit_of(i);
  UnitState& s = units_[static_cast<size_t>(u)];
  MT_CHECK(s.pending > 0, "parameter {} reported ready twice in one backward (or outside it)", i);
  if (--s.pending == 0) launch_reduce(u);
  poll();
}

void ShardedSync::launch_reduce(int u) {
  UnitState& s = units_[static_cast<size_t>(u)];
  const auto t0 = Clock::now();
  if (s.u.block) {
    GradSlot& g = gslot_[s.gslot];
    g.open = -1;
    g.red.unit = u;
    g.red.work = dp_->ireduce_scatter(g.buf.f32(), g.recv.f32(), static_cast<size_t>(s.piece), DType::F32,
                                      ReduceOp::Sum);
    s.gslot = -1;
  } else {
    const size_t o = static_cast<size_t>(s.outer);
    outer_red_[o].unit = u;
    outer_red_[o].work = dp_->ireduce_scatter(outer_g_[o].f32(), outer_recv_[o].f32(), static_cast<size_t>(s.piece),
                                              DType::F32, ReduceOp::Sum);
  }
  comm_ms_ += ms_since(t0);
  model_.bind_unit_grads(u, nullptr);  // complete for this backward: nothing may add to it now
}

void ShardedSync::complete(Reduce& r, core::Tensor& recv) {
  timed_wait(r.work);
  const UnitState& s = units_[static_cast<size_t>(r.unit)];
  ops_->add_f32(gshard_.f32() + s.shard_at, recv.f32(), s.piece);
  r.work.reset();
  r.unit = -1;
}

void ShardedSync::finish() {
  for (const UnitState& s : units_) {
    MT_CHECK(s.gslot < 0 && (s.u.block || s.pending == 0),
             "layer {}: {} parameter gradients were never reported ready", s.u.layer, s.pending);
  }
  for (GradSlot& g : gslot_)
    if (g.red.work) complete(g.red, g.recv);
  for (size_t o = 0; o < outer_red_.size(); ++o)
    if (outer_red_[o].work) complete(outer_red_[o], outer_recv_[o]);
}

void ShardedSync::gather_params() {
  if (zero_ == 3) {
    refresh_working_params();
    return;
  }
  // ZeRO-2: every unit's updated pieces, in place in the model's flat fp32 buffer
  float* params = model_.params().f32();
  std::vector<std::shared_ptr<Work>> works;
  const auto t0 = Clock::now();
  for (const UnitState& s : units_) {
    float* base = params + s.u.begin;
    works.push_back(dp_->iall_gather(base + dp_rank_ * s.piece, base, static_cast<size_t>(s.piece), DType::F32));
  }
  comm_ms_ += ms_since(t0);
  for (auto& w : works) timed_wait(w);
  model_.refresh_working_params();
}

// ------------------------------------------------------------------ the owned ranges
std::vector<RangeData> ShardedSync::owned_data(Model& model) {
  std::vector<RangeData> d;
  for (size_t i = 0; i < units_.size(); ++i) {
    RangeData r;
    r.params = zero_ == 3 ? master_.f32() + units_[i].shard_at : model.params().f32() + owned_[i].first;
    r.grads = gshard_.f32() + units_[i].shard_at;
    d.push_back(r);
  }
  return d;
}

std::vector<float> ShardedSync::master_host(Model& model) {
  const core::Tensor& t = zero_ == 3 ? master_ : model.params();
  std::vector<float> h(static_cast<size_t>(t.numel()));
  ops_->device().copy(h.data(), t.raw(), h.size() * sizeof(float));
  return h;
}

void ShardedSync::load_master_stored(Model& model, const std::vector<float>& host) {
  if (zero_ != 3) {
    MT_CHECK(static_cast<int64_t>(host.size()) == model.num_local_params(), "{} parameters for a slice of {}",
             host.size(), model.num_local_params());
    model.load_master(host.data());
    return;
  }
  MT_CHECK(static_cast<int64_t>(host.size()) == shard_elems_, "{} parameters for a ZeRO-3 shard of {}", host.size(),
           shard_elems_);
  ops_->device().copy(master_.raw(), host.data(), host.size() * sizeof(float));
  refresh_working_params();
}

size_t ShardedSync::grad_bytes() const {
  size_t n = gshard_.nbytes();
  for (const auto& t : outer_g_) n += t.nbytes();
  for (const auto& t : outer_recv_) n += t.nbytes();
  for (const GradSlot& g : gslot_) n += g.buf.defined() ? g.buf.nbytes() + g.recv.nbytes() : 0;
  return n;
}

size_t ShardedSync::param_bytes() const {
  size_t n = master_.defined() ? master_.nbytes() : 0;
  n += wshard_.defined() ? wshard_.nbytes() : 0;
  for (const auto& t : outer_w_) n += t.nbytes();
  for (const ParamSlot& p : pslot_) n += p.buf.defined() ? p.buf.nbytes() : 0;
  return n;
}

}  // namespace mt::parallel
