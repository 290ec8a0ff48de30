// What: the one place that knows the list of communicator backends: the world communicator
// (always MPI: host control traffic), the communicator for tensors on a device (NCCL, or host
// staging over MPI), and each backend's raw library call for `meshtrain bench allreduce`.
// Why: callers name a backend ("auto", "mpi", "nccl") in config or on the command line and
// never #ifdef; this file and the backends' own files are all that change with a backend.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/log.h"
#include "mt/build_config.h"
#include "parallel/allreduce_bench.h"
#include "parallel/communicator.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_env.h"
#include "parallel/placement.h"
#include "parallel/staging_communicator.h"
#include "parallel/timeout_communicator.h"
#if MT_WITH_CUDA
#include "parallel/cuda_util.h"
#endif
#if MT_WITH_NCCL
#include "parallel/nccl_communicator.h"
#endif

namespace mt::parallel {

namespace {

void check_backend_name(const std::string& backend) {
  if (backend == "auto" || backend == "mpi" || backend == "nccl") return;
  throw core::Error(fmt::format("unknown communicator backend '{}'", backend))
      .with_hint("valid backends: auto, mpi, nccl")
      .with_where(__FILE__, __LINE__);
}

std::unique_ptr<Communicator> make_mpi_world() {
  if (!MpiEnv::active())
    throw core::Error("the MPI communicator backend needs MPI initialised")
        .with_hint("create a parallel::MpiEnv before the world communicator (launch/main.cc does)")
        .with_where(__FILE__, __LINE__);
  // Host-major order (placement.h): hostnames of every launcher rank, then MPI_Comm_split with
  // the world rank as key, so a tp group of adjacent world ranks shares a host also under
  // `mpirun --map-by node`. Launcher rank 0 stays world rank 0.
  int mpi_rank = 0, mpi_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::vector<char> all(sizeof(host) * static_cast<size_t>(mpi_size), 0);
  int rc = MPI_Allgather(host, sizeof(host), MPI_CHAR, all.data(), sizeof(host), MPI_CHAR, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS)
    throw core::Error("MPI_Allgather of the hostnames failed").with_library(mpi_error_string(rc)).with_where(__FILE__, __LINE__);
  std::vector<std::string> host_of_rank;
  for (int r = 0; r < mpi_size; ++r) host_of_rank.emplace_back(all.data() + static_cast<size_t>(r) * sizeof(host));
  const int world_rank = host_major_order(host_of_rank)[mpi_rank];
  MPI_Comm placed = MPI_COMM_NULL;
  rc = MPI_Comm_split(MPI_COMM_WORLD, 0, world_rank, &placed);
  if (rc != MPI_SUCCESS)
    throw core::Error("MPI_Comm_split of the world in host order failed").with_library(mpi_error_string(rc)).with_where(__FILE__, __LINE__);
  auto world = std::make_unique<MpiCommunicator>(placed, "world", mpi_comm_options_from_env());
  MPI_Comm_free(&placed);
  core::set_process_rank(world->rank(), world->size());  // log lines and errors name the world rank
  return world;
}

// Host staging around `host`, with a deadline when `host` has none of its own.
std::unique_ptr<Communicator> make_staging(Communicator& host, core::Device& device, double timeout_s) {
  std::unique_ptr<Communicator> c = std::make_unique<StagingCommunicator>(host, device);
  if (timeout_s > 0 && !dynamic_cast<TimeoutCommunicator*>(&host))
    c = std::make_unique<TimeoutCommunicator>(std::move(c), timeout_s);
  return c;
}

}  // namespace

std::unique_ptr<Communicator> make_world_communicator(const std::string& backend) {
  check_backend_name(backend);
#if !MT_WITH_NCCL
  if (backend == "nccl")
    throw core::Error("communicator backend 'nccl' is not available: this build has no NCCL")
        .with_hint("reconfigure with -DMT_WITH_CUDA=ON (NCCL follows) where the CUDA toolkit and NCCL are "
                   "installed, or use backend 'mpi' (or 'auto')")
        .with_where(__FILE__, __LINE__);
#endif
  // The world carries host control traffic (config, metrics, barriers, bootstraps): MPI for
  // every backend. Device tensors get their communicator from make_device_communicator.
  return make_mpi_world();
}

std::unique_ptr<Communicator> make_device_communicator(Communicator& host, core::Device& device,
                                                       const std::string& backend, double timeout_s) {
  check_backend_name(backend);
  if (device.kind() == core::DeviceKind::CPU) return nullptr;  // host buffers: `host` itself
  if (timeout_s <= 0)
    if (auto* t = dynamic_cast<TimeoutCommunicator*>(&host)) timeout_s = t->timeout_s();

  if (backend == "mpi") return make_staging(host, device, timeout_s);
#if MT_WITH_NCCL
  // NCCL cannot put two ranks of one communicator on one GPU: find out first (collective).
  const std::string shared = cuda::shared_gpus(host, device.index());
  if (!shared.empty()) {
    if (backend == "nccl")
      throw core::Error(fmt::format("parallel.backend=nccl, but in group '{}' {}: one GPU cannot host two NCCL ranks",
                                    host.name(), shared))
          .with_hint("give every rank its own GPU (ranks per node <= GPUs per node), or set parallel.backend=auto "
                     "or mpi to exchange device tensors through host memory over MPI")
          .with_where(__FILE__, __LINE__);
    if (host.rank() == 0)
      core::log::warn("group '{}': {}; NCCL cannot host two ranks on one GPU, so device tensors go through host "
                      "staging over MPI (parallel.backend=auto)",
                      host.name(), shared);
    return make_staging(host, device, timeout_s);
  }
  NcclOptions opt;
  opt.timeout_s = timeout_s;
  opt.init_timeout_s = std::max(600.0, timeout_s);
  // GPU-UNVERIFIED: the trainer holds one NCCL communicator per group (dp and tp) on the same
  // GPU, each with its own stream, and their kernels overlap (dp buckets in flight while the
  // backward's tp all-reduces run). NCCL documents that concurrent communicators can deadlock
  // when their kernels are not co-scheduled in the same order on every rank; every rank here
  // issues them in the same program order from one thread. If a dp x tp run hangs with both
  // in flight, NCCL_LAUNCH_ORDER_IMPLICIT=1 (NCCL 2.28 reads it) orders launches by host order.
  return std::make_unique<NcclCommunicator>(host, device.index(), device.stream(), opt);
#else
  if (backend == "nccl")
    throw core::Error(fmt::format("parallel.backend=nccl for tensors on '{}', but this build has no NCCL",
                                  device.name()))
        .with_hint("reconfigure with -DMT_WITH_CUDA=ON (NCCL follows unless -DMT_WITH_NCCL=OFF), or set "
                   "parallel.backend=auto or mpi to stage device tensors through host memory")
        .with_where(__FILE__, __LINE__);
  if (host.rank() == 0)
    core::log::info("group '{}': this build has no NCCL; device tensors go through host staging over MPI",
                    host.name());
  return make_staging(host, device, timeout_s);
#endif
}

AllreduceBaseline make_allreduce_baseline(Communicator& comm) {
  Communicator& c = backend_of(comm);
  if (auto* m = dynamic_cast<MpiCommunicator*>(&c)) {
    const MPI_Comm raw = m->raw();
    return {"MPI_Allreduce",
            [raw](float* buf, size_t n) {
              MPI_Allreduce(MPI_IN_PLACE, buf, static_cast<int>(n), MPI_FLOAT, MPI_SUM, raw);
            },
            [] {}};
  }
  if (auto* s = dynamic_cast<StagingCommunicator*>(&c)) {
    // The copy-free bound: MPI_Allreduce on a host buffer of the same size.
    auto* m = dynamic_cast<MpiCommunicator*>(&backend_of(s->host()));
    MT_CHECK(m != nullptr, "bench allreduce: the staging communicator '{}' is not over MPI", comm.name());
    const MPI_Comm raw = m->raw();
    auto host = std::make_shared<std::vector<float>>();
    return {"MPI_Allreduce on host memory",
            [raw, host](float*, size_t n) {
              if (host->size() < n) host->resize(n);
              MPI_Allreduce(MPI_IN_PLACE, host->data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, raw);
            },
            [] {}};
  }
#if MT_WITH_NCCL
  if (auto* n = dynamic_cast<NcclCommunicator*>(&c))
    return {"ncclAllReduce", [n](float* buf, size_t count) { nccl_raw_all_reduce_f32_sum(*n, buf, count); },
            [n] { nccl_raw_stream_synchronize(*n); }};
#endif
  MT_FAIL("bench allreduce: no raw baseline for backend '{}' of communicator '{}'", comm.backend_name(), comm.name());
}

}  // namespace mt::parallel
