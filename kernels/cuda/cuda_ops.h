// What: the constructor of the CUDA Ops (kernels/cuda/cuda_ops.cc), for kernels/ops_factory.cc.
// Plain C++; included only in CUDA builds.
#pragma once

#include <memory>

#include "core/device.h"
#include "kernels/ops.h"

namespace mt::kernels {
// device must be a CUDA device; options.working F32 or BF16.
std::unique_ptr<Ops> make_cuda_ops(core::Device& device, const OpsOptions& options);
}  // namespace mt::kernels
