// What: a sweep's state, <dir>/sweep.json: the sweep's identity, every trial (its params,
// status, the step it reached, its eval loss at each rung, its last command) and the
// successive-halving decisions; what a trial's run directory says about it (metrics.jsonl,
// summary.json); and the halving rule itself (which trials a rung keeps).
// Why: the sweep must survive being killed at any moment. sweep.json is rewritten atomically
// after every change, and it only records facts that are also on disk in the trials' run
// directories (rerunning a trial with resume=auto is always safe), so a rerun of the same
// command picks up where the last one stopped; the identity keeps two sweeps out of one
// directory.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "launch/sweep/spec.h"

namespace mt::launch::sweep {

// pending: not at its next target yet (new, or waiting for the next level); running: launched
// (a sweep killed meanwhile leaves it so: the rerun resumes it); paused: at a rung, evaluated
// and checkpointed; stopped: halving stopped it at a rung; finished: trained to train.steps;
// failed: its run failed (the sweep goes on without it).
enum class Status { Pending, Running, Paused, Stopped, Finished, Failed };
const char* status_name(Status s);
Status parse_status(const std::string& s);

struct TrialRecord {
  Trial trial;
  Status status = Status::Pending;
  int64_t reached = 0;                    // steps done at its last evaluated target
  std::map<int64_t, double> rung_loss;    // eval loss at each rung it reached
  std::optional<double> final_eval_loss;  // at train.steps (summary.json), finished trials
  std::optional<double> best_eval_loss;   // the lowest eval loss in its metrics.jsonl
  double tokens_per_s = 0;
  int starts = 0;                         // launches of its run
  std::string command;                    // its last launch command
  std::string error;                      // failed: why
};

struct RungDecision {
  int64_t step = 0;
  std::vector<int> kept, stopped;  // trial ids
};

struct State {
  std::string identity, sweep_file;
  std::vector<int64_t> rungs;
  int64_t steps = 0;
  std::vector<TrialRecord> trials;
  std::vector<RungDecision> decisions;
  const RungDecision* decision_at(int64_t step) const;
};

std::string to_json(const State& st);
State state_from_json(const std::string& text, const std::string& origin);
// A fresh state for a spec and its trials.
State new_state(const Spec& spec, const std::vector<Trial>& trials, const std::string& identity);

// What a trial's run directory holds now.
struct RunRecords {
  std::map<int64_t, double> evals;       // step -> eval loss (the last record of a step)
  double tokens = 0, train_ms = 0;        // over its step records
  int64_t steps_recorded = 0;             // step records
  std::optional<int64_t> summary_steps;   // summary.json's steps (the run ended)
  std::optional<double> summary_eval;     // ... its final_eval_loss
  double summary_tokens_per_s = 0;
  int summary_starts = 0;
};
RunRecords read_run(const std::string& run_dir);

// Halving at a rung: among `losses` (trial id -> eval loss at that rung; NaN ranks last, ties
// by id), keep survivors(n, eta). Returns the decision.
RungDecision decide_rung(int64_t step, const std::map<int, double>& losses, double eta);

// The best finished trial (lowest final eval loss; ties by id), or null.
const TrialRecord* best_trial(const State& st);

}  // namespace mt::launch::sweep
