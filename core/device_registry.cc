// What: device lookup by name and the per-rank device choice. The ONLY file that knows which
// device backends exist.
#include <cstdlib>

#include "core/device.h"
#include "core/error.h"
#include "core/log.h"
#include "mt/build_config.h"
#if MT_WITH_CUDA
#include "core/cuda_device.h"
#endif

namespace mt::core {

std::vector<std::string> built_device_backends() {
  std::vector<std::string> v{"cpu"};
#if MT_WITH_CUDA
  v.push_back("cuda");
#endif
  return v;
}

namespace {

// "cuda" -> -1 (no index given), "cuda:3" -> 3; throws on anything else after "cuda:".
int parse_cuda_index(const std::string& name) {
  if (name == "cuda") return -1;
  const std::string digits = name.substr(5);
  char* end = nullptr;
  const long v = digits.empty() ? -1 : std::strtol(digits.c_str(), &end, 10);
  if (digits.empty() || *end != '\0' || v < 0 || v > 1 << 20) {
    throw Error(fmt::format("malformed device name '{}'", name)).with_hint("use cuda or cuda:N with N >= 0");
  }
  return static_cast<int>(v);
}

#if !MT_WITH_CUDA
[[noreturn]] void no_cuda(const std::string& name) {
  throw Error(fmt::format("device '{}' requested but this build has no CUDA", name))
      .with_hint("reconfigure with -DMT_WITH_CUDA=ON on a machine with the CUDA toolkit, or use train.device=cpu");
}
#endif

}  // namespace

Device& get_device(const std::string& name) {
  if (name == "cpu") return cpu_device();
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    const int index = parse_cuda_index(name);
#if MT_WITH_CUDA
    return cuda_device(index < 0 ? 0 : index);
#else
    (void)index;
    no_cuda(name);
#endif
  }
  throw Error(fmt::format("unknown device '{}'", name)).with_hint("valid devices: cpu, cuda, cuda:N");
}

Device& select_device(const std::string& spec, int local_rank, int local_size) {
  if (spec != "cuda") return get_device(spec);
#if MT_WITH_CUDA
  const int count = cuda_device_count();
  if (local_size > count && local_rank == 0) {
    log::warn("{} ranks on this node share {} GPU(s): NCCL cannot put two ranks on one GPU, so use "
              "parallel.backend=mpi (host staging) or start at most {} rank(s) per node",
              local_size, count, count);
  }
  return cuda_device(local_rank % count);
#else
  (void)local_rank;
  (void)local_size;
  no_cuda(spec);
#endif
}

}  // namespace mt::core
