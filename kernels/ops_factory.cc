// What: make_ops(), the ONE file that knows which kernel backends exist (the CPU reference
// kernels everywhere, the CUDA kernels in CUDA builds).
#include "core/error.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"
#include "mt/build_config.h"
#if MT_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace mt::kernels {

std::unique_ptr<Ops> make_ops(core::Device& device, const OpsOptions& options) {
  switch (device.kind()) {
    case core::DeviceKind::CPU:
      if (options.working != core::DType::F32) {
        throw core::Error(fmt::format("precision {} is not supported on the CPU (fp32 only)",
                                      core::dtype_name(options.working)))
            .with_yaml("train.precision")
            .with_hint("use train.precision=fp32 (or auto) with train.device=cpu; bf16 needs train.device=cuda");
      }
      return make_cpu_ops();
    case core::DeviceKind::CUDA:
#if MT_WITH_CUDA
      return make_cuda_ops(device, options);
#else
      break;
#endif
  }
  throw core::Error(fmt::format("no kernels for device '{}' in this build", device.name()))
      .with_hint("reconfigure with -DMT_WITH_CUDA=ON, or use train.device=cpu");
}

}  // namespace mt::kernels
