// What: the versions behind the banner (see build_info.h).
#include "launch/build_info.h"

#include <mpi.h>

#include <H5public.h>
#include <cblas.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "launch/blas_env.h"
#include "mt/build_config.h"

namespace mt::launch {

BuildInfo build_info() {
  BuildInfo b;
  b.version = MT_VERSION;
  b.build_type = MT_BUILD_TYPE;
  b.sanitize = MT_SANITIZE;
  b.compiler = __VERSION__;
  b.cuda = MT_WITH_CUDA;
  b.nccl = MT_WITH_NCCL;
  b.cudnn = MT_WITH_CUDNN;
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(mpi, &len);  // callable before MPI_Init
  b.mpi.assign(mpi, static_cast<size_t>(len));
  if (auto cut = b.mpi.find_first_of(",\n"); cut != std::string::npos) b.mpi.resize(cut);
  int major = 0, minor = 0;
  MPI_Get_version(&major, &minor);
  b.mpi_standard = fmt::format("{}.{}", major, minor);
  unsigned h5maj = 0, h5min = 0, h5rel = 0;
  H5get_libversion(&h5maj, &h5min, &h5rel);
  b.hdf5 = fmt::format("{}.{}.{}", h5maj, h5min, h5rel);
  const char* cfg = openblas_get_config();
  b.openblas = cfg ? cfg : "";
  while (!b.openblas.empty() && b.openblas.back() == ' ') b.openblas.pop_back();
  b.blas_core = blas_core_name();
  b.blas_variant = blas_variant_name();
  b.cuda_version = MT_CUDA_VERSION;
  b.nccl_version = MT_NCCL_VERSION;
  b.cudnn_version = MT_CUDNN_VERSION;
  return b;
}

nlohmann::json to_json(const BuildInfo& b) {
  return {{"version", b.version}, {"build_type", b.build_type}, {"sanitize", b.sanitize}, {"compiler", b.compiler},
          {"cuda", b.cuda}, {"nccl", b.nccl}, {"cudnn", b.cudnn}, {"mpi", b.mpi}, {"mpi_standard", b.mpi_standard},
          {"hdf5", b.hdf5}, {"openblas", b.openblas}, {"blas_core", b.blas_core},
          {"blas_variant", b.blas_variant}, {"cuda_version", b.cuda_version},
          {"nccl_version", b.nccl_version}, {"cudnn_version", b.cudnn_version}};
}

std::string build_line(const BuildInfo& b) {
  const auto or_dash = [](const std::string& s) { return s.empty() ? std::string("-") : s; };
  return fmt::format("cuda={} nccl={} cudnn={}{} | {} (MPI {}) | HDF5 {} | {} | CUDA {} | NCCL {} | cuDNN {}",
                     int(b.cuda), int(b.nccl), int(b.cudnn), b.sanitize.empty() ? "" : " sanitize=" + b.sanitize, b.mpi,
                     b.mpi_standard, b.hdf5, b.openblas, or_dash(b.cuda_version), or_dash(b.nccl_version),
                     or_dash(b.cudnn_version));
}

}  // namespace mt::launch
