// What: `meshtrain bench pipeline`: the bubble of each pipeline schedule as the real runner
// (parallel/pipeline/runner.h) executes it, against theory. Run with mpirun -np P (P = pp):
// every rank is a stage of a synthetic model whose blocks take a fixed time (forward f ms,
// backward 2f ms per block, by sleeping) and whose stream between stages is real (B x T x C
// fp32 over point-to-point). For each schedule and micro-batch count m it times a step from
// a common start (a barrier) to the last stage's end, and reports each stage's bubble =
// 1 - its compute time / the step time (the slowest stage's), the mean and max over stages,
// and theory: (p - 1) / (m + p - 1), divided by v for interleaved.
// Why: issue #17 asks the measured bubble within 10% of theory for p = 2, 4 and m = 4, 8, 16.
// Sleeping stages measure the schedule and the runner (ordering, messages, waits) without the
// CPU contention of p training ranks on a 2-core machine; a real model's bubble is in
// metrics.jsonl ("pp") of any `meshtrain train` at parallel.pp > 1.
#pragma once

#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace mt::launch {

struct BenchPipelineArgs {
  double block_ms = 10;                  // forward time of one block (backward: twice)
  int layers_per_stage = 2;              // blocks per pp rank (interleaved: split in v chunks)
  std::vector<int> micro = {4, 8, 16};   // micro-batch counts
  std::vector<std::string> schedules = {"gpipe", "1f1b", "interleaved"};
  int virtual_stages = 2;                // interleaved's v
  int B = 4, T = 64, C = 256;            // the stream per micro-batch: B x T x C fp32
  int repeat = 3;                        // timed steps per row (after one warm-up); the median counts
  std::string json_out;                  // optional: the rows as JSON
};
int cmd_bench_pipeline(const BenchPipelineArgs& a, parallel::Communicator& world);

}  // namespace mt::launch
