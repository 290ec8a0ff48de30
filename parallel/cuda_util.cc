// What: CUDA errors, pinned host memory and GPU-sharing detection (see cuda_util.h).
// NOT RUN ON A GPU YET: only the "no driver" error paths (code 35) ran on the dev machine.
#include "parallel/cuda_util.h"

#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "parallel/communicator.h"

namespace mt::parallel::cuda {

std::string error_string(int code) {
  const auto e = static_cast<cudaError_t>(code);
  return fmt::format("{} ({}): {}", cudaGetErrorName(e), code, cudaGetErrorString(e));
}

bool is_no_gpu(int code) { return code == cudaErrorInsufficientDriver || code == cudaErrorNoDevice; }

void throw_error(int code, const std::string& what) {
  core::Error e(fmt::format("{} failed: {}", what, cudaGetErrorName(static_cast<cudaError_t>(code))));
  e.with_library(error_string(code));
  if (is_no_gpu(code))
    e.with_hint("this process sees no usable GPU (no driver, or CUDA_VISIBLE_DEVICES empty); run on a GPU node "
                "or use device: cpu");
  throw e;
}

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t rc = cudaGetDeviceCount(&n);
  if (rc != cudaSuccess) {
    if (why) *why = error_string(rc);
    return -1;
  }
  if (n == 0) {
    if (why) *why = "cudaGetDeviceCount returned 0 devices";
    return -1;
  }
  return n;
}

HostAllocator pinned_host_allocator() {
  // Which pointers are page-locked (the others came from the fallback). Shared by copies of
  // the allocator; the mutex because allocators may be used from several communicators.
  struct State {
    std::mutex mu;
    std::unordered_set<void*> pinned;
    std::atomic<bool> warned{false};
  };
  auto st = std::make_shared<State>();
  HostAllocator a;
  a.name = "pinned";
  a.alloc = [st](size_t bytes) -> void* {
    void* p = nullptr;
    const cudaError_t rc = cudaMallocHost(&p, bytes);
    if (rc == cudaSuccess) {
      std::lock_guard<std::mutex> lock(st->mu);
      st->pinned.insert(p);
      return p;
    }
    cudaGetLastError();  // clear a non-sticky error
    if (!st->warned.exchange(true))
      core::log::warn("cudaMallocHost of {} bytes failed ({}); staging through pageable host memory instead",
                      bytes, error_string(rc));
    return pageable_host_allocator().alloc(bytes);
  };
  a.free = [st](void* p) {
    if (!p) return;
    bool was_pinned = false;
    {
      std::lock_guard<std::mutex> lock(st->mu);
      was_pinned = st->pinned.erase(p) > 0;
    }
    if (was_pinned) cudaFreeHost(p);  // a failure here cannot be acted upon (called from destructors)
    else std::free(p);
  };
  return a;
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
