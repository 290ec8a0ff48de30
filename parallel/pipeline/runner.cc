// What: PipelineRunner (see runner.h).
#include "parallel/pipeline/runner.h"

#include <chrono>

#include "core/error.h"

namespace mt::parallel {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

DType stream_dtype(core::DType d) {
  switch (d) {
    case core::DType::F32: return DType::F32;
    case core::DType::BF16: return DType::BF16;
    default: break;
  }
  throw core::Error(fmt::format("pipeline stream in dtype {}", core::dtype_name(d)));
}

// Messages cross the boundary between virtual stages k and k + 1 (forward: k's output;
// backward: the gradient of k + 1's input); a tag per (micro-batch, boundary, direction).
// MPI guarantees tags up to 32767.
int tag_of(int micro, int boundary, int n_boundaries, bool backward) {
  return ((micro * n_boundaries + boundary) * 2 + (backward ? 1 : 0)) % 32000;
}

}  // namespace

PipelineRunner::PipelineRunner(const Architecture& arch, const ModelContext& ctx, Model& model, Communicator& fwd,
                               Communicator& bwd, PipeSchedule schedule, int virtual_stages)
    : arch_(arch), ctx_(ctx), model_(model), fwd_comm_(fwd), bwd_comm_(bwd), schedule_(schedule),
      virtual_(virtual_stages) {
  stage_ = fwd.rank();
  pp_size_ = fwd.size();
  MT_CHECK(bwd.rank() == stage_ && bwd.size() == pp_size_, "pipeline communicators differ");
  ctx_.share_with = &model_;
  MT_CHECK(model_.num_chunks() == virtual_, "stage {} holds {} chunks, the schedule runs {} virtual stages per rank",
           stage_, model_.num_chunks(), virtual_);
  busy_.assign(1, false);
  sends_.resize(1);
}

PipelineRunner::~PipelineRunner() {
  try {
    for (size_t s = 0; s < sends_.size(); ++s) wait_sends(static_cast<int>(s));
  } catch (...) {
  }
}

Model& PipelineRunner::slot_model(int s) { return s == 0 ? model_ : *extra_[static_cast<size_t>(s) - 1]; }

int PipelineRunner::take_slot() {
  for (size_t s = 0; s < busy_.size(); ++s) {
    if (!busy_[s]) {
      wait_sends(static_cast<int>(s));  // its buffers may still be on their way
      busy_[s] = true;
      return static_cast<int>(s);
    }
  }
  extra_.push_back(arch_.build(ctx_));
  busy_.push_back(true);
  sends_.emplace_back();
  return static_cast<int>(busy_.size()) - 1;
}

void PipelineRunner::wait_sends(int s) {
  auto& v = sends_[static_cast<size_t>(s)];
  for (auto& w : v) wait_idle(*w);
  v.clear();
}

void PipelineRunner::wait_idle(Work& w) {
  if (w.completed()) {
    w.wait();  // (rethrows its error, if any)
    return;
  }
  const auto t = Clock::now();
  w.wait();
  timing_.idle_ms += ms_since(t);
}

size_t PipelineRunner::activation_bytes() const {
  size_t n = model_.activation_bytes();
  for (const auto& m : extra_) n += m->activation_bytes();
  return n;
}

double PipelineRunner::train(const std::vector<PipeMicro>& micro, float loss_weight, const std::function<void()>& begin,
                             const GradReadyFn& ready, int64_t* loss_tokens) {
  const int m = static_cast<int>(micro.size());
  return run(pipeline_actions(schedule_, pp_size_, virtual_, m, stage_), micro, loss_weight, begin, ready, true,
             loss_tokens);
}

double PipelineRunner::forward_only(const std::vector<PipeMicro>& micro, int64_t* loss_tokens,
                                    const std::function<void(Model&)>& on_head) {
  // micro-batch by micro-batch, each through this rank's chunks in order: every forward needs
  // only earlier ones (of the same micro-batch, or earlier ones), so no rank waits on a later
  // one; one activation slot suffices
  std::vector<PipeAction> actions;
  for (int k = 0; k < static_cast<int>(micro.size()); ++k)
    for (int c = 0; c < virtual_; ++c) actions.push_back({PipeAction::Kind::Forward, k, c});
  on_head_ = on_head;
  const double loss = run(actions, micro, 0.0f, {}, {}, false, loss_tokens);
  on_head_ = nullptr;
  return loss;
}

double PipelineRunner::run(const std::vector<PipeAction>& actions, const std::vector<PipeMicro>& micro,
                           float loss_weight, const std::function<void()>& begin, const GradReadyFn& ready,
                           bool backward, int64_t* loss_tokens) {
  const auto t0 = Clock::now();
  timing_ = PipeTiming();
  const int m = static_cast<int>(micro.size());
  const int nb = pp_size_ * virtual_;  // virtual stages
  const int next = (stage_ + 1) % pp_size_, prev = (stage_ + pp_size_ - 1) % pp_size_;
  const DType dt = stream_dtype(model_.working_dtype());
  std::vector<int> slot_of(static_cast<size_t>(m), -1);
  double loss_sum = 0;
  int64_t tokens = 0;
  bool begun = false;
  for (const PipeAction& a : actions) {
    const PipeMicro& mb = micro[static_cast<size_t>(a.micro)];
    const int c = a.chunk, vs = c * pp_size_ + stage_;  // this chunk's virtual stage
    const size_t n = static_cast<size_t>(model_.stream_numel(mb.B, mb.T));
    if (a.kind == PipeAction::Kind::Forward) {
      int& s = slot_of[static_cast<size_t>(a.micro)];
      if (s < 0) s = take_slot();
      Model& M = slot_model(s);
      if (!M.chunk_embeds(c)) {
        void* in = M.chunk_input(c, mb.B, mb.T);
        wait_idle(*fwd_comm_.irecv(in, n, dt, prev, tag_of(a.micro, vs - 1, nb, false)));
      }
      const double loss = M.forward_chunk(c, mb.inputs, mb.targets, mb.B, mb.T, mb.doc_ids);
      if (M.chunk_has_head(c)) {
        loss_sum += loss * static_cast<double>(M.loss_tokens());
        tokens += M.loss_tokens();
        if (on_head_) on_head_(M);
      } else {
        sends_[static_cast<size_t>(s)].push_back(fwd_comm_.isend(M.chunk_output(c), n, dt, next, tag_of(a.micro, vs, nb, false)));
      }
      if (!backward && c == virtual_ - 1) busy_[static_cast<size_t>(s)] = false;
    } else {
      const int s = slot_of[static_cast<size_t>(a.micro)];
      MT_CHECK(s >= 0, "pipeline schedule: backward of micro-batch {} chunk {} before its forward", a.micro, c);
      Model& M = slot_model(s);
      if (!M.chunk_has_head(c))
        wait_idle(*bwd_comm_.irecv(M.chunk_output_grad(c), n, dt, next, tag_of(a.micro, vs, nb, true)));
      const bool last = a.micro == m - 1;  // its backwards make the gradients final
      if (last && !begun) {
        if (begin) begin();
        begun = true;
      }
      M.backward_chunk(c, loss_weight, last ? ready : GradReadyFn());
      if (!M.chunk_embeds(c))
        sends_[static_cast<size_t>(s)].push_back(
            bwd_comm_.isend(M.chunk_input_grad(c), n, dt, prev, tag_of(a.micro, vs - 1, nb, true)));
      if (c == 0) busy_[static_cast<size_t>(s)] = false;
    }
  }
  for (size_t s = 0; s < sends_.size(); ++s) wait_sends(static_cast<int>(s));
  timing_.slots = static_cast<int>(busy_.size());
  timing_.run_ms = ms_since(t0);
  if (loss_tokens) *loss_tokens = tokens;
  return loss_sum;
}

}  // namespace mt::parallel
