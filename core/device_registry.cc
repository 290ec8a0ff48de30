// What: device lookup by name. The ONLY file that knows which device backends exist.
#include "core/error.h"
#include "core/device.h"
#include "mt/build_config.h"

namespace mt::core {

std::vector<std::string> built_device_backends() {
  std::vector<std::string> v{"cpu"};
#if MT_WITH_CUDA
  v.push_back("cuda");
#endif
  return v;
}

Device& get_device(const std::string& name) {
  if (name == "cpu") return cpu_device();
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
#if MT_WITH_CUDA
    throw Error("the CUDA device is not implemented yet in this build")
        .with_hint("use device: cpu");
#else
    throw Error(fmt::format("device '{}' requested but this build has no CUDA", name))
        .with_hint("reconfigure with -DMT_WITH_CUDA=ON on a machine with the CUDA toolkit, or use cpu");
#endif
  }
  throw Error(fmt::format("unknown device '{}'", name)).with_hint("valid devices: cpu, cuda, cuda:N");
}

}  // namespace mt::core
