// What: the sweep's pure parts (launch/sweep/spec.h, state.h): parsing a sweep file and its
// errors, grid and random trials, the halving rungs and rule, sweep.json round trips and
// the sweep identity. The runner itself is covered end to end by tests/e2e/sweep_test.sh.
#include <cmath>
#include <cstdlib>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "launch/sweep/spec.h"
#include "launch/sweep/state.h"
#include "launch/sweep/sweep.h"

using namespace mt::launch::sweep;

namespace {
const std::string kExamples = std::string(MT_SOURCE_DIR) + "/examples";

Spec parse(const std::string& body) {
  return parse_spec("base: tiny.yaml\ndir: /tmp/sweep-unit\noverrides: [train.steps=60]\n" + body, "my-sweep.yaml",
                    kExamples);
}

// The error message of parsing `body` ("" if it parses).
std::string error_of(const std::string& body) {
  try {
    const Spec s = parse(body);
    check_trials(s, make_trials(s));
  } catch (const mt::core::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(SweepSpec, GridIsTheCartesianProductFirstKeySlowest) {
  const Spec s = parse("params:\n  optim.lr: [1e-3, 3e-3]\n  train.batch_size: [8, 16, 32]\n");
  EXPECT_EQ(s.steps, 60);
  EXPECT_EQ(s.base, kExamples + "/tiny.yaml");
  const auto t = make_trials(s);
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(t[0].describe(), "optim.lr=1e-3 train.batch_size=8");
  EXPECT_EQ(t[2].describe(), "optim.lr=1e-3 train.batch_size=32");
  EXPECT_EQ(t[3].describe(), "optim.lr=3e-3 train.batch_size=8");
  EXPECT_EQ(t[5].name(), "trial_005");
  const auto o = trial_overrides(s, t[4], 20);
  EXPECT_EQ(o, (std::vector<std::string>{"train.steps=60", "optim.lr=3e-3", "train.batch_size=16",
                                         "run.dir=/tmp/sweep-unit/trial_004", "resume=auto", "train.stop_at_step=20"}));
  EXPECT_NO_THROW(check_trials(s, t));
}

TEST(SweepSpec, RandomSearchIsSeededAndInBounds) {
  const std::string body = "search: random\ntrials: 20\nseed: 7\nparams:\n  optim.lr: log_uniform(1e-5, 1e-2)\n"
                           "  optim.warmup_steps: int_uniform(0, 5)\n  optim.name: [adamw, sgd]\n";
  const Spec s = parse(body);
  const auto a = make_trials(s), b = make_trials(parse(body));
  ASSERT_EQ(a.size(), 20u);
  std::set<std::string> names, warmups;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].describe(), b[i].describe());  // the same seed, the same trials
    const double lr = std::stod(a[i].params[0].second);
    EXPECT_GE(lr, 1e-5 * 0.9999);
    EXPECT_LE(lr, 1e-2 * 1.0001);
    const int w = std::stoi(a[i].params[1].second);
    EXPECT_GE(w, 0);
    EXPECT_LE(w, 5);
    EXPECT_EQ(std::to_string(w), a[i].params[1].second);  // an integer, as written
    warmups.insert(a[i].params[1].second);
    names.insert(a[i].params[2].second);
  }
  EXPECT_EQ(names, (std::set<std::string>{"adamw", "sgd"}));
  EXPECT_GE(warmups.size(), 3u);
  EXPECT_TRUE(s.params[0].log_scale());
  EXPECT_FALSE(s.params[1].log_scale());
  const auto c = make_trials(parse("search: random\ntrials: 20\nseed: 8\nparams:\n  optim.lr: log_uniform(1e-5, 1e-2)\n"
                                   "  optim.warmup_steps: int_uniform(0, 5)\n  optim.name: [adamw, sgd]\n"));
  EXPECT_NE(c[0].describe(), a[0].describe());  // another seed, other trials
  EXPECT_NO_THROW(check_trials(s, a));
}

TEST(SweepSpec, BadInputNamesTheKeyAndTheFile) {
  std::string e = error_of("params:\n  optim.lrr: [1e-3]\n");
  EXPECT_NE(e.find("unknown swept key 'optim.lrr'"), std::string::npos) << e;
  EXPECT_NE(e.find("my-sweep.yaml"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'optim.lr'"), std::string::npos) << e;
  e = error_of("params:\n  optim.lr: []\n");
  EXPECT_NE(e.find("empty list of values for 'optim.lr'"), std::string::npos) << e;
  EXPECT_NE(e.find("my-sweep.yaml"), std::string::npos) << e;
  e = error_of("params:\n  optim.lr: log_uniform(1e-5, 1e-2)\n");
  EXPECT_NE(e.find("a grid needs a list"), std::string::npos) << e;
  e = error_of("params:\n  optim.lr: [1e-3, abc]\n");
  EXPECT_NE(e.find("trial_001 (optim.lr=abc) has an invalid config"), std::string::npos) << e;
  EXPECT_NE(e.find("params.optim.lr"), std::string::npos) << e;
  e = error_of("params:\n  run.dir: [a, b]\n");
  EXPECT_NE(e.find("'run.dir' cannot be swept"), std::string::npos) << e;
  e = error_of("parms:\n  optim.lr: [1e-3]\n");
  EXPECT_NE(e.find("unknown key 'parms'"), std::string::npos) << e;
  e = error_of("params:\n  optim.lr: [1e-3]\nhalving: {rungs: [20, 60]}\n");
  EXPECT_NE(e.find("train.steps = 60"), std::string::npos) << e;
  e = error_of("search: random\nparams:\n  optim.lr: [1e-3]\n");
  EXPECT_NE(e.find("needs trials"), std::string::npos) << e;
  e = error_of("params:\n  optim.lr: [1e-3]\n  optim.lr: [2e-3]\n");
  EXPECT_NE(e.find("swept twice"), std::string::npos) << e;
}

TEST(SweepHalving, RungsFromMinStepsAndTheRule) {
  EXPECT_EQ(parse("params: {optim.lr: [1e-3]}\nhalving: {min_steps: 10, eta: 2}\n").halving.rungs,
            (std::vector<int64_t>{10, 20, 40}));
  EXPECT_EQ(parse("params: {optim.lr: [1e-3]}\nhalving: {min_steps: 15, eta: 3}\n").halving.rungs,
            (std::vector<int64_t>{15, 45}));
  EXPECT_EQ(survivors(4, 2), 2);
  EXPECT_EQ(survivors(3, 2), 1);
  EXPECT_EQ(survivors(2, 2), 1);
  EXPECT_EQ(survivors(1, 2), 1);
  EXPECT_EQ(survivors(9, 3), 3);
  // NaN (a diverged trial) ranks last; ties go to the lower id
  const RungDecision d = decide_rung(20, {{0, 2.5}, {1, NAN}, {2, 2.0}, {3, 2.5}}, 2);
  EXPECT_EQ(d.step, 20);
  EXPECT_EQ(d.kept, (std::vector<int>{0, 2}));
  EXPECT_EQ(d.stopped, (std::vector<int>{1, 3}));
}

TEST(SweepState, JsonRoundTripAndIdentity) {
  const Spec s = parse("params:\n  optim.lr: [1e-3, 3e-3]\nhalving: {rungs: [20]}\n");
  State st = new_state(s, make_trials(s), identity(s));
  st.trials[0].status = Status::Paused;
  st.trials[0].reached = 20;
  st.trials[0].rung_loss[20] = 2.25;
  st.trials[1].status = Status::Stopped;
  st.trials[1].rung_loss[20] = NAN;
  st.trials[1].error = "x";
  st.decisions.push_back({20, {0}, {1}});
  const State b = state_from_json(to_json(st), "sweep.json");
  EXPECT_EQ(to_json(b), to_json(st));
  EXPECT_EQ(b.trials[0].status, Status::Paused);
  EXPECT_TRUE(std::isnan(b.trials[1].rung_loss.at(20)));
  ASSERT_NE(b.decision_at(20), nullptr);
  EXPECT_EQ(b.decision_at(20)->stopped, std::vector<int>{1});
  EXPECT_EQ(b.rungs, std::vector<int64_t>{20});
  // the identity follows what decides the trials, not how they are launched
  EXPECT_EQ(identity(s), identity(parse("params:\n  optim.lr: [1e-3, 3e-3]\nhalving: {rungs: [20]}\nlaunch: {np: 2}\n")));
  EXPECT_NE(identity(s), identity(parse("params:\n  optim.lr: [1e-3, 4e-3]\nhalving: {rungs: [20]}\n")));
  EXPECT_NE(identity(s), identity(parse("params:\n  optim.lr: [1e-3, 3e-3]\nhalving: {rungs: [30]}\n")));
  EXPECT_THROW(state_from_json("{\"trials\": 3}", "sweep.json"), mt::core::Error);
}

TEST(SweepLaunch, MpirunOrSrunInsideSlurm) {
  const char* job = std::getenv("SLURM_JOB_ID");
  const std::string saved = job ? job : "";
  unsetenv("SLURM_JOB_ID");
  Spec s = parse("params:\n  optim.lr: [1e-3]\nlaunch: {np: 2, mpirun_args: [--bind-to, none]}\n");
  const Trial t = make_trials(s)[0];
  std::string cmd = trial_command(s, "/bin/meshtrain", t, 20);
  EXPECT_EQ(cmd.rfind("mpirun ", 0), 0u) << cmd;
  EXPECT_NE(cmd.find(" --bind-to none -np 2 /bin/meshtrain train " + kExamples + "/tiny.yaml train.steps=60 "
                     "optim.lr=1e-3 run.dir=/tmp/sweep-unit/trial_000 resume=auto train.stop_at_step=20"),
            std::string::npos) << cmd;
  setenv("SLURM_JOB_ID", "42", 1);  // inside an allocation: srun, with disjoint CPUs for concurrent trials
  s.launch.parallel_trials = 2;
  s.launch.srun_args = {"--mpi=pmix"};
  cmd = trial_command(s, "/bin/meshtrain", t, 0);
  EXPECT_EQ(cmd.rfind("srun --mpi=pmix --exclusive --ntasks=2 /bin/meshtrain train ", 0), 0u) << cmd;
  s.launch.launcher = "mpirun";  // unless told otherwise
  EXPECT_EQ(trial_command(s, "/bin/meshtrain", t, 0).rfind("mpirun ", 0), 0u);
  Trial q = t;
  q.params[0].second = "it's";
  EXPECT_NE(trial_command(s, "/bin/meshtrain", q, 0).find(" 'optim.lr=it'\\''s' "), std::string::npos);
  if (saved.empty()) unsetenv("SLURM_JOB_ID");
  else setenv("SLURM_JOB_ID", saved.c_str(), 1);
}
