// What: cmd_bench_pipeline (see bench_pipeline.h) and its synthetic stage model.
#include "launch/bench_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "parallel/pipeline/runner.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/stages.h"

namespace mt::launch {

namespace {

using Clock = std::chrono::steady_clock;

void sleep_ms(double ms) { std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms)); }

// A model of n_layer blocks that each take block_ms to run forward (2x backward), with one
// scalar parameter per block, embedding and head; the residual stream it passes on is
// real memory (B*T x C fp32), touched on the way through.
class SleepArchitecture final : public parallel::Architecture {
 public:
  SleepArchitecture(const core::ModelConfig& cfg, double block_ms) : Architecture(cfg), block_ms_(block_ms) {}
  std::string name() const override { return "sleep"; }
  std::string tp_violation(int tp) const override { return tp == 1 ? "" : "parallel.tp must be 1"; }
  std::string tp_constraint() const override { return "tp 1"; }
  std::vector<parallel::ParamSpec> param_specs() const override {
    std::vector<parallel::ParamSpec> v;
    v.push_back({"emb", {1}, parallel::Partition(), false, 0, 1, -1});
    for (int l = 0; l < config().n_layer; ++l) v.push_back({"b" + std::to_string(l), {1}, parallel::Partition(), false, 0, 1, l});
    v.push_back({"head", {1}, parallel::Partition(), false, 0, 1, config().n_layer});
    return v;
  }
  double flops_per_token(int) const override { return 0; }
  TpTraffic tp_traffic(int64_t, int) const override { return {}; }
  SampleCost sample_cost() const override { return {}; }
  std::vector<std::pair<std::string, int64_t>> shape_keys() const override { return {}; }
  std::string describe(int) const override { return "sleep"; }
  std::unique_ptr<parallel::Model> build(const parallel::ModelContext& ctx) const override;
  double block_ms() const { return block_ms_; }

 private:
  double block_ms_;
};

class SleepModel final : public parallel::Model {
 public:
  SleepModel(std::shared_ptr<const SleepArchitecture> a, const parallel::ModelContext& ctx)
      : Model(a, ctx), block_ms_(a->block_ms()) {
    const size_t n = static_cast<size_t>(num_chunks());
    in_.resize(n), out_.resize(n), dout_.resize(n), din_.resize(n);
  }
  double forward(const int32_t*, const int32_t*, int, int, const int32_t*) override { return 0; }
  void backward(float, const parallel::GradReadyFn&) override {}
  size_t activation_bytes() const override {
    size_t b = 0;
    for (const auto* v : {&in_, &out_, &dout_, &din_})
      for (const auto& x : *v) b += x.size() * sizeof(float);
    return b;
  }
  void* chunk_input(int c, int B, int T) override {
    ensure(B, T);
    return in_[static_cast<size_t>(c)].data();
  }
  double forward_chunk(int c, const int32_t*, const int32_t*, int B, int T, const int32_t*) override {
    ensure(B, T);
    const auto [l0, l1] = chunk_layers(c);
    auto& in = in_[static_cast<size_t>(c)];
    std::memcpy(out_[static_cast<size_t>(c)].data(), in.data(), in.size() * sizeof(float));
    sleep_ms(block_ms_ * (l1 - l0));
    return 0;
  }
  const void* chunk_output(int c) const override { return out_[static_cast<size_t>(c)].data(); }
  void* chunk_output_grad(int c) override { return dout_[static_cast<size_t>(c)].data(); }
  void backward_chunk(int c, float, const parallel::GradReadyFn&) override {
    const auto [l0, l1] = chunk_layers(c);
    auto& d = dout_[static_cast<size_t>(c)];
    std::memcpy(din_[static_cast<size_t>(c)].data(), d.data(), d.size() * sizeof(float));
    sleep_ms(2 * block_ms_ * (l1 - l0));
  }
  const void* chunk_input_grad(int c) const override { return din_[static_cast<size_t>(c)].data(); }

 private:
  void ensure(int B, int T) {
    const size_t n = static_cast<size_t>(stream_numel(B, T));
    for (auto* v : {&in_, &out_, &dout_, &din_})
      for (auto& x : *v) x.resize(n, 0.0f);
  }
  double block_ms_;
  std::vector<std::vector<float>> in_, out_, dout_, din_;  // per chunk
};

std::unique_ptr<parallel::Model> SleepArchitecture::build(const parallel::ModelContext& ctx) const {
  return std::make_unique<SleepModel>(std::static_pointer_cast<const SleepArchitecture>(shared_from_this()), ctx);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int cmd_bench_pipeline(const BenchPipelineArgs& a, parallel::Communicator& world) {
  const int p = world.size(), rank = world.rank();
  MT_CHECK(p >= 2, "bench pipeline needs at least 2 ranks (mpirun -np P: P pipeline stages)");
  nlohmann::json rows = nlohmann::json::array();
  if (rank == 0) {
    std::printf("pipeline bubble: %d stages, %d block(s) per stage, forward %.1f ms / backward %.1f ms per block, "
                "stream %d x %d x %d fp32 (%.2f MiB) per micro-batch\n",
                p, a.layers_per_stage, a.block_ms, 2 * a.block_ms, a.B, a.T, a.C,
                static_cast<double>(a.B) * a.T * a.C * 4 / 1048576.0);
    std::printf("  %-12s %3s %3s %4s %10s %10s %10s %10s %6s\n", "schedule", "p", "v", "m", "step ms", "theory",
                "mean", "max", "slots0");
  }
  for (const std::string& name : a.schedules) {
    const parallel::PipeSchedule sched = parallel::parse_pipe_schedule(name);
    const int v = sched == parallel::PipeSchedule::Interleaved ? a.virtual_stages : 1;
    core::ModelConfig mc;
    mc.n_layer = p * a.layers_per_stage;  // (interleaved: each rank's blocks in v chunks)
    mc.n_embd = a.C;
    mc.seq_len = a.T;
    const auto arch_v = std::make_shared<SleepArchitecture>(mc, a.block_ms);
    const std::vector<std::pair<int, int>> vstages = parallel::split_layers(*arch_v, p, v, {});
    parallel::ModelContext ctx;
    ctx.stage = parallel::stage_layers(vstages, p, rank);
    auto model = arch_v->build(ctx);
    for (int m : a.micro) {
      try {
        parallel::check_pipeline(sched, p, v, m);
      } catch (const core::Error&) {
        if (rank == 0) std::printf("  %-12s %3d %3d %4d   (not valid: skipped)\n", name.c_str(), p, v, m);
        continue;
      }
      parallel::PipelineRunner runner(*arch_v, ctx, *model, world, world, sched, v);
      std::vector<int32_t> tokens(static_cast<size_t>(a.B) * a.T, 0);
      std::vector<parallel::PipeMicro> micro(static_cast<size_t>(m),
                                             parallel::PipeMicro{tokens.data(), tokens.data(), nullptr, a.B, a.T});
      std::vector<double> step_ms, mean_b, max_b;
      int slots0 = 0;
      for (int r = 0; r <= a.repeat; ++r) {
        world.barrier();
        const auto t0 = Clock::now();
        runner.train(micro, 1.0f, {}, {});
        const double busy = runner.last_timing().run_ms - runner.last_timing().idle_ms;
        const double end = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        double mine[3] = {end, busy, static_cast<double>(runner.last_timing().slots)};
        std::vector<double> all(3 * static_cast<size_t>(p));
        world.all_gather(mine, all.data(), 3, parallel::DType::F64);
        if (r == 0) continue;  // warm-up
        double T = 0;
        for (int s = 0; s < p; ++s) T = std::max(T, all[3 * static_cast<size_t>(s)]);
        double sum = 0, mx = 0;
        for (int s = 0; s < p; ++s) {
          const double b = 1.0 - all[3 * static_cast<size_t>(s) + 1] / T;
          sum += b, mx = std::max(mx, b);
        }
        step_ms.push_back(T), mean_b.push_back(sum / p), max_b.push_back(mx);
        slots0 = static_cast<int>(all[2]);
      }
      const double theory = parallel::theoretical_bubble(sched, p, v, m);
      if (rank == 0) {
        std::printf("  %-12s %3d %3d %4d %10.1f %10.3f %10.3f %10.3f %6d\n", name.c_str(), p, v, m, median(step_ms),
                    theory, median(mean_b), median(max_b), slots0);
        rows.push_back({{"schedule", name}, {"p", p}, {"v", v}, {"m", m}, {"step_ms", median(step_ms)},
                        {"theory", theory}, {"bubble_mean", median(mean_b)}, {"bubble_max", median(max_b)},
                        {"slots_stage0", slots0}});
      }
    }
  }
  if (rank == 0 && !a.json_out.empty()) std::ofstream(a.json_out) << rows.dump(2) << "\n";
  return 0;
}

}  // namespace mt::launch
