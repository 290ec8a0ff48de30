// What: pipeline schedules as pure data. pipeline_actions() lists, for one pp rank, the order
// of its forward and backward computations over the m micro-batches of a step (and, for
// interleaved, over its virtual stages); check_pipeline() rejects impossible or wasteful
// inputs naming the keys; theoretical_bubble() is the textbook idle fraction and
// simulate_pipeline() replays the actions of every rank with given compute times (zero
// communication time) to measure it, and to prove a schedule cannot deadlock.
// Why: the executor only walks the list (sending and receiving what each action needs), so
// the schedules are unit-tested without processes, and the benchmark's measured bubble has an
// exact reference.
//
// Conventions: pp ranks are stages 0 .. pp-1; with v virtual stages per rank, virtual stage
// k = chunk * pp + stage (rank `stage` runs chunks 0 .. v-1), so micro-batches pass through
// the ranks v times. A Forward of (micro, k) needs the Forward of (micro, k - 1); a Backward
// of (micro, k) needs the Backward of (micro, k + 1) and its own Forward (the last virtual
// stage's backward needs only its forward, which computes the loss).
//
//   1f1b, pp 4, m 8, stage 0:  F0 F1 F2 | F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 | B5 B6 B7
//                             (warmup pp - stage - 1, steady 1F1B, cooldown)
#pragma once

#include <string>
#include <vector>

namespace mt::parallel {

enum class PipeSchedule { GPipe, OneFOneB, Interleaved };
// "gpipe" | "1f1b" | "interleaved" (parallel.pp_schedule); throws naming the key otherwise.
PipeSchedule parse_pipe_schedule(const std::string& s);
const char* pipe_schedule_name(PipeSchedule s);

struct PipeAction {
  enum class Kind { Forward, Backward } kind;
  int micro;  // micro-batch 0 .. m-1
  int chunk;  // the rank's virtual stage 0 .. v-1 (virtual stage chunk * pp + stage); 0 unless interleaved
  bool operator==(const PipeAction& o) const { return kind == o.kind && micro == o.micro && chunk == o.chunk; }
};

// The ordered compute actions of pp rank `stage` for m micro-batches: 2 m v actions, each
// (kind, micro, chunk) once.
//  gpipe:       F0 .. F(m-1), then B0 .. B(m-1) (backwards in forward order: the last stage
//               starts with the micro-batch whose forward ended first).
//  1f1b:        PipeDream-flush / Megatron's non-interleaved 1F1B: min(pp - stage - 1, m)
//               warmup forwards, then forward/backward pairs, then the remaining backwards.
//  interleaved: Megatron's interleaved 1F1B (microbatch_group_size_per_vp_stage = pp): the
//               forwards run in groups of pp micro-batches per chunk, (0..pp-1 on chunk 0, then
//               on chunk 1, ..., then micro-batches pp..2pp-1), the backwards in the same
//               order with the chunks reversed; warmup min((pp - stage - 1) * 2 + (v - 1) * pp,
//               m v) forwards, then forward/backward pairs, then the remaining backwards.
// virtual_stages must be 1 except for interleaved. Call check_pipeline first for errors
// naming the config keys (this throws on the same inputs).
std::vector<PipeAction> pipeline_actions(PipeSchedule s, int pp, int virtual_stages, int m, int stage);

// Bad input before anything runs, as core::Error naming the keys, with hints: pp, m >= 1;
// virtual_stages 1 unless interleaved, >= 2 for interleaved; 1f1b needs m >= pp (fewer
// micro-batches leave stages idle and do not fill the pipeline); interleaved needs m a
// multiple of pp (Megatron's rule). m is the micro-batches per step, train.batch_size /
// (train.micro_batch x dp).
void check_pipeline(PipeSchedule s, int pp, int virtual_stages, int m);

// The idle fraction of each rank, uniform stage times (f + b per micro-batch and virtual
// stage): (p - 1) / (m + p - 1) for gpipe and 1f1b; for interleaved Megatron's exact form
// (p - 1) / (v m + p - 1) (the bubble (p - 1)(f + b) of virtual-stage-sized steps over the
// v m (f + b) of work), which is (p - 1) / (m + p - 1) "divided by v" up to the v m vs m
// in the denominator. With uniform times (any f, b), zero communication time and m a multiple
// of pp for interleaved, simulate_pipeline gives exactly this on every rank (the makespan is
// (v m + p - 1)(f + b); unit-tested for p 1, 2, 4, m 4, 8, 16, v 2, 3, 4).
double theoretical_bubble(PipeSchedule s, int pp, int virtual_stages, int m);

// Replays every rank's actions in order: an action starts when its rank is free and its
// inputs are done (zero communication time); forward takes f, backward b (per virtual stage).
// makespan: when the last action ends; idle_fraction[r] = 1 - busy_r / makespan; deadlock:
// some action can never start (then makespan and idle_fraction cover what ran).
struct PipeSim {
  double makespan = 0;
  std::vector<double> idle_fraction;
  bool deadlock = false;
};
PipeSim simulate_pipeline(PipeSchedule s, int pp, int virtual_stages, int m, double f, double b);
// The same for given action lists, one per pp rank (any order, e.g. a new schedule's): every
// action must name a micro-batch < m and a chunk < virtual_stages.
PipeSim simulate_actions(const std::vector<std::vector<PipeAction>>& per_rank, int virtual_stages, int m, double f,
                         double b);

// The most (micro, chunk) pairs forwarded but not yet backwarded at any point of a rank's
// action list: the activation slots the executor needs (1f1b: min(pp - stage, m); gpipe: m).
int max_in_flight(const std::vector<PipeAction>& actions);

}  // namespace mt::parallel
