// What: launch-environment detection. Which launcher started this process (none, mpirun,
// srun, mpirun inside an sbatch or salloc allocation, another PMI launcher), where each rank
// runs (hosts, ranks per host) and whether the launcher's variables agree with MPI.
// Why: users debug their sbatch scripts through this. Rank, world size, local rank/size and
// node count always come from MPI itself (MpiEnv: MPI_Comm_rank/size, MPI_Comm_split_type);
// the launcher's variables only name the launcher and are cross-checked, never trusted:
//  - under `mpirun` inside an sbatch script every rank inherits the batch shell's
//    SLURM_PROCID=0 / SLURM_LOCALID=0 / SLURM_NTASKS (and on other nodes the variables of
//    mpirun's daemon step), so Slurm's task variables are ignored when OMPI_COMM_WORLD_*
//    are present: Open MPI's launcher started the rank;
//  - under `srun` OMPI_COMM_WORLD_* are unset (also after MPI_Init) and SLURM_STEP_ID is set;
//    the batch shell itself has no SLURM_STEP_ID;
//  - a variable that contradicts MPI is reported as a warning; a world of 1 where the launcher
//    started N > 1 tasks (a binary linked to another MPI than the launcher's, `srun
//    --mpi=none`, or stale variables) is an error: N independent copies would each train
//    alone and write the same run directory.
// classify_launch() is a pure function of MPI's numbers and a map of variables, unit-tested
// with synthetic maps; detect_job() reads the real environment and gathers every rank's view
// (hostnames by MPI_Allgather) so rank 0 can print one banner.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "parallel/mpi_env.h"

namespace mt::launch {

using EnvMap = std::map<std::string, std::string>;

// The truth, from MPI.
struct MpiPlacement {
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;  // among the ranks sharing this node (MPI_COMM_TYPE_SHARED)
  int num_nodes = 1;
};

enum class Launcher { None, Mpirun, MpirunInSbatch, MpirunInSalloc, Srun, Other };
const char* launcher_name(Launcher l);  // "none", "mpirun", "mpirun-in-sbatch", ...

// What one rank detected.
struct LaunchInfo {
  Launcher launcher = Launcher::None;
  MpiPlacement mpi;
  std::string host;            // gethostname()
  std::string slurm_job_id;    // "" outside Slurm
  std::string slurm_step_id;   // "" unless started by srun (a task of a job step)
  std::string slurm_nodelist;  // SLURM_JOB_NODELIST
  std::string visible_gpus;    // CUDA_VISIBLE_DEVICES (or "" when unset)
  int cpus = 0;                // CPUs in this process's affinity mask (0 = not measured)
  int cores_per_rank = 0;      // threads a rank should run (cores_per_rank()); 0 = not measured
  EnvMap vars;                 // the launcher variables that were set
  std::vector<std::string> notes;     // variables ignored, and why
  std::vector<std::string> warnings;  // a variable contradicting MPI
  std::vector<std::string> errors;    // a launch that cannot train correctly
};

// The launcher variables of interest (OMPI_COMM_WORLD_*, SLURM_*, PMIX_RANK, PMI_*,
// CUDA_VISIBLE_DEVICES, ENVIRONMENT) as the launcher set them: main() calls
// snapshot_launch_vars() before MPI_Init, because MPI_Init adds some (an Open MPI singleton
// exports PMIX_RANK=0); without a snapshot they are read from the environment now.
void snapshot_launch_vars();
EnvMap launch_vars_from_environ();
// The process environment's variables whose name `keep` accepts (NAME -> value).
EnvMap environ_where(const std::function<bool(const std::string&)>& keep);

// The decision logic: pure, no MPI, no environment access.
LaunchInfo classify_launch(const MpiPlacement& mpi, const EnvMap& env, const std::string& host = "");

// Cores for each rank's threads, from the CPU affinity masks of the ranks on one node: `mine`
// CPUs in this rank's mask, `sum` the masks' sizes added over the node's ranks, `union_count`
// the CPUs in their union. Disjoint masks (sum == union: mpirun --map-by slot:PE=N, srun
// with task/affinity) are each rank's own cores; overlapping ones (no binding, a cgroup
// cpuset shared by the job) are shared: union / local ranks. Never below 1. The node's CPU
// count alone would oversubscribe a node shared with other jobs.
int cores_per_rank(int mine, int sum, int union_count, int local_size);

// Threads for this rank: `configured` (train.threads, bench sgemm --threads) when > 0, else
// the cores detect_job() measured for it (at least 1). Every command that computes uses it.
int threads_per_rank(int configured, const LaunchInfo& self);

// Hosts in order of their lowest rank, with the ranks on each.
struct HostRanks {
  std::string host;
  std::vector<int> ranks;
};
std::vector<HostRanks> group_hosts(const std::vector<std::string>& host_of_rank);
// "0-3,8,10-11"
std::string format_ranks(const std::vector<int>& ranks);

// Every rank's view, gathered on rank 0 (other ranks hold only their own in `ranks`).
struct JobLaunch {
  LaunchInfo self;
  std::vector<LaunchInfo> ranks;  // rank 0: all ranks, by rank
  std::vector<HostRanks> hosts;   // every rank: from MPI_Allgather of hostnames
  std::vector<std::string> job_warnings;  // rank 0: checks across ranks (hosts vs MPI's node count)
  std::vector<std::string> host_of_rank;  // every rank: each launcher rank's hostname
  // set by describe_placement() once a layout is known: a banner line and the launch.jsonl record
  std::string placement_summary, placement_record;
  std::vector<HostRanks> world_hosts;  // hosts with their world ranks (the ranks log lines name)
};

// Collective over MPI_COMM_WORLD: classifies this rank, allgathers the hostnames and gathers
// every rank's LaunchInfo on rank 0.
JobLaunch detect_job(const parallel::MpiEnv& env);

// The placement of a pp x tp layout (dp = world / (pp x tp)) on the job's hosts, in the world
// order make_world_communicator() uses (parallel/placement.h): fills placement_summary and
// placement_record, and adds the warning for tp groups that span hosts to job_warnings (rank 0).
// Returns false (and sets nothing) when the layout does not fit the world: the trainer's own
// checks report that. `world_rank` (>= 0) is checked against the placement's.
bool describe_placement(JobLaunch& job, int tp, int pp, int world_rank = -1);

// Before MPI_Init: a hint for launches that are known to fail inside MPI_Init with an
// unhelpful message (Debian/Ubuntu's Open MPI under `srun --mpi=pmi2` or `--mpi=none`).
// Returns "" when there is nothing to say.
std::string pre_mpi_hint(const EnvMap& env);

// Whether rank 0 should draw the live progress line (redrawn with \r, with ETA): stdout is a
// terminal, and not the pseudo-terminal Open MPI's mpirun gives every rank even when mpirun's
// own output goes to a file (an sbatch script's slurm-*.out would fill with escape codes).
// MT_PROGRESS=1 or 0 forces it on or off.
bool want_progress_line();

nlohmann::json to_json(const LaunchInfo& info);
LaunchInfo launch_info_from_json(const nlohmann::json& j);

// Rank 0: appends one line to <run_dir>/launch.jsonl for this start of the run: time, launcher,
// Slurm job id and restart count, hosts, and every rank's LaunchInfo. A requeued or resumed
// run adds a line per start, so the file says where each part of the run ran.
void append_launch_record(const std::string& run_dir, const JobLaunch& job);

// Logs (rank 0) the warnings of all ranks grouped by message, and throws core::Error on this
// rank when it has errors (each rank checks its own; every rank reaches the same verdict in
// the world-of-1 case because each is alone).
void report_launch_problems(const JobLaunch& job);

}  // namespace mt::launch
