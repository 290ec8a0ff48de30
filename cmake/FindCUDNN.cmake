# FindCUDNN: cuDNN ships no CMake package. Finds cudnn.h and libcudnn and reads the version
# from cudnn_version.h (cuDNN 8 and later) or cudnn.h (cuDNN 7): CUDNN_MAJOR / CUDNN_MINOR /
# CUDNN_PATCHLEVEL.
#
# Search order: CUDNN_ROOT (CMake variable or environment), CUDNN_HOME, the CUDA toolkit,
# /usr/local/cuda, then the system paths (NVIDIA's Debian packages put it in
# /usr/include/x86_64-linux-gnu and /usr/lib/x86_64-linux-gnu).
#
# Result: CUDNN_FOUND, CUDNN_VERSION ("9.19.0"), CUDNN_INCLUDE_DIR, CUDNN_LIBRARY, and the
# imported target CUDNN::cudnn (libcudnn loads its sub-libraries itself).
include(FindPackageHandleStandardArgs)

set(_cudnn_hints ${CUDNN_ROOT} $ENV{CUDNN_ROOT} $ENV{CUDNN_HOME} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR}
    /usr/local/cuda)
find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${_cudnn_hints}
          PATH_SUFFIXES include targets/x86_64-linux/include targets/sbsa-linux/include include/x86_64-linux-gnu)
find_library(CUDNN_LIBRARY cudnn HINTS ${_cudnn_hints}
             PATH_SUFFIXES lib64 lib targets/x86_64-linux/lib targets/sbsa-linux/lib lib/x86_64-linux-gnu)

set(CUDNN_VERSION "")
foreach(_h cudnn_version.h cudnn.h)
  if(CUDNN_VERSION STREQUAL "" AND CUDNN_INCLUDE_DIR AND EXISTS "${CUDNN_INCLUDE_DIR}/${_h}")
    file(STRINGS "${CUDNN_INCLUDE_DIR}/${_h}" _cudnn_defs REGEX "^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) +[0-9]+")
    foreach(_part MAJOR MINOR PATCHLEVEL)
      string(REGEX MATCH "#define CUDNN_${_part} +([0-9]+)" _m "${_cudnn_defs}")
      set(CUDNN_VERSION_${_part} "${CMAKE_MATCH_1}")
    endforeach()
    if(NOT CUDNN_VERSION_MAJOR STREQUAL "")
      set(CUDNN_VERSION "${CUDNN_VERSION_MAJOR}.${CUDNN_VERSION_MINOR}.${CUDNN_VERSION_PATCHLEVEL}")
    endif()
  endif()
endforeach()

find_package_handle_standard_args(CUDNN REQUIRED_VARS CUDNN_LIBRARY CUDNN_INCLUDE_DIR VERSION_VAR CUDNN_VERSION)

if(CUDNN_FOUND AND NOT TARGET CUDNN::cudnn)
  add_library(CUDNN::cudnn UNKNOWN IMPORTED)
  set_target_properties(CUDNN::cudnn PROPERTIES IMPORTED_LOCATION "${CUDNN_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${CUDNN_INCLUDE_DIR}")
endif()
mark_as_advanced(CUDNN_INCLUDE_DIR CUDNN_LIBRARY)
