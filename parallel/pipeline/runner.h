// What: PipelineRunner, one rank's part of a pipeline-parallel step. It runs this rank's
// forward and backward actions (schedule.h: gpipe, 1f1b, interleaved) over the step's
// micro-batches, receives each chunk's input stream from the previous virtual stage and its
// output gradient from the next one (point-to-point on the pp group), and sends them on.
//   micro-batches in flight  each has its own Model (an activation "slot"): the first is the
//                  trainer's, the others are built on demand with ModelContext::share_with,
//                  so they read the same parameters and accumulate into the same gradients.
//                  A slot is taken at a micro-batch's first forward on this rank and given
//                  back after its last backward, so 1F1B holds at most pp - stage of them
//                  (GPipe: every micro-batch).
//   messages       sends are nonblocking from the stream buffers themselves (chunk_output,
//                  chunk_input_grad; kept until the slot is reused), receives land directly
//                  in chunk_input / chunk_output_grad: no copies. Tags are (micro, chunk,
//                  direction), so messages never match the wrong receive.
//   gradients      `ready` sees each parameter's gradient final once, during the backwards of
//                  the LAST micro-batch (each chunk's last backward), so the data-parallel
//                  buckets start while earlier stages still compute; begin() is called
//                  before the first of them.
//   loss           on the rank holding the head: the sum of token losses is returned.
// Why: the schedule is data (a list of actions), so the same runner executes every
// schedule, and a test can replay one against the simulator's theory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/models/model.h"
#include "parallel/pipeline/schedule.h"

namespace mt::parallel {

// One micro-batch in host memory: (B, T) token ids, targets (may be null), doc ids (or null).
struct PipeMicro {
  const int32_t* inputs = nullptr;
  const int32_t* targets = nullptr;
  const int32_t* doc_ids = nullptr;
  int B = 0, T = 0;
};

// Time a step spent, per rank (for the bubble: idle / total).
struct PipeTiming {
  double run_ms = 0;      // the run, first action to last (sends waited for)
  double idle_ms = 0;     // blocked waiting for a neighbour's activation or gradient
  int slots = 0;          // activation slots used (micro-batches in flight at most)
};

class PipelineRunner {
 public:
  // model: this rank's stage (its ModelContext `ctx` builds further slots); fwd, bwd: the pp
  // group (rank = stage) for activations and for gradients, not owned (may be the same one);
  // every rank of it runs the same schedule. Two communicators on a device backend: NCCL runs
  // a communicator's sends and receives in issue order on one stream, where a send waits for
  // its receive, so 1F1B's crossing messages (stage 0 sends activation k+1 while stage 1
  // sends gradient k) would deadlock on one; each direction alone is received in the order
  // it is sent.
  PipelineRunner(const Architecture& arch, const ModelContext& ctx, Model& model, Communicator& fwd, Communicator& bwd,
                 PipeSchedule schedule, int virtual_stages);
  ~PipelineRunner();

  // Forward and backward of every micro-batch (gradients accumulate, each token's loss
  // weighted by loss_weight). `begin` runs before the first backward whose gradients `ready`
  // reports. Returns the sum of token losses on the head's rank (0 elsewhere);
  // *loss_tokens: their count there.
  double train(const std::vector<PipeMicro>& micro, float loss_weight, const std::function<void()>& begin,
               const GradReadyFn& ready, int64_t* loss_tokens = nullptr);
  // Forward only (evaluation): every micro-batch through the stages; the head's rank returns
  // the sum of token losses and their count. on_head (optional) runs on the head's rank after
  // each micro-batch's head forward, with the Model holding its logits (eval accuracy).
  double forward_only(const std::vector<PipeMicro>& micro, int64_t* loss_tokens,
                      const std::function<void(Model&)>& on_head = {});

  const PipeTiming& last_timing() const { return timing_; }
  // Activations of every slot (what Model::activation_bytes reports, summed).
  size_t activation_bytes() const;
  int stage() const { return stage_; }
  int pp() const { return pp_size_; }

 private:
  Model& slot_model(int s);
  int take_slot();
  void wait_sends(int s);
  // Blocks (counting idle time) until w completes.
  void wait_idle(Work& w);
  double run(const std::vector<PipeAction>& actions, const std::vector<PipeMicro>& micro, float loss_weight,
             const std::function<void()>& begin, const GradReadyFn& ready, bool backward, int64_t* loss_tokens);

  const Architecture& arch_;
  ModelContext ctx_;
  Model& model_;
  Communicator& fwd_comm_;
  Communicator& bwd_comm_;
  PipeSchedule schedule_;
  int virtual_ = 1, stage_ = 0, pp_size_ = 1;
  std::vector<std::unique_ptr<Model>> extra_;       // slots 1.. (slot 0 is model_)
  std::vector<bool> busy_;                          // per slot
  std::vector<std::vector<std::shared_ptr<Work>>> sends_;  // per slot: sends from its buffers
  PipeTiming timing_;
  std::function<void(Model&)> on_head_;  // forward_only's, while it runs
};

}  // namespace mt::parallel
