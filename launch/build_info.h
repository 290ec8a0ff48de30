// What: what this binary is and what it runs on: meshtrain's version and build flags, and
// the versions of MPI, HDF5, OpenBLAS and (when built) CUDA, NCCL and cuDNN.
// Why: the start-up banner and `meshtrain info` print them so a log says exactly which stack
// produced a result. MPI, HDF5 and OpenBLAS report their run-time versions (the library
// actually loaded); CUDA/NCCL/cuDNN the versions compiled against, from the generated
// mt/build_config.h (empty when not built), so no #if is needed anywhere.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace mt::launch {

struct BuildInfo {
  std::string version, build_type, sanitize, compiler;
  bool cuda = false, nccl = false, cudnn = false;
  std::string mpi;       // MPI_Get_library_version, first line ("Open MPI v4.1.4, ...")
  std::string mpi_standard;  // "3.1"
  std::string hdf5;      // H5get_libversion
  std::string openblas;  // openblas_get_config()
  std::string blas_core;
  std::string blas_variant;  // blas_variant_name(): "<core>/l2=<bytes>", the golden numbers' record key
  std::string cuda_version, nccl_version, cudnn_version;  // "" when not built
};

BuildInfo build_info();
nlohmann::json to_json(const BuildInfo& b);
// One line: "cuda=0 nccl=0 cudnn=0 | Open MPI v4.1.4 (MPI 3.1) | HDF5 1.10.8 | OpenBLAS ... | CUDA - | NCCL -"
std::string build_line(const BuildInfo& b);

}  // namespace mt::launch
