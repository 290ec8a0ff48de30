// The host-failure warning (launch/host_failure.h): Open MPI's daemon keepalive settings read
// from the environment (mpirun's --mca flags reach the ranks as OMPI_MCA_*) and param files,
// and when a multi-host mpirun job is warned that a silently failed host would hang mpirun.
// The real failures are tested end to end: tests/multihost/host_failure_test.sh.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "launch/host_failure.h"

using namespace mt::launch;

namespace {
OobKeepalive recommended() { return read_oob_keepalive({{"OMPI_MCA_oob_tcp_keepalive_time", "5"},
                                                         {"OMPI_MCA_oob_tcp_keepalive_intvl", "2"},
                                                         {"OMPI_MCA_oob_tcp_keepalive_probes", "3"}}, {}); }
}  // namespace

TEST(HostFailure, DefaultsAreOpenMpis) {
  const OobKeepalive k = read_oob_keepalive({}, {"/nonexistent/mca-params.conf"});
  EXPECT_EQ(k.time_s, 300);
  EXPECT_EQ(k.interval_s, 20);
  EXPECT_EQ(k.probes, 9);
  EXPECT_EQ(k.detect_s(), 480);
  EXPECT_EQ(k.source, "Open MPI's defaults");
}

TEST(HostFailure, EnvironmentThenFirstParamFile) {
  const std::string user = ::testing::TempDir() + "/mt_user_mca.conf", sys = ::testing::TempDir() + "/mt_sys_mca.conf";
  std::ofstream(user) << "# user\noob_tcp_keepalive_intvl = 1   # seconds\n";
  std::ofstream(sys) << "oob_tcp_keepalive_intvl = 7\noob_tcp_keepalive_probes=4\nbtl = self,tcp\n";
  const OobKeepalive k = read_oob_keepalive({{"OMPI_MCA_oob_tcp_keepalive_time", "2"}}, {user, sys});
  EXPECT_EQ(k.time_s, 2);      // environment
  EXPECT_EQ(k.interval_s, 1);  // the user's file wins over the system's
  EXPECT_EQ(k.probes, 4);      // only in the system file
  EXPECT_EQ(k.detect_s(), 6);
  EXPECT_EQ(k.source, "environment, " + user + ", " + sys);
  std::remove(user.c_str());
  std::remove(sys.c_str());
}

TEST(HostFailure, KeepaliveOffNeverDetects) {
  const OobKeepalive k = read_oob_keepalive({{"OMPI_MCA_oob_tcp_keepalive_time", "0"}}, {});
  EXPECT_FALSE(k.enabled());
  EXPECT_TRUE(std::isinf(k.detect_s()));
  EXPECT_NE(host_failure_warning(Launcher::Mpirun, 2, 60, k).find("never"), std::string::npos);
}

TEST(HostFailure, WarnsOnlyForMultiHostMpirunWithSlowDetection) {
  const OobKeepalive defaults = read_oob_keepalive({}, {});
  const std::string w = host_failure_warning(Launcher::Mpirun, 2, 60, defaults);
  EXPECT_NE(w.find("480 s"), std::string::npos) << w;
  EXPECT_NE(w.find("parallel.timeout_s (60 s)"), std::string::npos) << w;
  EXPECT_NE(w.find(kKeepaliveMpirunFlags), std::string::npos) << w;
  EXPECT_FALSE(host_failure_warning(Launcher::MpirunInSbatch, 4, 60, defaults).empty());
  // one host, srun (Slurm handles a lost node), no launcher: nothing to warn about
  EXPECT_TRUE(host_failure_warning(Launcher::Mpirun, 1, 60, defaults).empty());
  EXPECT_TRUE(host_failure_warning(Launcher::Srun, 4, 60, defaults).empty());
  EXPECT_TRUE(host_failure_warning(Launcher::None, 1, 60, defaults).empty());
  // the recommended flags detect in 11 s: fine for timeout_s >= 12, a warning below
  EXPECT_EQ(recommended().detect_s(), 11);
  EXPECT_TRUE(host_failure_warning(Launcher::Mpirun, 2, 60, recommended()).empty());
  EXPECT_TRUE(host_failure_warning(Launcher::Mpirun, 2, 12, recommended()).empty());
  EXPECT_FALSE(host_failure_warning(Launcher::Mpirun, 2, 10, recommended()).empty());
}

TEST(HostFailure, DefaultParamFiles) {
  EXPECT_EQ(default_mca_param_files({{"HOME", "/h"}}),
            (std::vector<std::string>{"/h/.openmpi/mca-params.conf", "/etc/openmpi/openmpi-mca-params.conf"}));
  EXPECT_EQ(default_mca_param_files({{"OMPI_MCA_mca_base_param_files", "/a.conf,/b.conf"}}),
            (std::vector<std::string>{"/a.conf", "/b.conf"}));
}
