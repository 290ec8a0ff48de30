// Launch-environment decisions (launch/launch_env.h) on synthetic environments: the variables
// each launcher really sets (recorded under Open MPI 4.1 and Slurm 22.05, see the comments),
// the traps (mpirun inside sbatch inherits SLURM_PROCID=0; srun sets no OMPI_COMM_WORLD_*),
// contradictions and stale variables. No processes: the real launches are tested end to end
// (tests/e2e/launch_env_test.sh, tests/e2e/slurm_test.sh).
#include <gtest/gtest.h>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "launch/launch_env.h"

using namespace mt::launch;

namespace {

MpiPlacement place(int rank, int size, int local_rank, int local_size, int nodes = 1) {
  return {rank, size, local_rank, local_size, nodes};
}

bool any_contains(const std::vector<std::string>& v, const std::string& needle) {
  for (const auto& s : v) {
    if (s.find(needle) != std::string::npos) return true;
  }
  return false;
}

// what `mpirun -np 2` gives rank r
EnvMap mpirun_vars(int r, int n) {
  return {{"OMPI_COMM_WORLD_RANK", std::to_string(r)}, {"OMPI_COMM_WORLD_SIZE", std::to_string(n)},
          {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(r)}, {"OMPI_COMM_WORLD_LOCAL_SIZE", std::to_string(n)},
          {"PMIX_RANK", std::to_string(r)}};
}

// what `srun -n N` gives task r on one node
EnvMap srun_vars(int r, int n) {
  return {{"SLURM_JOB_ID", "12"}, {"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", std::to_string(r)},
          {"SLURM_LOCALID", std::to_string(r)}, {"SLURM_NTASKS", std::to_string(n)},
          {"SLURM_STEP_NUM_TASKS", std::to_string(n)}, {"SLURM_STEP_NUM_NODES", "1"},
          {"SLURM_JOB_NODELIST", "node1"}, {"PMIX_RANK", std::to_string(r)}, {"SLURM_MPI_TYPE", "pmix"}};
}

}  // namespace

TEST(LaunchEnv, PlainProcessIsNone) {
  const LaunchInfo i = classify_launch(place(0, 1, 0, 1), {}, "host");
  EXPECT_EQ(i.launcher, Launcher::None);
  EXPECT_STREQ(launcher_name(i.launcher), "none");
  EXPECT_TRUE(i.warnings.empty());
  EXPECT_TRUE(i.errors.empty());
  EXPECT_EQ(i.host, "host");
}

TEST(LaunchEnv, MpirunConsistent) {
  const LaunchInfo i = classify_launch(place(1, 2, 1, 2), mpirun_vars(1, 2));
  EXPECT_EQ(i.launcher, Launcher::Mpirun);
  EXPECT_TRUE(i.warnings.empty()) << i.warnings.front();
  EXPECT_TRUE(i.notes.empty());
  EXPECT_TRUE(i.slurm_job_id.empty());
}

TEST(LaunchEnv, MpirunInSbatchIgnoresInheritedSlurmProcid) {
  // every rank of mpirun inside a batch script inherits the batch shell's task variables
  EnvMap env = mpirun_vars(1, 2);
  env.insert({{"SLURM_JOB_ID", "7"}, {"SLURM_PROCID", "0"}, {"SLURM_LOCALID", "0"}, {"SLURM_NTASKS", "2"},
              {"ENVIRONMENT", "BATCH"}});
  const LaunchInfo i = classify_launch(place(1, 2, 1, 2), env);
  EXPECT_EQ(i.launcher, Launcher::MpirunInSbatch);
  EXPECT_STREQ(launcher_name(i.launcher), "mpirun-in-sbatch");
  EXPECT_TRUE(i.warnings.empty()) << i.warnings.front();  // SLURM_PROCID=0 is expected, not a contradiction
  EXPECT_TRUE(any_contains(i.notes, "SLURM_PROCID=0"));
  EXPECT_EQ(i.slurm_job_id, "7");
  EXPECT_TRUE(i.slurm_step_id.empty());  // not an srun step
}

TEST(LaunchEnv, MpirunInSbatchOnASecondNodeIgnoresTheDaemonStep) {
  // on other nodes mpirun starts its daemons with srun: ranks there see that step's variables
  EnvMap env = mpirun_vars(5, 8);
  env["OMPI_COMM_WORLD_LOCAL_RANK"] = "1";
  env["OMPI_COMM_WORLD_LOCAL_SIZE"] = "4";
  env.insert({{"SLURM_JOB_ID", "7"}, {"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "1"}, {"SLURM_LOCALID", "0"},
              {"SLURM_NTASKS", "2"}, {"ENVIRONMENT", "BATCH"}});
  const LaunchInfo i = classify_launch(place(5, 8, 1, 4, 2), env);
  EXPECT_EQ(i.launcher, Launcher::MpirunInSbatch);
  EXPECT_TRUE(i.warnings.empty()) << i.warnings.front();
  EXPECT_TRUE(i.slurm_step_id.empty());
}

TEST(LaunchEnv, MpirunInSalloc) {
  EnvMap env = mpirun_vars(0, 2);
  env.insert({{"SLURM_JOB_ID", "8"}, {"SLURM_PROCID", "0"}});
  EXPECT_EQ(classify_launch(place(0, 2, 0, 2), env).launcher, Launcher::MpirunInSalloc);
}

TEST(LaunchEnv, SrunConsistent) {
  const LaunchInfo i = classify_launch(place(1, 2, 1, 2), srun_vars(1, 2));
  EXPECT_EQ(i.launcher, Launcher::Srun);
  EXPECT_TRUE(i.warnings.empty()) << i.warnings.front();
  EXPECT_EQ(i.slurm_job_id, "12");
  EXPECT_EQ(i.slurm_step_id, "0");
  EXPECT_EQ(i.slurm_nodelist, "node1");
}

TEST(LaunchEnv, SrunContradictionsAreWarningsAndMpiWins) {
  EnvMap env = srun_vars(3, 4);
  const LaunchInfo i = classify_launch(place(1, 4, 1, 4), env);
  EXPECT_EQ(i.launcher, Launcher::Srun);
  EXPECT_TRUE(any_contains(i.warnings, "SLURM_PROCID=3 contradicts MPI's rank 1")) << i.warnings.size();
  EXPECT_TRUE(any_contains(i.warnings, "SLURM_LOCALID=3 contradicts MPI's local rank 1"));
  EXPECT_TRUE(any_contains(i.warnings, "PMIX_RANK=3"));
  EXPECT_TRUE(i.errors.empty());
  EXPECT_EQ(i.mpi.rank, 1);
}

TEST(LaunchEnv, SrunNodeCountChecked) {
  EnvMap env = srun_vars(0, 2);
  env["SLURM_STEP_NUM_NODES"] = "2";
  EXPECT_TRUE(any_contains(classify_launch(place(0, 2, 0, 2, 1), env).warnings, "node count 1"));
}

TEST(LaunchEnv, SrunWithoutPmixGivesSingletonsError) {
  // srun started 2 tasks but MPI_Init made each a world of 1 (wrong --mpi plugin, other MPI)
  const LaunchInfo i = classify_launch(place(0, 1, 0, 1), srun_vars(1, 2));
  ASSERT_EQ(i.errors.size(), 1u);
  EXPECT_NE(i.errors[0].find("SLURM_STEP_NUM_TASKS (srun) says 2 ranks"), std::string::npos) << i.errors[0];
  EXPECT_FALSE(any_contains(i.warnings, "SLURM_STEP_NUM_TASKS="));  // one message, not two
}

TEST(LaunchEnv, StaleOmpiVariablesInAPlainRunAreAnError) {
  const LaunchInfo i = classify_launch(place(0, 1, 0, 1), {{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "2"}});
  EXPECT_EQ(i.errors.size(), 1u);
  EXPECT_TRUE(any_contains(i.warnings, "OMPI_COMM_WORLD_RANK=2 contradicts MPI's rank 0"));
}

TEST(LaunchEnv, BatchShellWithoutLauncherWarnsWhenTheJobHasMoreTasks) {
  const EnvMap env{{"SLURM_JOB_ID", "9"}, {"SLURM_PROCID", "0"}, {"SLURM_LOCALID", "0"}, {"SLURM_NTASKS", "4"},
                   {"ENVIRONMENT", "BATCH"}};
  const LaunchInfo i = classify_launch(place(0, 1, 0, 1), env);
  EXPECT_EQ(i.launcher, Launcher::None);
  EXPECT_TRUE(any_contains(i.warnings, "has 4 tasks but this process was started without srun or mpirun"));
  EXPECT_TRUE(i.errors.empty());
  EXPECT_TRUE(any_contains(i.notes, "no SLURM_STEP_ID"));
  EnvMap one = env;
  one["SLURM_NTASKS"] = "1";
  EXPECT_TRUE(classify_launch(place(0, 1, 0, 1), one).warnings.empty());
}

TEST(LaunchEnv, GarbageNumbersAreNamed) {
  EnvMap env = mpirun_vars(0, 2);
  env["OMPI_COMM_WORLD_LOCAL_RANK"] = "zero";
  EXPECT_TRUE(any_contains(classify_launch(place(0, 2, 0, 2), env).warnings, "OMPI_COMM_WORLD_LOCAL_RANK='zero' is not a number"));
}

TEST(LaunchEnv, OtherLaunchers) {
  // MPICH's hydra
  const LaunchInfo h = classify_launch(place(1, 2, 1, 2), {{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}});
  EXPECT_EQ(h.launcher, Launcher::Other);
  EXPECT_TRUE(h.warnings.empty());
  // a multi-rank world with no variables at all
  EXPECT_EQ(classify_launch(place(0, 2, 0, 2), {}).launcher, Launcher::Other);
}

TEST(LaunchEnv, PreMpiHintForPmi2AndNone) {
  EnvMap pmi2{{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "0"}, {"SLURM_MPI_TYPE", "pmi2"}, {"PMI_RANK", "0"}};
  EXPECT_NE(pre_mpi_hint(pmi2).find("srun --mpi=pmix"), std::string::npos);
  EnvMap none{{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "0"}, {"SLURM_MPI_TYPE", "none"}};
  EXPECT_NE(pre_mpi_hint(none).find("--mpi=none"), std::string::npos);
  EXPECT_EQ(pre_mpi_hint(srun_vars(0, 2)), "");  // pmix: fine
  EXPECT_EQ(pre_mpi_hint({}), "");
  EXPECT_EQ(pre_mpi_hint({{"SLURM_JOB_ID", "3"}, {"SLURM_MPI_TYPE", "pmi2"}}), "");  // batch shell, not a step
}

TEST(LaunchEnv, HostsGroupedInRankOrder) {
  const auto hosts = group_hosts({"b", "b", "a", "b", "a"});
  ASSERT_EQ(hosts.size(), 2u);
  EXPECT_EQ(hosts[0].host, "b");
  EXPECT_EQ(hosts[0].ranks, (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(hosts[1].ranks, (std::vector<int>{2, 4}));
  EXPECT_EQ(format_ranks({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(format_ranks({5}), "5");
  EXPECT_EQ(format_ranks({}), "");
}

TEST(LaunchEnv, PlacementRecordAndWarning) {
  // --map-by node on 2 hosts x 2 slots, as rank 0 sees it (every rank's view gathered)
  JobLaunch job;
  job.host_of_rank = {"n1", "n2", "n1", "n2"};
  for (int r = 0; r < 4; ++r) job.ranks.push_back(classify_launch(place(r, 4, r / 2, 2, 2), {}, job.host_of_rank[r]));
  job.self = job.ranks[0];
  ASSERT_TRUE(describe_placement(job, 2, 1, 0));
  const auto p = nlohmann::json::parse(job.placement_record);
  EXPECT_TRUE(p["reordered"].get<bool>());
  EXPECT_EQ(p["tp_groups_crossing_hosts"].get<int>(), 0);
  EXPECT_EQ(p["ranks"][1]["launcher_rank"].get<int>(), 2);
  EXPECT_EQ(p["ranks"][1]["host"].get<std::string>(), "n1");
  EXPECT_EQ(p["ranks"][1]["local_rank"].get<int>(), 1);
  EXPECT_EQ(p["ranks"][3]["dp"].get<int>(), 1);
  EXPECT_TRUE(job.job_warnings.empty());
  ASSERT_EQ(job.world_hosts.size(), 2u);
  EXPECT_EQ(job.world_hosts[1].ranks, (std::vector<int>{2, 3}));
  // tp 4 cannot stay inside a host of 2 ranks: one warning naming the group and hosts
  ASSERT_TRUE(describe_placement(job, 4, 1, 0));
  ASSERT_EQ(job.job_warnings.size(), 1u);
  EXPECT_TRUE(any_contains(job.job_warnings, "ranks {0,1,2,3} on n1 + n2")) << job.job_warnings[0];
  // a layout that does not fit the world is left to the trainer; a world rank that disagrees is a bug
  EXPECT_FALSE(describe_placement(job, 3, 1, 0));
  job.self = job.ranks[1];
  EXPECT_THROW(describe_placement(job, 2, 1, 1), mt::core::Error);
}

TEST(LaunchEnv, JsonRoundTrip) {
  EnvMap env = mpirun_vars(1, 2);
  env.insert({{"SLURM_JOB_ID", "7"}, {"SLURM_PROCID", "0"}, {"ENVIRONMENT", "BATCH"}, {"CUDA_VISIBLE_DEVICES", "0,1"}});
  const LaunchInfo a = classify_launch(place(1, 2, 1, 2), env, "n1");
  const LaunchInfo b = launch_info_from_json(nlohmann::json::parse(to_json(a).dump()));
  EXPECT_EQ(b.launcher, a.launcher);
  EXPECT_EQ(b.mpi.rank, 1);
  EXPECT_EQ(b.mpi.local_size, 2);
  EXPECT_EQ(b.host, "n1");
  EXPECT_EQ(b.visible_gpus, "0,1");
  EXPECT_EQ(b.vars, a.vars);
  EXPECT_EQ(b.notes, a.notes);
}

TEST(LaunchEnv, EnvironReadKeepsOnlyLauncherVariables) {
  setenv("SLURM_PROCID", "3", 1);
  setenv("SLURM_SRUN_COMM_PORT", "4242", 1);  // noise
  setenv("MT_UNRELATED", "x", 1);
  const EnvMap m = launch_vars_from_environ();
  unsetenv("SLURM_PROCID");
  unsetenv("SLURM_SRUN_COMM_PORT");
  unsetenv("MT_UNRELATED");
  EXPECT_EQ(m.at("SLURM_PROCID"), "3");
  EXPECT_EQ(m.count("SLURM_SRUN_COMM_PORT"), 0u);
  EXPECT_EQ(m.count("MT_UNRELATED"), 0u);
}

TEST(LaunchEnv, CoresPerRankFromAffinityMasks) {
  EXPECT_EQ(cores_per_rank(8, 32, 32, 4), 8);   // 4 ranks bound to 8 cores each (PE=8, srun --cpu-bind)
  EXPECT_EQ(cores_per_rank(64, 256, 64, 4), 16);  // unbound on a 64-core node: share
  EXPECT_EQ(cores_per_rank(16, 64, 16, 4), 4);  // a 16-CPU cgroup cpuset shared by 4 ranks, 64-core node
  EXPECT_EQ(cores_per_rank(2, 8, 2, 4), 1);     // oversubscribed: never below 1
  EXPECT_EQ(cores_per_rank(1, 2, 2, 2), 1);     // mpirun -np 2 --bind-to core
  EXPECT_EQ(cores_per_rank(2, 2, 2, 1), 2);     // alone
  EXPECT_EQ(cores_per_rank(0, 0, 0, 1), 1);     // not measured
}

TEST(LaunchEnv, ThreadsPerRankConfiguredElseMeasured) {
  LaunchInfo self;
  self.cores_per_rank = 6;
  EXPECT_EQ(threads_per_rank(3, self), 3);  // train.threads / --threads wins
  EXPECT_EQ(threads_per_rank(0, self), 6);  // else the affinity masks' figure
  self.cores_per_rank = 0;                  // not measured
  EXPECT_EQ(threads_per_rank(0, self), 1);
}
