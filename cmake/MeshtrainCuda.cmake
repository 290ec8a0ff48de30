# GPU stack, included when MT_WITH_CUDA=ON: the CUDA language and toolkit, then NCCL and cuDNN
# (on unless -DMT_WITH_NCCL=OFF / -DMT_WITH_CUDNN=OFF; a missing one is a configure error that
# says how to switch it off). Sets MT_HAVE_CUDA/NCCL/CUDNN (0/1, into mt/build_config.h), the
# versions for the configure summary, and the targets CUDA::cudart/cublas/cublasLt (from
# FindCUDAToolkit), NCCL::nccl and CUDNN::cudnn (cmake/FindNCCL.cmake, cmake/FindCUDNN.cmake).
#
# Architectures: CMAKE_CUDA_ARCHITECTURES defaults to 80;90 (A100, H100) in CMakeLists.txt;
# `native` fails on a machine without a GPU (the CI machine).

# nvcc outside PATH: the toolkit's usual home.
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  find_program(_mt_nvcc nvcc HINTS $ENV{CUDA_HOME} $ENV{CUDA_PATH} /usr/local/cuda PATH_SUFFIXES bin)
  if(_mt_nvcc)
    set(CMAKE_CUDA_COMPILER ${_mt_nvcc} CACHE FILEPATH "CUDA compiler")
  endif()
endif()
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "MT_WITH_CUDA=ON but no CUDA compiler (nvcc) was found.\n"
                      "Install the CUDA toolkit, pass -DCMAKE_CUDA_COMPILER=/path/to/nvcc, or build without "
                      "-DMT_WITH_CUDA=ON.")
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)
set(MT_HAVE_CUDA 1)

if(MT_WITH_NCCL)
  find_package(NCCL 2.18)
  if(NOT NCCL_FOUND)
    message(FATAL_ERROR "MT_WITH_NCCL=ON (the default with MT_WITH_CUDA) but NCCL >= 2.18 was not found "
                        "(nccl.h / libnccl under NCCL_ROOT, the CUDA toolkit or the system).\n"
                        "Set NCCL_ROOT, or configure with -DMT_WITH_NCCL=OFF (device tensors then go through "
                        "host staging over MPI).")
  endif()
  set(MT_HAVE_NCCL 1)
  set(MT_NCCL_VERSION ${NCCL_VERSION})
endif()

if(MT_WITH_CUDNN)
  find_package(CUDNN 8)
  if(NOT CUDNN_FOUND)
    message(FATAL_ERROR "MT_WITH_CUDNN=ON (the default with MT_WITH_CUDA) but cuDNN >= 8 was not found.\n"
                        "Set CUDNN_ROOT, or configure with -DMT_WITH_CUDNN=OFF (attention then uses meshtrain's "
                        "own kernel).")
  endif()
  set(MT_HAVE_CUDNN 1)
  set(MT_CUDNN_VERSION ${CUDNN_VERSION})
endif()
