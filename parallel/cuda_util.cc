// What: CUDA errors and GPU-sharing detection (see cuda_util.h).
// NOT RUN ON A GPU YET: only the "no driver" error paths (code 35) ran on the dev machine.
#include "parallel/cuda_util.h"

#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <vector>

#include "core/cuda_device.h"
#include "core/error.h"
#include "core/log.h"
#include "parallel/communicator.h"

namespace mt::parallel::cuda {

void throw_error(int code, const std::string& what) {
  core::cuda_check_status(code, what.c_str(), __FILE__, __LINE__);
  throw core::Error(what + " failed");  // not reached: code != 0
}

DeviceIdentity device_identity(int device) {
  DeviceIdentity id;
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, device), fmt::format("cudaGetDeviceProperties(device {})", device));
  for (int i = 0; i < 16; ++i) id.uuid += fmt::format("{:02x}", static_cast<unsigned char>(prop.uuid.bytes[i]));
  char bus[32] = {0};
  check(cudaDeviceGetPCIBusId(bus, sizeof(bus) - 1, device), fmt::format("cudaDeviceGetPCIBusId(device {})", device));
  id.pci_bus_id = bus;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  id.host = host;
  return id;
}

namespace {
// One rank's record in the all_gather: 32 int32 = 128 bytes.
constexpr size_t kRecordInts = 32;
struct Record {
  int32_t ok = 0;
  char uuid[32] = {0};  // hex, not NUL-terminated when full
  char bus[28] = {0};
  char host[64] = {0};
};
static_assert(sizeof(Record) == kRecordInts * 4, "record layout");

std::string field(const char* p, size_t n) { return std::string(p, strnlen(p, n)); }
}  // namespace

std::string shared_gpus(Communicator& group, int device) {
  Record mine;
  std::string my_error;
  try {
    const DeviceIdentity id = device_identity(device);
    std::memcpy(mine.uuid, id.uuid.data(), std::min(id.uuid.size(), sizeof(mine.uuid)));
    std::memcpy(mine.bus, id.pci_bus_id.data(), std::min(id.pci_bus_id.size(), sizeof(mine.bus) - 1));
    std::memcpy(mine.host, id.host.data(), std::min(id.host.size(), sizeof(mine.host) - 1));
    mine.ok = 1;
  } catch (const core::Error& e) {
    my_error = e.what();
  }
  const int p = group.size();
  std::vector<Record> all(static_cast<size_t>(p));
  group.all_gather(&mine, all.data(), kRecordInts, DType::I32);  // host memory: a host communicator
  std::string failed;
  for (int r = 0; r < p; ++r)
    if (!all[r].ok) failed += (failed.empty() ? "" : ",") + std::to_string(r);
  if (!failed.empty()) {
    if (!my_error.empty()) throw core::Error(my_error);
    throw core::Error(fmt::format("rank(s) {} of group '{}' could not query their CUDA device (see their error)",
                                  failed, group.name()));
  }
  std::map<std::string, std::vector<int>> by_uuid;
  for (int r = 0; r < p; ++r) by_uuid[field(all[r].uuid, sizeof(all[r].uuid))].push_back(r);
  std::string out;
  for (const auto& [uuid, ranks] : by_uuid) {
    if (ranks.size() < 2) continue;
    std::string list;
    for (int r : ranks) list += (list.empty() ? "" : ",") + std::to_string(r);
    const Record& rec = all[ranks.front()];
    out += fmt::format("{}ranks {} share GPU {} on {}", out.empty() ? "" : "; ", list, field(rec.bus, sizeof(rec.bus)),
                       field(rec.host, sizeof(rec.host)));
  }
  return out;
}

}  // namespace mt::parallel::cuda
