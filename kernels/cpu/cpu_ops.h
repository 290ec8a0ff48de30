// What: the constructor of the CPU Ops (kernels/cpu/cpu_ops.cc), for kernels/ops_factory.cc.
#pragma once

#include <memory>

#include "kernels/ops.h"

namespace mt::kernels {
std::unique_ptr<Ops> make_cpu_ops();
}  // namespace mt::kernels
