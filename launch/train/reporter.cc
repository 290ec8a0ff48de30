// What: Reporter (see reporter.h). The texts and record fields here are an interface: tests
// (tests/e2e), scripts and users read them.
#include "launch/train/reporter.h"

#include <algorithm>

#include <cmath>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/log.h"
#include "launch/launch_env.h"
#include "launch/train/train_util.h"

namespace mt::launch {

namespace log = core::log;

Reporter::Reporter(const core::Config& cfg, bool leader)
    : cfg_(cfg), leader_(leader), live_(leader && want_progress_line()) {}

bool Reporter::summary_records(int64_t steps) const {
  try {
    const auto j = nlohmann::json::parse(io::read_file(cfg_.run.dir + "/summary.json"));
    return j.value("steps", int64_t{-1}) == steps;
  } catch (const std::exception&) {
    return false;  // no (readable) summary
  }
}

void Reporter::already_complete(int64_t start, bool stopped_early, bool done) const {
  if (!leader_) return;
  const std::string why = stopped_early && start < cfg_.train.steps
                              ? fmt::format("it stopped early at step {}", start)
                              : fmt::format("its checkpoint is at step {}, train.steps = {}", start, cfg_.train.steps);
  log::info("the run is already complete ({}){}", why,
            done ? fmt::format("; {}/summary.json has its result, nothing to do", cfg_.run.dir)
                 : "; no summary.json for it yet: running the final eval");
}

void Reporter::open(int64_t start, bool ended) {
  start_ = start;
  if (!leader_) return;
  // drop the records after the checkpoint (and, when the final eval is redone, its record)
  if (start > 0) io::truncate_metrics(cfg_.run.dir, start, /*keep_eval_at_step=*/!ended);
  metrics_ = io::MetricsWriter(cfg_.run.dir, /*append=*/start > 0);
  if (cfg_.run.tensorboard) tb_ = io::TbWriter(cfg_.run.dir + "/tb");
}

void Reporter::start(const RunFacts& facts, const std::string& memory_report) {
  facts_ = facts;
  const auto& floor = facts_.entropy_floor;
  if (leader_) {
    const auto& lo = facts_.loader;
    log::info("model: {}", facts_.model);
    if (facts_.pp > 1) {
      log::info("mesh: world {} = dp {} x pp {} x tp {} (rank = (dp x {} + stage) x {} + tp); {}", facts_.world,
                facts_.dp, facts_.pp, facts_.tp, facts_.pp, facts_.tp, describe_batch(lo));
    } else {
      log::info("mesh: world {} = dp {} x tp {}; {}", facts_.world, facts_.dp, facts_.tp, describe_batch(lo));
    }
    log::info("compute: {} on {}", facts_.compute, facts_.device);
    log::info("data: {}{}", facts_.data,
              floor ? fmt::format("; entropy floor at seq_len {}: {:.4f} nats/token", cfg_.model.seq_len, *floor)
                    : "");
    log::info("loader: schedule {} over {} dp replica(s), {} batch(es) prefetched{}", io::policy_name(lo.policy),
              facts_.dp, lo.prefetch, facts_.faults);
  }
  // (every rank: with a pipeline each stage holds different layers, so its memory differs)
  log::info("{}{}", facts_.pp > 1 ? fmt::format("stage {} of {}: ", facts_.stage, facts_.pp) : "", memory_report);
}

void Reporter::step(const StepStats& st, double process_train_ms) {
  if (!leader_) return;
  const auto& tc = cfg_.train;
  const int64_t s = st.step;
  const double mfu =
      facts_.peak_flops > 0 ? facts_.flops_per_token * st.tokens / (st.ms / 1000.0) / facts_.peak_flops : 0.0;
  tb_.scalar("train/loss", s, static_cast<float>(st.loss));
  tb_.scalar("train/lr", s, static_cast<float>(st.lr));
  tb_.scalar("train/grad_norm", s, static_cast<float>(st.grad_norm));
  tb_.scalar("perf/tokens_per_s", s, static_cast<float>(st.tokens_per_s));
  tb_.scalar("perf/mfu", s, static_cast<float>(mfu));
  tb_.flush();
  nlohmann::json row = {{"step", s}, {"loss", st.loss}, {"lr", st.lr}, {"grad_norm", st.grad_norm}, {"mfu", mfu},
                        {"ms", st.ms}, {"tokens_per_s", st.tokens_per_s}, {"comm_ms", st.comm_ms},
                        {"exposed_comm_ms", st.exposed_comm_ms}, {"data_wait_ms", st.data_ms},
                        {"imbalance", st.imbalance}, {"tokens", st.tokens}, {"replica_tokens", st.replica_tokens},
                        {"skipped", st.skipped}, {"pad_fraction", st.pad_fraction}, {"mem", io::memory_json(st.mem)}};
  if (std::isfinite(st.kd_loss)) {  // distillation: the parts of the optimized loss
    row["ce_loss"] = st.ce_loss;
    row["kd_loss"] = st.kd_loss;
    tb_.scalar("train/ce_loss", s, static_cast<float>(st.ce_loss));
    tb_.scalar("train/kd_loss", s, static_cast<float>(st.kd_loss));
    tb_.flush();
  }
  if (!st.pp.empty()) {  // per stage: its idle time in the schedule (the bubble) and activation slots
    // (bubble: the part of the schedule's time, the slowest stage's, a stage does not compute)
    double span = 0;
    for (const PipeStageStats& p : st.pp) span = std::max(span, p.run_ms);
    nlohmann::json stages = nlohmann::json::array();
    for (size_t k = 0; k < st.pp.size(); ++k) {
      const PipeStageStats& p = st.pp[k];
      stages.push_back({{"stage", k}, {"run_ms", p.run_ms}, {"idle_ms", p.idle_ms},
                        {"bubble", span > 0 ? 1.0 - (p.run_ms - p.idle_ms) / span : 0.0}, {"slots", p.slots},
                        {"act_mib", p.act_bytes / 1048576.0}});
    }
    row["pp"] = stages;
  }
  metrics_.write(row);
  end_progress_line();
  if (s % tc.log_every == 0 || s + 1 == tc.steps) {
    log::info("step {:>6}/{} | loss {:.4f} | lr {:.2e} | grad_norm {:.3f} | {:.1f} ms | {:.0f} tok/s | data wait "
              "{:.2f} ms{}{}", s + 1, tc.steps, st.loss, st.lr, st.grad_norm, st.ms, st.tokens_per_s, st.data_ms,
              facts_.dp > 1 ? fmt::format(" | comm {:.1f} ms (exposed {:.1f}) | imbalance {:.2f}", st.comm_ms,
                                          st.exposed_comm_ms, st.imbalance)
                            : "",
              facts_.loader.mode != io::SampleMode::Concat ? fmt::format(" | pad {:.1f}%", 100.0 * st.pad_fraction)
                                                           : "");
  }
  if (live_) {
    const double eta_s = (tc.steps - s - 1) * (process_train_ms / (s + 1 - start_)) / 1000.0;
    std::printf("step %lld/%lld | loss %.4f | %.0f tok/s | MFU %.1f%% | ETA %02d:%02d:%02d",
                static_cast<long long>(s + 1), static_cast<long long>(tc.steps), st.loss, st.tokens_per_s,
                100.0 * mfu, static_cast<int>(eta_s / 3600), static_cast<int>(eta_s / 60) % 60,
                static_cast<int>(eta_s) % 60);
    std::fflush(stdout);
  }
}

void Reporter::skipped(int64_t steps_done, int64_t skipped_so_far) const {
  if (leader_) log::warn("step {}: non-finite gradient norm, update skipped ({} so far)", steps_done, skipped_so_far);
}

void Reporter::eval(int64_t s, const EvalResult& e) {
  if (!leader_) return;
  const auto& floor = facts_.entropy_floor;
  const double ev = e.loss;
  nlohmann::json j{{"step", s}, {"eval_loss", ev}, {"eval_acc", e.acc()}, {"eval_acc_top5", e.acc_top5()},
                   {"eval_targets", e.targets}, {"eval_top1_hits", e.top1}, {"eval_top5_hits", e.top5}};
  if (floor) j["data_entropy"] = *floor;
  metrics_.write(j);
  tb_.scalar("eval/loss", s, static_cast<float>(ev));
  tb_.scalar("eval/acc", s, static_cast<float>(e.acc()));
  tb_.scalar("eval/acc_top5", s, static_cast<float>(e.acc_top5()));
  tb_.flush();
  end_progress_line();
  log::info("eval step {:>6} | eval_loss {:.4f} | eval_acc {:.4f} | eval_acc_top5 {:.4f}{}", s, ev, e.acc(),
            e.acc_top5(),
            floor ? fmt::format(" | data_entropy {:.4f} | gap {:+.1f}%", *floor, 100.0 * (ev / *floor - 1.0)) : "");
}

// The highest eval_acc of the run's metrics.jsonl (resumes included: the file keeps the
// records up to the checkpoint), null when it has none.
nlohmann::json Reporter::best_eval_acc() const {
  nlohmann::json best;
  std::string text;
  try {
    text = io::read_file(cfg_.run.dir + "/metrics.jsonl");
  } catch (const std::exception&) {
    return best;
  }
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("eval_acc") || !j["eval_acc"].is_number()) continue;
    if (best.is_null() || j["eval_acc"].get<double>() > best.get<double>()) best = j["eval_acc"];
  }
  return best;
}

void Reporter::eval_abandoned(int64_t s) const {
  if (leader_) log::warn("eval at step {} abandoned for preemption (resume=auto redoes it)", s);
}

void Reporter::early_stop(int evals_without_gain) const {
  if (leader_) log::info("early stop: eval loss has not improved for {} evals", evals_without_gain);
}

void Reporter::preempted(int64_t at, bool last) const {
  if (leader_) {
    log::warn("preempted after step {}: writing a checkpoint and exiting (resume=auto {})", at,
              last ? "runs the final eval" : "continues");
  }
}

void Reporter::stopped_for_preemption(int64_t steps_done, const std::string& checkpoint_dir) const {
  if (leader_) log::info("stopped for preemption at step {}; checkpoint under {}", steps_done, checkpoint_dir);
}

void Reporter::paused(int64_t steps_done, bool already) const {
  if (!leader_) return;
  log::info("{} at step {} (train.stop_at_step = {}, train.steps = {}): {}resume=auto continues",
            already ? "already paused" : "paused", steps_done, cfg_.train.stop_at_step, cfg_.train.steps,
            already ? "its checkpoint is there, nothing to do; " : "eval and checkpoint written; ");
}

void Reporter::end_progress_line() const {
  if (live_) std::printf("\r\033[K");
}

void Reporter::summary(const TrainSummary& sum, const std::vector<int64_t>& checksums, const RunTotals& totals,
                       const ProcessFigures& process, const std::vector<core::MemoryBreakdown>& mem) {
  if (!leader_) return;
  const auto& floor = facts_.entropy_floor;
  std::vector<std::string> hex;
  for (int64_t v : checksums) hex.push_back(fmt::format("{:016x}", static_cast<uint64_t>(v)));
  nlohmann::json j{{"final_loss", sum.final_loss},
                   {"param_checksums", hex},
                   {"final_eval_loss", sum.final_eval_loss ? nlohmann::json(*sum.final_eval_loss) : nlohmann::json()},
                   {"data_entropy", floor ? nlohmann::json(*floor) : nlohmann::json()},
                   {"final_eval_acc", sum.final_eval ? nlohmann::json(sum.final_eval->acc()) : nlohmann::json()},
                   {"final_eval_acc_top5",
                    sum.final_eval ? nlohmann::json(sum.final_eval->acc_top5()) : nlohmann::json()},
                   {"best_eval_acc", best_eval_acc()},
                   {"tokens_per_s", sum.tokens_per_s},
                   {"wall_s", sum.wall_s},
                   {"tokens", totals.tokens},
                   {"starts", totals.starts + 1},
                   {"this_process", {{"steps", process.steps}, {"tokens_per_s", process.tokens_per_s},
                                     {"wall_s", process.wall_s}}},
                   {"steps", sum.steps_done},
                   {"early_stopped", sum.early_stopped},
                   {"skipped_steps", sum.skipped_steps},
                   {"params", facts_.params},
                   {"world", facts_.world},
                   {"dp", facts_.dp},
                   {"tp", facts_.tp}};
  // the run's memory: the rank with the highest peak (its breakdown), and every rank's peak
  if (!mem.empty()) {
    size_t worst = 0;
    std::vector<size_t> peaks;
    for (size_t r = 0; r < mem.size(); ++r) {
      peaks.push_back(mem[r].total());
      if (peaks[r] > peaks[worst]) worst = r;
    }
    j["mem"] = io::memory_json(mem[worst]);
    j["mem"]["rank"] = worst;
    j["mem"]["peak_per_rank"] = peaks;
  }
  io::write_file_atomic(cfg_.run.dir + "/summary.json", j.dump(2) + "\n");
  log::info("done: {} steps in {:.1f} s | final loss {:.4f} | eval loss {:.4f} | eval acc {:.4f}{} | {:.0f} tok/s | {}",
            sum.steps_done, sum.wall_s, sum.final_loss, sum.final_eval_loss.value_or(NAN),
            sum.final_eval ? sum.final_eval->acc() : NAN,
            floor ? fmt::format(" | data_entropy {:.4f} (gap {:+.1f}%)", *floor,
                                100.0 * (sum.final_eval_loss.value_or(NAN) / *floor - 1.0))
                  : "",
            sum.tokens_per_s, cfg_.run.dir);
}

}  // namespace mt::launch
