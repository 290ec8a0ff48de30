// What: the start-up banner (rank 0, every command that trains) and `meshtrain info`, which
// prints what every rank detected about its launch (launch_env.h) and what the binary is
// (build_info.h). `info --json` is what the launch tests and users' sbatch scripts read.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/device.h"
#include "core/log.h"
#include "launch/blas_env.h"
#include "launch/build_info.h"
#include "launch/commands.h"
#include "launch/launch_env.h"

namespace mt::launch {

namespace log = core::log;

namespace {

// "srun (Slurm job 12, step 0)"
std::string launcher_line(const LaunchInfo& i) {
  std::string s = launcher_name(i.launcher);
  if (!i.slurm_job_id.empty()) {
    s += fmt::format(" (Slurm job {}{}{})", i.slurm_job_id, i.slurm_step_id.empty() ? "" : ", step " + i.slurm_step_id,
                     i.slurm_nodelist.empty() ? "" : ", nodes " + i.slurm_nodelist);
  }
  return s;
}

// "vm [0-1]" or "n1 [0-3], n2 [4-7], ... (+14 hosts)"
std::string hosts_line(const std::vector<HostRanks>& hosts) {
  constexpr size_t kShown = 4;
  std::string s;
  for (size_t h = 0; h < hosts.size() && h < kShown; ++h) {
    s += fmt::format("{}{} [{}]", h ? ", " : "", hosts[h].host, format_ranks(hosts[h].ranks));
  }
  if (hosts.size() > kShown) s += fmt::format(", ... (+{} hosts)", hosts.size() - kShown);
  return s;
}

// "2 per host" or "4, 4, 3"
std::string per_host(const std::vector<HostRanks>& hosts) {
  bool uniform = true;
  for (const auto& h : hosts) uniform = uniform && h.ranks.size() == hosts.front().ranks.size();
  if (uniform) return fmt::format("{} per host", hosts.front().ranks.size());
  std::vector<size_t> n;
  for (const auto& h : hosts) n.push_back(h.ranks.size());
  return fmt::format("{} per host", fmt::join(n, ", "));
}

std::string devices_line(const JobLaunch& job, const std::string& device) {
  std::string s = fmt::format("device {} (built: {})", device, fmt::join(core::built_device_backends(), ", "));
  if (device != "cpu") {
    s += " | CUDA_VISIBLE_DEVICES";
    for (const auto& i : job.ranks) {
      if (i.mpi.local_rank == 0) {
        s += fmt::format(" {}={}", i.host, i.visible_gpus.empty() ? "(unset)" : i.visible_gpus);
      }
    }
  }
  return s;
}

}  // namespace

void print_banner(const JobLaunch& job, parallel::Communicator& world, const core::Config& cfg, int threads) {
  if (world.rank() != 0) return;
  const BuildInfo b = build_info();
  const int tp = cfg.parallel.tp, pp = cfg.parallel.pp;
  const int dp = cfg.parallel.dp > 0 ? cfg.parallel.dp : std::max(1, world.size() / (tp * pp));
  log::info("meshtrain {} ({}) | launcher {} | {} rank(s) on {} host(s), {}: {}", b.version, b.build_type,
            launcher_line(job.self), world.size(), job.hosts.size(), per_host(job.hosts),
            job.world_hosts.empty() || hosts_line(job.world_hosts) == hosts_line(job.hosts)
                ? hosts_line(job.hosts)  // (world ranks = launcher ranks)
                : fmt::format("{} (launcher ranks: {})", hosts_line(job.world_hosts), hosts_line(job.hosts)));
  // (pp 1: the dp x tp line of before, which scripts and tests grep)
  log::info("mesh dp {}{} x tp {} | {} | {} thread(s) per rank | BLAS core {} | backend {}", dp,
            pp > 1 ? fmt::format(" x pp {}", pp) : "", tp,
            devices_line(job, cfg.train.device), threads, b.blas_core, world.backend_name());
  if (job.hosts.size() > 1 && !job.placement_summary.empty()) log::info("placement: {}", job.placement_summary);
  log::info("build: {}", build_line(b));
  if (cfg.train.micro_batch_auto) {  // core::auto_micro_batch's rule
    const int per = cfg.train.batch_size / std::max(1, dp);
    if (cfg.data.mode == "documents")
      log::info("train.micro_batch: auto = {} (data.batch_tokens / model.seq_len / dp {})", cfg.train.micro_batch, dp);
    else
      log::info("train.micro_batch: auto = {} (train.batch_size {} / dp {} = {} per replica, {} micro-batch(es) per "
                "step{})", cfg.train.micro_batch, cfg.train.batch_size, dp, per, per / cfg.train.micro_batch,
                pp > 1 ? fmt::format(", at least pp = {}", pp) : "");
  }
}

int cmd_info(const JobLaunch& job, bool json) {
  if (job.self.mpi.rank != 0) return job.self.errors.empty() ? 0 : 1;
  const BuildInfo b = build_info();
  const int threads = threads_per_rank(0, job.self);
  int errors = 0;
  for (const auto& i : job.ranks) errors += static_cast<int>(i.errors.size());
  if (json) {
    nlohmann::json hosts = nlohmann::json::array(), ranks = nlohmann::json::array();
    for (const auto& h : job.hosts) hosts.push_back({{"host", h.host}, {"ranks", h.ranks}});
    for (const auto& i : job.ranks) ranks.push_back(to_json(i));
    nlohmann::json j{{"launcher", launcher_name(job.self.launcher)}, {"world", job.self.mpi.size},
                     {"num_nodes", job.self.mpi.num_nodes}, {"threads_per_rank", threads},
                     {"hosts", hosts}, {"ranks", ranks}, {"job_warnings", job.job_warnings},
                     {"build", to_json(b)}};
    if (!job.placement_record.empty()) j["placement"] = nlohmann::json::parse(job.placement_record);
    std::printf("%s\n", j.dump(2).c_str());
    return errors ? 1 : 0;
  }
  std::printf("meshtrain %s (%s), %s\n", b.version.c_str(), b.build_type.c_str(), b.compiler.c_str());
  std::printf("build     %s\n", build_line(b).c_str());
  std::printf("launcher  %s\n", launcher_line(job.self).c_str());
  std::printf("world     %d rank(s), %d node(s) (MPI shared-memory split), %zu host(s), %s\n", job.self.mpi.size,
              job.self.mpi.num_nodes, job.hosts.size(), per_host(job.hosts).c_str());
  for (const auto& h : job.hosts) std::printf("  %-24s ranks %s\n", h.host.c_str(), format_ranks(h.ranks).c_str());
  std::printf("threads   %d per rank (from the affinity masks of the node's ranks; rank 0's mask: %d CPUs), BLAS "
              "core %s (%s)\n", threads, job.self.cpus, b.blas_core.c_str(), b.blas_variant.c_str());
  std::printf("\n%-5s %-20s %-11s %-17s %-5s %-14s %s\n", "rank", "host", "local", "launcher", "CPUs", "GPUs",
              "launcher variables");
  for (const auto& i : job.ranks) {
    std::string vars;
    for (const char* k : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID", "SLURM_LOCALID",
                          "SLURM_STEP_ID", "PMIX_RANK"}) {
      if (auto it = i.vars.find(k); it != i.vars.end()) vars += fmt::format("{}={} ", k, it->second);
    }
    std::printf("%-5d %-20s %-11s %-17s %-5d %-14s %s\n", i.mpi.rank, i.host.c_str(),
                fmt::format("{}/{}", i.mpi.local_rank, i.mpi.local_size).c_str(), launcher_name(i.launcher), i.cpus,
                i.visible_gpus.empty() ? "-" : i.visible_gpus.c_str(), vars.c_str());
    for (const auto& n : i.notes) std::printf("      note: %s\n", n.c_str());
    for (const auto& w : i.warnings) std::printf("      WARNING: %s\n", w.c_str());
    for (const auto& e : i.errors) std::printf("      ERROR: %s\n", e.c_str());
  }
  if (!job.placement_summary.empty()) {
    const auto p = nlohmann::json::parse(job.placement_record);
    std::printf("\nplacement dp %d x pp %d x tp %d: %s\n", p["dp"].get<int>(), p["pp"].get<int>(), p["tp"].get<int>(),
                job.placement_summary.c_str());
    for (const auto& g : p["tp_groups"])
      std::printf("  tp group %-16s %s\n", fmt::format("{}", fmt::join(g["ranks"].get<std::vector<int>>(), ",")).c_str(),
                  fmt::format("{}", fmt::join(g["hosts"].get<std::vector<std::string>>(), " + ")).c_str());
  }
  for (const auto& w : job.job_warnings) std::printf("WARNING: %s\n", w.c_str());
  return errors ? 1 : 0;
}

}  // namespace mt::launch
