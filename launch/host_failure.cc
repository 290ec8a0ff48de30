// What: Open MPI's daemon keepalive settings and the host-failure warning (host_failure.h).
#include "launch/host_failure.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>

#include <fmt/format.h>


namespace mt::launch {

const char* const kKeepaliveMpirunFlags =
    "--mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3";

double OobKeepalive::detect_s() const {
  if (!enabled()) return std::numeric_limits<double>::infinity();
  return time_s + probes * interval_s;
}

namespace {
const char* const kNames[] = {"oob_tcp_keepalive_time", "oob_tcp_keepalive_intvl", "oob_tcp_keepalive_probes"};

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

// "name = value" lines of an mca-params.conf (empty when the file is absent)
std::map<std::string, std::string> read_param_file(const std::string& path) {
  std::map<std::string, std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    line = trim(line.substr(0, line.find('#')));
    const auto eq = line.find('=');
    if (eq != std::string::npos) out[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return out;
}

bool parse_number(const std::string& s, double* v) {
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (s.empty() || end == s.c_str() || *end != '\0' || !std::isfinite(d)) return false;
  *v = d;
  return true;
}
}  // namespace

OobKeepalive read_oob_keepalive(const EnvMap& env, const std::vector<std::string>& param_files) {
  OobKeepalive k;
  double v[3] = {k.time_s, k.interval_s, static_cast<double>(k.probes)};
  std::vector<std::string> sources;
  std::vector<std::map<std::string, std::string>> files;
  for (const auto& f : param_files) files.push_back(read_param_file(f));
  for (int i = 0; i < 3; ++i) {
    const auto e = env.find(std::string("OMPI_MCA_") + kNames[i]);
    if (e != env.end() && parse_number(e->second, &v[i])) {
      if (sources.empty() || sources.back() != "environment") sources.push_back("environment");
      continue;
    }
    for (size_t f = 0; f < files.size(); ++f) {
      const auto it = files[f].find(kNames[i]);
      if (it != files[f].end() && parse_number(it->second, &v[i])) {
        if (sources.empty() || sources.back() != param_files[f]) sources.push_back(param_files[f]);
        break;
      }
    }
  }
  k.time_s = v[0], k.interval_s = v[1], k.probes = static_cast<int>(v[2]);
  k.source = sources.empty() ? "Open MPI's defaults" : fmt::format("{}", fmt::join(sources, ", "));
  return k;
}

std::vector<std::string> default_mca_param_files(const EnvMap& env) {
  std::vector<std::string> files;
  if (const auto it = env.find("OMPI_MCA_mca_base_param_files"); it != env.end()) {
    std::string cur;
    for (char c : it->second + ",") {
      if (c == ',' || c == ':') {
        if (!cur.empty()) files.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    return files;
  }
  if (const auto it = env.find("HOME"); it != env.end()) files.push_back(it->second + "/.openmpi/mca-params.conf");
  if (const auto it = env.find("OPAL_PREFIX"); it != env.end())
    files.push_back(it->second + "/etc/openmpi-mca-params.conf");
  files.push_back("/etc/openmpi/openmpi-mca-params.conf");  // Debian and Ubuntu packages
  return files;
}

std::string host_failure_warning(Launcher launcher, int num_hosts, double timeout_s, const OobKeepalive& k) {
  const bool mpirun =
      launcher == Launcher::Mpirun || launcher == Launcher::MpirunInSbatch || launcher == Launcher::MpirunInSalloc;
  if (!mpirun || num_hosts < 2) return "";
  const double detect = k.detect_s();
  if (detect + 1 <= timeout_s) return "";
  const std::string when =
      k.enabled() ? fmt::format("{:g} s after their last message (oob_tcp_keepalive_time {:g} + {} x "
                                "oob_tcp_keepalive_intvl {:g}; {})",
                                detect, k.time_s, k.probes, k.interval_s, k.source)
                  : fmt::format("never (oob_tcp_keepalive_time {:g}: keepalive off; {})", k.time_s, k.source);
  return fmt::format(
      "{} hosts under mpirun, and Open MPI's daemons notice an unreachable host {}, later than "
      "parallel.timeout_s ({:g} s): a host cut off silently (link down, power loss) would abort the job but leave "
      "mpirun waiting ~15 min for its daemon. Pass mpirun {} (11 s; or the same as OMPI_MCA_* variables) and "
      "keep parallel.timeout_s above it: docs/user-guide.md, 'When a host fails'",
      num_hosts, when, timeout_s, kKeepaliveMpirunFlags);
}

OobKeepalive oob_keepalive_from_environ() {
  const EnvMap env = environ_where([](const std::string& name) {
    return name.rfind("OMPI_MCA_", 0) == 0 || name == "HOME" || name == "OPAL_PREFIX";
  });
  return read_oob_keepalive(env, default_mca_param_files(env));
}

}  // namespace mt::launch
