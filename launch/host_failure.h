// What: whether a job launched by Open MPI's mpirun across several hosts ends when a host
// fails silently, and the warning when it would not: Open MPI's daemons (mpirun and one
// `orted` per host) notice a host they cannot reach only through TCP keepalive on their
// control connections (oob_tcp_keepalive_time + oob_tcp_keepalive_probes x
// oob_tcp_keepalive_intvl; 300 + 9 x 20 = 480 s by default).
// Why: measured with simulated hosts (tests/multihost/host_failure_test.sh): after a link cut
// the ranks on both sides time out in a collective (parallel.timeout_s) and MPI_Abort, but
// mpirun then sends the kill order to the unreachable daemon and waits for it; a TCP
// connection with unacknowledged data gets no keepalive probes, so mpirun hangs (and the cut
// host's orted stays) until TCP gives up, ~15 minutes. When keepalive notices the lost host
// before meshtrain's deadline, mpirun ("ORTE has lost communication with a remote daemon ...
// on node H") and the lost host's orted (its lifeline is gone) each end every process they
// started. So the keepalive detection time must stay below parallel.timeout_s; rank 0 warns
// at start-up when it does not (docs/user-guide.md, "When a host fails").
#pragma once

#include <string>
#include <vector>

#include "launch/launch_env.h"

namespace mt::launch {

// Open MPI's OOB TCP keepalive, as the daemons of this job use it.
struct OobKeepalive {
  double time_s = 300;      // oob_tcp_keepalive_time: idle seconds before the first probe (<= 0: off)
  double interval_s = 20;   // oob_tcp_keepalive_intvl
  int probes = 9;           // oob_tcp_keepalive_probes
  std::string source;       // where the values came from: "Open MPI's defaults", "environment", a file
  bool enabled() const { return time_s > 0 && probes > 0; }
  // Seconds from the last daemon traffic to "lost communication" (infinite when off).
  double detect_s() const;
};

// The recommended settings (the mpirun flags of the user guide and the sbatch template).
extern const char* const kKeepaliveMpirunFlags;

// The settings from OMPI_MCA_oob_tcp_keepalive_{time,intvl,probes} in `env` (mpirun forwards
// its --mca flags to the ranks this way) and otherwise from the first of `param_files` (Open
// MPI's mca-params.conf syntax: "name = value", # comments) that sets them, else the defaults.
OobKeepalive read_oob_keepalive(const EnvMap& env, const std::vector<std::string>& param_files);
// The files Open MPI reads by default: $HOME/.openmpi/mca-params.conf, then the system one.
std::vector<std::string> default_mca_param_files(const EnvMap& env);

// The warning for a job of `num_hosts` hosts under `launcher` whose collectives wait
// `timeout_s`, or "" when a failed host ends the job: not mpirun (srun: Slurm handles node
// failure), one host, or keepalive detection at least a second inside timeout_s.
std::string host_failure_warning(Launcher launcher, int num_hosts, double timeout_s, const OobKeepalive& k);

// The process environment's keepalive settings and default files (for start_run).
OobKeepalive oob_keepalive_from_environ();

}  // namespace mt::launch
