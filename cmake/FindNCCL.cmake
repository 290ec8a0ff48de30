# FindNCCL: NCCL ships no CMake package. Finds nccl.h and libnccl and reads the version from
# the header (NCCL_MAJOR / NCCL_MINOR / NCCL_PATCH).
#
# Search order: NCCL_ROOT (CMake variable or environment), NCCL_HOME, the CUDA toolkit
# (CUDAToolkit_LIBRARY_ROOT / CUDAToolkit_TARGET_DIR when find_package(CUDAToolkit) ran),
# /usr/local/cuda, then the system paths (Debian/Ubuntu libnccl-dev).
#
# Result: NCCL_FOUND, NCCL_VERSION ("2.28.9"), NCCL_INCLUDE_DIR, NCCL_LIBRARY, and the
# imported target NCCL::nccl. find_package(NCCL 2.18) checks the version.
include(FindPackageHandleStandardArgs)

set(_nccl_hints ${NCCL_ROOT} $ENV{NCCL_ROOT} $ENV{NCCL_HOME} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR}
    /usr/local/cuda)
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_nccl_hints}
          PATH_SUFFIXES include targets/x86_64-linux/include targets/sbsa-linux/include)
find_library(NCCL_LIBRARY nccl HINTS ${_nccl_hints}
             PATH_SUFFIXES lib64 lib targets/x86_64-linux/lib targets/sbsa-linux/lib lib/x86_64-linux-gnu)

set(NCCL_VERSION "")
if(NCCL_INCLUDE_DIR AND EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _nccl_defs REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX MATCH "#define NCCL_${_part} +([0-9]+)" _m "${_nccl_defs}")
    set(NCCL_VERSION_${_part} "${CMAKE_MATCH_1}")
  endforeach()
  if(NOT NCCL_VERSION_MAJOR STREQUAL "" AND NOT NCCL_VERSION_MINOR STREQUAL "")
    set(NCCL_VERSION "${NCCL_VERSION_MAJOR}.${NCCL_VERSION_MINOR}.${NCCL_VERSION_PATCH}")
  endif()
endif()

find_package_handle_standard_args(NCCL REQUIRED_VARS NCCL_LIBRARY NCCL_INCLUDE_DIR VERSION_VAR NCCL_VERSION)

if(NCCL_FOUND AND NOT TARGET NCCL::nccl)
  add_library(NCCL::nccl UNKNOWN IMPORTED)
  set_target_properties(NCCL::nccl PROPERTIES IMPORTED_LOCATION "${NCCL_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
endif()
mark_as_advanced(NCCL_INCLUDE_DIR NCCL_LIBRARY)
