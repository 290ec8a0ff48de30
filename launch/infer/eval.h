// What: `meshtrain eval (CHECKPOINT | hf:DIR) [key=value ...]`: the mean cross-entropy (nats
// per target token) and perplexity of a model on a dataset split, at tp = the job's ranks.
// The eval set is the one `train` reports as eval loss (train.eval_batches global batches of
// the val split, in the loader's fixed order), or --batches N of them, or with --all every
// window of the split (concat mode); data.* keys select the dataset (data.path=DIR alone means
// data.source=hdf5).
// Why: comparing checkpoints, or an imported Hugging Face model against our training, needs
// the same number computed the same way outside a training run.
#pragma once

#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/mpi_env.h"

namespace mt::launch {

struct EvalArgs {
  std::string source;                  // checkpoint, run directory or hf:DIR
  std::vector<std::string> overrides;  // section.key=value
  std::string split = "val";           // val | train
  int64_t batches = 0;                 // 0 = train.eval_batches (or every batch with all)
  bool all = false;                    // every full batch of the split (concat mode)
  std::string json_out;                // also write {loss, perplexity, tokens, ...} here
};

int cmd_eval(const EvalArgs& a, parallel::Communicator& world, const parallel::MpiEnv& env);

}  // namespace mt::launch
