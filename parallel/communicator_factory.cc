// What: make_world_communicator(), the one place that knows the list of backends.
// Why: callers name a backend ("auto", "mpi", "nccl") in config or on the command line; adding
// the NCCL backend later touches this file and the new backend's own files only.
#include <memory>
#include <string>

#include "core/device.h"
#include "core/error.h"
#include "mt/build_config.h"
#include "parallel/communicator.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_env.h"

namespace mt::parallel {

namespace {
std::unique_ptr<Communicator> make_mpi_world() {
  if (!MpiEnv::active())
    throw core::Error("the MPI communicator backend needs MPI initialised")
        .with_hint("create a parallel::MpiEnv before the world communicator (launch/main.cc does)")
        .with_where(__FILE__, __LINE__);
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", mpi_comm_options_from_env());
}
}  // namespace

std::unique_ptr<Communicator> make_world_communicator(const std::string& backend) {
  if (backend == "mpi") return make_mpi_world();
  if (backend == "auto") {
    // NCCL joins here once its backend exists (when MT_WITH_NCCL and a GPU is usable).
    return make_mpi_world();
  }
  if (backend == "nccl") {
#if MT_WITH_NCCL
    throw core::Error("communicator backend 'nccl' is not implemented yet in this version of meshtrain")
        .with_hint("use backend 'mpi' (or 'auto')")
        .with_where(__FILE__, __LINE__);
#else
    throw core::Error("communicator backend 'nccl' is not available: this build has no NCCL")
        .with_hint("reconfigure with -DMT_WITH_CUDA=ON -DMT_WITH_NCCL=ON where the CUDA toolkit and NCCL are "
                   "installed, or use backend 'mpi' (or 'auto')")
        .with_where(__FILE__, __LINE__);
#endif
  }
  throw core::Error(fmt::format("unknown communicator backend '{}'", backend))
      .with_hint("valid backends: auto, mpi, nccl")
      .with_where(__FILE__, __LINE__);
}

std::unique_ptr<Communicator> make_device_communicator(Communicator& host, core::Device& device,
                                                       const std::string& backend) {
  if (device.kind() == core::DeviceKind::CPU) return nullptr;
  throw core::Error(fmt::format("no communicator for tensors on device '{}' in this build (backend '{}', group '{}')",
                                device.name(), backend, host.name()))
      .with_hint("the NCCL and host-staging communicators come with the GPU path")
      .with_where(__FILE__, __LINE__);
}

}  // namespace mt::parallel
