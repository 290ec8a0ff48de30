// What: the teacher of knowledge distillation (train.distill.teacher): a trained model (a
// meshtrain checkpoint of any layout, or hf:DIR; any architecture meshtrain has) loaded once
// with the inference loader's machinery (launch/infer/load_model.h: resharded to the run's
// tp), built on the student's tp group, device and kernels, forward only: no gradients, no
// optimizer state. For each micro-batch the Stepper runs the teacher's forward and hands its
// head's logits (this rank's vocabulary slice) to the student (parallel::DistillTarget); the
// student's vocab-parallel loss mixes cross-entropy with the KL divergence from them.
// Why: distillation needs the teacher's distribution on exactly the student's batch, sharded
// by tp like the student's logits, so the KL's max and sums reduce over the same tp group.
// A teacher whose vocabulary differs from the student's, or that is shorter than the student's
// context, is refused naming train.distill.teacher and the teacher's file; parallel.pp > 1 is
// refused by the config (the student's head lives on one stage only).
#pragma once

#include <memory>
#include <string>

#include "core/config.h"
#include "kernels/ops.h"
#include "launch/infer/load_model.h"
#include "parallel/communicator.h"
#include "parallel/models/model.h"

namespace mt::launch {

class Teacher {
 public:
  // Collective over `world` (the checkpoint's shards are verified together) and the tp group.
  // student: the run's model (its vocabulary slice and context are the reference); tp_comm:
  // the student's tp group on device buffers (null at tp 1).
  Teacher(const core::Config& cfg, const parallel::Model& student, parallel::Communicator& world,
          kernels::Ops& ops, parallel::Communicator* tp_comm);
  ~Teacher();

  // The teacher's forward on a (B, T) micro-batch (host token ids; doc_ids may be null), and
  // what the student needs of it; valid until the next call.
  parallel::DistillTarget forward(const int32_t* inputs, int B, int T, const int32_t* doc_ids);
  // For the start-up log: "teacher runs/t/checkpoints/step_00000300 (gpt2, 1.2M parameters ...)".
  std::string describe() const;

 private:
  ModelSource src_;
  std::shared_ptr<const parallel::Architecture> arch_;
  std::unique_ptr<parallel::Model> model_;
  float alpha_ = 0.5f, temperature_ = 1.0f;
};

}  // namespace mt::launch
