// What: launcher classification, cross-checks and the gather of every rank's view
// (see launch_env.h).
#include "launch/launch_env.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "io/metrics.h"
#include "parallel/placement.h"

extern char** environ;

namespace mt::launch {

const char* launcher_name(Launcher l) {
  switch (l) {
    case Launcher::None: return "none";
    case Launcher::Mpirun: return "mpirun";
    case Launcher::MpirunInSbatch: return "mpirun-in-sbatch";
    case Launcher::MpirunInSalloc: return "mpirun-in-salloc";
    case Launcher::Srun: return "srun";
    case Launcher::Other: return "other";
  }
  return "?";
}

namespace {

bool interesting(const std::string& name) {
  for (const char* prefix : {"OMPI_COMM_WORLD_", "SLURM_", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (name.rfind(prefix, 0) == 0) return true;
  }
  return name == "CUDA_VISIBLE_DEVICES" || name == "ENVIRONMENT";
}

// Slurm variables worth keeping in the record (the rest, e.g. SLURM_SRUN_COMM_PORT, is noise).
bool kept_slurm(const std::string& name) {
  static const char* const keep[] = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_PROCID",
                                     "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS",
                                     "SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES", "SLURM_JOB_NODELIST",
                                     "SLURM_STEP_NODELIST", "SLURM_MPI_TYPE", "SLURM_CPUS_PER_TASK",
                                     "SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_RESTART_COUNT"};
  return std::find_if(std::begin(keep), std::end(keep), [&](const char* k) { return name == k; }) != std::end(keep);
}

class Vars {
 public:
  explicit Vars(const EnvMap& env) : env_(env) {}
  bool has(const char* k) const { return env_.count(k) != 0; }
  std::string str(const char* k) const {
    auto it = env_.find(k);
    return it == env_.end() ? "" : it->second;
  }
  std::string str(const char* k, const char* alt) const { return has(k) ? str(k) : str(alt); }
  // The variable as a non-negative integer; nullopt when unset; a warning when not a number.
  std::optional<long> num(const char* k, std::vector<std::string>* warnings) const {
    auto it = env_.find(k);
    if (it == env_.end()) return std::nullopt;
    char* end = nullptr;
    const long v = std::strtol(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end != '\0' || v < 0) {
      warnings->push_back(fmt::format("{}='{}' is not a number; ignored", k, it->second));
      return std::nullopt;
    }
    return v;
  }

 private:
  const EnvMap& env_;
};

// Cross-check one variable against MPI's value; a mismatch is a warning naming both.
void check(const Vars& v, const char* name, int mpi_value, const char* what, std::vector<std::string>* warnings) {
  const auto x = v.num(name, warnings);
  if (x && *x != mpi_value) {
    warnings->push_back(fmt::format("{}={} contradicts MPI's {} {}; using MPI's (the variable is stale or "
                                    "describes another process)",
                                    name, *x, what, mpi_value));
  }
}

std::string slurm_ignored(const Vars& v) {
  std::string s;
  for (const char* k : {"SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_STEP_ID"}) {
    if (v.has(k)) s += fmt::format("{}{}={}", s.empty() ? "" : ", ", k, v.str(k));
  }
  return s;
}

}  // namespace

namespace {
std::optional<EnvMap> g_snapshot;  // written once in main() before MPI_Init, then only read
EnvMap read_environ() {
  return environ_where([](const std::string& k) {
    return interesting(k) && (k.rfind("SLURM_", 0) != 0 || kept_slurm(k));
  });
}
}  // namespace

EnvMap environ_where(const std::function<bool(const std::string&)>& keep) {
  EnvMap m;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    std::string k = kv.substr(0, eq);
    if (keep(k)) m[std::move(k)] = kv.substr(eq + 1);
  }
  return m;
}

void snapshot_launch_vars() { g_snapshot = read_environ(); }
EnvMap launch_vars_from_environ() { return g_snapshot ? *g_snapshot : read_environ(); }

LaunchInfo classify_launch(const MpiPlacement& mpi, const EnvMap& env, const std::string& host) {
  LaunchInfo info;
  info.mpi = mpi;
  info.host = host;
  info.vars = env;
  const Vars v(env);
  auto& warn = info.warnings;
  info.visible_gpus = v.str("CUDA_VISIBLE_DEVICES");
  info.slurm_nodelist = v.str("SLURM_JOB_NODELIST", "SLURM_NODELIST");
  const std::string job = v.str("SLURM_JOB_ID", "SLURM_JOBID");
  const std::string step = v.str("SLURM_STEP_ID", "SLURM_STEPID");
  const bool in_slurm_job = !job.empty();
  const bool ompi = v.has("OMPI_COMM_WORLD_RANK") || v.has("OMPI_COMM_WORLD_SIZE");
  const bool srun_task = !step.empty() && v.has("SLURM_PROCID");
  info.slurm_job_id = job;

  // The launcher's own claim of the world size, for the world-of-1 check below.
  std::optional<long> claimed_size;
  const char* claimed_by = "";

  if (ompi) {
    // Open MPI's mpirun (or its daemons) started this rank: OMPI_COMM_WORLD_* describe it.
    // Inside a Slurm allocation the SLURM_* task variables are the batch shell's (PROCID=0 on
    // every rank) or, on other nodes, those of mpirun's daemon step: ignore them.
    info.launcher = !in_slurm_job                  ? Launcher::Mpirun
                    : v.str("ENVIRONMENT") == "BATCH" ? Launcher::MpirunInSbatch
                                                      : Launcher::MpirunInSalloc;
    check(v, "OMPI_COMM_WORLD_RANK", mpi.rank, "rank", &warn);
    check(v, "OMPI_COMM_WORLD_SIZE", mpi.size, "world size", &warn);
    check(v, "OMPI_COMM_WORLD_LOCAL_RANK", mpi.local_rank, "local rank", &warn);
    check(v, "OMPI_COMM_WORLD_LOCAL_SIZE", mpi.local_size, "local size", &warn);
    claimed_size = v.num("OMPI_COMM_WORLD_SIZE", &warn);
    claimed_by = "OMPI_COMM_WORLD_SIZE (mpirun)";
    if (in_slurm_job) {
      const std::string ign = slurm_ignored(v);
      if (!ign.empty()) {
        info.notes.push_back(fmt::format("ignored {}: mpirun started this rank inside Slurm job {}; these describe the "
                                         "batch shell or mpirun's daemon step, not this rank",
                                         ign, job));
      }
    }
  } else if (srun_task) {
    info.launcher = Launcher::Srun;
    info.slurm_step_id = step;
    check(v, "SLURM_PROCID", mpi.rank, "rank", &warn);
    check(v, "SLURM_LOCALID", mpi.local_rank, "local rank", &warn);
    const char* ntasks = v.has("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
    check(v, ntasks, mpi.size, "world size", &warn);
    check(v, "SLURM_STEP_NUM_NODES", mpi.num_nodes, "node count", &warn);
    check(v, "PMIX_RANK", mpi.rank, "rank", &warn);
    claimed_size = v.num(ntasks, &warn);
    claimed_by = v.has("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS (srun)" : "SLURM_NTASKS (srun)";
  } else if (v.has("PMIX_RANK") || v.has("PMI_RANK")) {
    // another PMI launcher (prterun, mpiexec.hydra, ...)
    info.launcher = Launcher::Other;
    if (v.has("PMIX_RANK")) check(v, "PMIX_RANK", mpi.rank, "rank", &warn);
    if (v.has("PMI_RANK")) check(v, "PMI_RANK", mpi.rank, "rank", &warn);
    if (v.has("PMI_SIZE")) {
      check(v, "PMI_SIZE", mpi.size, "world size", &warn);
      claimed_size = v.num("PMI_SIZE", &warn);
      claimed_by = "PMI_SIZE";
    }
  } else {
    info.launcher = mpi.size > 1 ? Launcher::Other : Launcher::None;
    if (in_slurm_job) {
      // run directly in the batch script or an salloc shell, without srun or mpirun
      const auto ntasks = v.num("SLURM_NTASKS", &warn);
      if (ntasks && *ntasks > 1 && mpi.size == 1) {
        warn.push_back(fmt::format("Slurm job {} has {} tasks but this process was started without srun or mpirun, "
                                   "so it runs alone on one task's share; launch it with `srun --mpi=pmix` or "
                                   "`mpirun` (examples/slurm/)",
                                   job, *ntasks));
      }
      const std::string ign = slurm_ignored(v);
      if (!ign.empty()) {
        info.notes.push_back(fmt::format("ignored {}: no srun step (no SLURM_STEP_ID), these describe the batch shell",
                                         ign));
      }
    }
  }
  if (mpi.size == 1 && claimed_size && *claimed_size > 1) {
    // this is the error, not one more warning about the same variable
    const std::string var = std::string(claimed_by).substr(0, std::string(claimed_by).find(' ')) + "=";
    warn.erase(std::remove_if(warn.begin(), warn.end(), [&](const std::string& w) { return w.rfind(var, 0) == 0; }),
               warn.end());
    info.errors.push_back(fmt::format(
        "{} says {} ranks but MPI_Init gave this process a world of 1: the launched copies do not form one MPI job "
        "and would each train alone into the same run directory",
        claimed_by, *claimed_size));
  }
  return info;
}

int cores_per_rank(int mine, int sum, int union_count, int local_size) {
  if (mine <= 0 || union_count <= 0) return 1;
  if (sum == union_count) return mine;  // disjoint: bound to its own cores
  return std::max(1, union_count / std::max(1, local_size));
}

int threads_per_rank(int configured, const LaunchInfo& self) {
  return configured > 0 ? configured : std::max(1, self.cores_per_rank);
}

std::vector<HostRanks> group_hosts(const std::vector<std::string>& host_of_rank) {
  std::vector<HostRanks> hosts;
  std::map<std::string, size_t> index;
  for (size_t r = 0; r < host_of_rank.size(); ++r) {
    auto [it, fresh] = index.emplace(host_of_rank[r], hosts.size());
    if (fresh) hosts.push_back({host_of_rank[r], {}});
    hosts[it->second].ranks.push_back(static_cast<int>(r));
  }
  return hosts;
}

std::string format_ranks(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (!s.empty()) s += ",";
    s += j == i ? std::to_string(ranks[i]) : fmt::format("{}-{}", ranks[i], ranks[j]);
    i = j + 1;
  }
  return s;
}

std::string pre_mpi_hint(const EnvMap& env) {
  const Vars v(env);
  const bool srun = v.has("SLURM_STEP_ID") || v.has("SLURM_STEPID");
  if (!srun || v.has("PMIX_RANK") || v.has("OMPI_COMM_WORLD_RANK")) return "";
  const std::string type = v.str("SLURM_MPI_TYPE");
  if (v.has("PMI_RANK") || type == "pmi2" || type == "none") {
    return fmt::format("started by srun with --mpi={} (no PMIx): Open MPI builds without Slurm's PMI (Debian, Ubuntu) "
                       "fail in MPI_Init under it; use `srun --mpi=pmix` (list the plugins: srun --mpi=list)",
                       type.empty() ? "pmi2" : type);
  }
  return "";
}

bool want_progress_line() {
  if (const char* force = std::getenv("MT_PROGRESS"); force && *force) return std::string(force) != "0";
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) return false;  // mpirun's pty, whatever mpirun's stdout is
  return isatty(STDOUT_FILENO) != 0;
}

nlohmann::json to_json(const LaunchInfo& i) {
  return {{"rank", i.mpi.rank}, {"size", i.mpi.size}, {"local_rank", i.mpi.local_rank},
          {"local_size", i.mpi.local_size}, {"num_nodes", i.mpi.num_nodes}, {"host", i.host},
          {"launcher", launcher_name(i.launcher)}, {"slurm_job_id", i.slurm_job_id},
          {"slurm_step_id", i.slurm_step_id}, {"slurm_nodelist", i.slurm_nodelist},
          {"visible_gpus", i.visible_gpus}, {"cpus", i.cpus}, {"cores_per_rank", i.cores_per_rank}, {"vars", i.vars}, {"notes", i.notes}, {"warnings", i.warnings},
          {"errors", i.errors}};
}

LaunchInfo launch_info_from_json(const nlohmann::json& j) {
  LaunchInfo i;
  i.mpi = {j.at("rank").get<int>(), j.at("size").get<int>(), j.at("local_rank").get<int>(),
           j.at("local_size").get<int>(), j.at("num_nodes").get<int>()};
  i.host = j.at("host").get<std::string>();
  const std::string name = j.at("launcher").get<std::string>();
  for (Launcher l : {Launcher::None, Launcher::Mpirun, Launcher::MpirunInSbatch, Launcher::MpirunInSalloc,
                     Launcher::Srun, Launcher::Other}) {
    if (name == launcher_name(l)) i.launcher = l;
  }
  i.slurm_job_id = j.at("slurm_job_id").get<std::string>();
  i.slurm_step_id = j.at("slurm_step_id").get<std::string>();
  i.slurm_nodelist = j.at("slurm_nodelist").get<std::string>();
  i.visible_gpus = j.at("visible_gpus").get<std::string>();
  i.cpus = j.value("cpus", 0);
  i.cores_per_rank = j.value("cores_per_rank", 0);
  i.vars = j.at("vars").get<EnvMap>();
  i.notes = j.at("notes").get<std::vector<std::string>>();
  i.warnings = j.at("warnings").get<std::vector<std::string>>();
  i.errors = j.at("errors").get<std::vector<std::string>>();
  return i;
}

JobLaunch detect_job(const parallel::MpiEnv& env) {
  JobLaunch job;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  const MpiPlacement mpi{env.rank(), env.size(), env.local_rank(), env.local_size(), env.num_nodes()};
  job.self = classify_launch(mpi, launch_vars_from_environ(), host);

  // cores per rank from the affinity masks of the ranks on this node (OR-reduced over the
  // node's shared-memory communicator)
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) {
    int mine = CPU_COUNT(&mask), sum = 0;
    MPI_Comm node = MPI_COMM_NULL;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, mpi.rank, MPI_INFO_NULL, &node);
    MPI_Allreduce(MPI_IN_PLACE, &mask, static_cast<int>(sizeof(mask)), MPI_BYTE, MPI_BOR, node);
    MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, node);
    MPI_Comm_free(&node);
    job.self.cpus = mine;
    job.self.cores_per_rank = cores_per_rank(mine, sum, CPU_COUNT(&mask), mpi.local_size);
  }

  // hostnames of every rank: fixed-size records, one MPI_Allgather
  std::vector<char> all(sizeof(host) * static_cast<size_t>(mpi.size), 0);
  MPI_Allgather(host, sizeof(host), MPI_CHAR, all.data(), sizeof(host), MPI_CHAR, MPI_COMM_WORLD);
  std::vector<std::string> host_of_rank;
  for (int r = 0; r < mpi.size; ++r) host_of_rank.emplace_back(all.data() + r * sizeof(host));
  job.hosts = group_hosts(host_of_rank);
  job.host_of_rank = host_of_rank;

  // every rank's record on rank 0 (variable-length JSON: MPI_Gather of lengths, MPI_Gatherv)
  const std::string mine = to_json(job.self).dump();
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(mpi.rank == 0 ? mpi.size : 0), offs(lens.size());
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string buf;
  if (mpi.rank == 0) {
    int total = 0;
    for (int r = 0; r < mpi.size; ++r) offs[r] = total, total += lens[r];
    buf.resize(static_cast<size_t>(total));
  }
  MPI_Gatherv(mine.data(), len, MPI_CHAR, buf.data(), lens.data(), offs.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
  if (mpi.rank == 0) {
    for (int r = 0; r < mpi.size; ++r) {
      job.ranks.push_back(launch_info_from_json(nlohmann::json::parse(buf.substr(offs[r], lens[r]))));
    }
    if (static_cast<int>(job.hosts.size()) != mpi.num_nodes) {
      job.job_warnings.push_back(fmt::format(
          "{} distinct hostnames but MPI counts {} shared-memory nodes (containers with one hostname, or nodes "
          "with the same name?)",
          job.hosts.size(), mpi.num_nodes));
    }
    std::vector<std::string> launchers;
    for (const auto& i : job.ranks) {
      const std::string n = launcher_name(i.launcher);
      if (std::find(launchers.begin(), launchers.end(), n) == launchers.end()) launchers.push_back(n);
    }
    if (launchers.size() > 1) {
      job.job_warnings.push_back(fmt::format("ranks disagree on the launcher: {}", fmt::join(launchers, ", ")));
    }
  } else {
    job.ranks.push_back(job.self);
  }
  return job;
}

bool describe_placement(JobLaunch& job, int tp, int pp, int world_rank) {
  const int world = static_cast<int>(job.host_of_rank.size());
  if (tp < 1 || pp < 1 || world < 1 || world % (tp * pp) != 0) return false;
  const parallel::Mesh mesh(world, world / (tp * pp), tp, pp);
  const parallel::Placement p = parallel::place(job.host_of_rank, mesh);
  if (world_rank >= 0) {
    MT_CHECK(p.world_rank_of[job.self.mpi.rank] == world_rank,
             "placement: launcher rank {} should be world rank {} but the world communicator gives {}",
             job.self.mpi.rank, p.world_rank_of[job.self.mpi.rank], world_rank);
  }
  job.placement_summary = parallel::placement_summary(p, mesh);
  job.world_hosts = group_hosts(p.host_of_world_rank);
  nlohmann::json ranks = nlohmann::json::array(), groups = nlohmann::json::array();
  for (int w = 0; w < world; ++w) {
    const int l = p.launcher_rank_of[w];
    const auto c = mesh.coords(w);
    nlohmann::json r{{"rank", w}, {"launcher_rank", l}, {"host", p.host_of_world_rank[w]}, {"dp", c.dp}, {"pp", c.pp},
                     {"tp", c.tp}};
    if (static_cast<int>(job.ranks.size()) == world) r["local_rank"] = job.ranks[l].mpi.local_rank;
    ranks.push_back(r);
  }
  for (const auto& g : p.tp_groups) groups.push_back({{"ranks", g.ranks}, {"hosts", g.hosts}});
  job.placement_record = nlohmann::json{{"order", "host-major"},
                                        {"reordered", p.reordered()},
                                        {"dp", mesh.dp()},
                                        {"pp", pp},
                                        {"tp", tp},
                                        {"ranks", ranks},
                                        {"tp_groups", groups},
                                        {"tp_groups_crossing_hosts", p.crossing_tp_groups.size()},
                                        {"pp_groups_crossing_hosts", p.pp_groups_crossing},
                                        {"dp_groups_crossing_hosts", p.dp_groups_crossing}}
                             .dump();
  if (job.self.mpi.rank == 0) {
    if (std::string w = parallel::placement_warning(p, mesh); !w.empty()) job.job_warnings.push_back(std::move(w));
  }
  return true;
}

void append_launch_record(const std::string& run_dir, const JobLaunch& job) {
  if (run_dir.empty()) return;
  io::ensure_directory(run_dir);
  nlohmann::json hosts = nlohmann::json::array(), ranks = nlohmann::json::array();
  for (const auto& h : job.hosts) hosts.push_back({{"host", h.host}, {"ranks", h.ranks}});
  for (const auto& i : job.ranks) ranks.push_back(to_json(i));
  const auto it = job.self.vars.find("SLURM_RESTART_COUNT");
  const nlohmann::json j{{"time", static_cast<int64_t>(std::time(nullptr))},
                         {"launcher", launcher_name(job.self.launcher)},
                         {"world", job.self.mpi.size},
                         {"slurm_job_id", job.self.slurm_job_id},
                         {"slurm_restart_count", it == job.self.vars.end() ? 0 : std::atoi(it->second.c_str())},
                         {"hosts", hosts},
                         {"ranks", ranks},
                         {"job_warnings", job.job_warnings},
                         {"placement", job.placement_record.empty() ? nlohmann::json()
                                                                    : nlohmann::json::parse(job.placement_record)}};
  std::ofstream out(run_dir + "/launch.jsonl", std::ios::app);
  out << j.dump() << "\n";
  if (!out) throw core::Error("cannot append to launch.jsonl").with_file(run_dir + "/launch.jsonl");
}

void report_launch_problems(const JobLaunch& job) {
  if (job.self.mpi.rank == 0) {
    // group identical messages: "SLURM_PROCID=0 contradicts ..." on 63 ranks is one line
    std::vector<std::pair<std::string, std::vector<int>>> grouped;
    for (const auto& i : job.ranks) {
      for (const auto& w : i.warnings) {
        auto it = std::find_if(grouped.begin(), grouped.end(), [&](const auto& g) { return g.first == w; });
        if (it == grouped.end()) grouped.push_back({w, {i.mpi.rank}});
        else it->second.push_back(i.mpi.rank);
      }
    }
    for (const auto& [w, ranks] : grouped) core::log::warn("launch: rank(s) {}: {}", format_ranks(ranks), w);
    for (const auto& w : job.job_warnings) core::log::warn("launch: {}", w);
  }
  if (!job.self.errors.empty()) {
    throw core::Error(fmt::format("launch: {}", job.self.errors.front()))
        .with_hint("under srun use --mpi=pmix (srun --mpi=list); under mpirun use the mpirun of the MPI meshtrain "
                   "was built with (meshtrain info shows it); or unset stale OMPI_COMM_WORLD_*/SLURM_* variables");
  }
}

}  // namespace mt::launch
