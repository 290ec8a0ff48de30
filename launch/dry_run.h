// What: `meshtrain bench step CONFIG --dry-run [--world N]`: the memory one rank needs for a
// config at its layout (and at every other tensor-parallel size of the same world), from the
// Architecture alone: nothing is allocated, no device or dataset is touched, one process.
//   params (fp32 master) | working copy (bf16 on CUDA) | grads (fp32) | optimizer state
//   (AdamW m and v, SGD momentum; 1/dp with ZeRO-1) | activations (Architecture::
//   activation_bytes at train.micro_batch x model.seq_len; the attention state of the device's
//   kernels: CPU probabilities T x T, CUDA a log-sum-exp per row; with train.recompute full
//   one block's internals and every block's input; with selective every block's activations
//   but one attention state and one MLP activation shared by all)
// Not counted: library workspaces (cuBLAS, cuDNN, NCCL buffers), the data loader's prefetch,
// communication buckets, the allocator's fragmentation: leave headroom.
// Why: a user sees what fits (Llama 3 8B at tp 8?) before asking for nodes.
#pragma once

#include <string>
#include <vector>

namespace mt::launch {

struct DryRunArgs {
  std::string config;
  std::vector<std::string> overrides;
  int world = 0;  // ranks to plan for; 0 = parallel.dp x parallel.tp (dp 0 counts as 1)
};

// Prints the per-rank memory table; returns the process exit code.
int cmd_bench_dry_run(const DryRunArgs& a);

}  // namespace mt::launch
