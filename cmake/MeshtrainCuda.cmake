# GPU stack: CUDA toolkit, and NCCL / cuDNN which ship no CMake modules (small finders that
# read the versions from the headers). Sets MT_HAVE_CUDA/NCCL/CUDNN (0/1) and the targets
# mt::nccl and mt::cudnn.
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(MT_HAVE_CUDA 1)
set(_mt_cuda_hints ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR} /usr/local/cuda)

function(_mt_header_version header prefix outvar)
  file(STRINGS ${header} _lines REGEX "#define ${prefix}_(MAJOR|MINOR|PATCH|PATCHLEVEL) +[0-9]+")
  set(_v "")
  foreach(part MAJOR MINOR PATCH PATCHLEVEL)
    string(REGEX MATCH "#define ${prefix}_${part} +([0-9]+)" _m "${_lines}")
    if(_m)
      list(APPEND _v ${CMAKE_MATCH_1})
    endif()
  endforeach()
  string(REPLACE ";" "." _v "${_v}")
  set(${outvar} "${_v}" PARENT_SCOPE)
endfunction()

# _mt_find_gpu_lib(NCCL nccl.h nccl nccl NCCL): finds header + library under the toolkit, reads
# the version from `version_header` (macros PREFIX_MAJOR...), defines mt::<target>, sets MT_HAVE_<VAR>.
macro(_mt_find_gpu_lib var header version_header lib target prefix)
  find_path(MT_${var}_INCLUDE ${header} HINTS ${_mt_cuda_hints} PATH_SUFFIXES include targets/x86_64-linux/include)
  find_library(MT_${var}_LIB ${lib} HINTS ${_mt_cuda_hints} PATH_SUFFIXES lib64 lib targets/x86_64-linux/lib)
  if(MT_${var}_INCLUDE AND MT_${var}_LIB)
    _mt_header_version(${MT_${var}_INCLUDE}/${version_header} ${prefix} MT_${var}_VERSION)
    add_library(mt::${target} UNKNOWN IMPORTED)
    set_target_properties(mt::${target} PROPERTIES IMPORTED_LOCATION ${MT_${var}_LIB}
      INTERFACE_INCLUDE_DIRECTORIES ${MT_${var}_INCLUDE})
    set(MT_HAVE_${var} 1)
  else()
    message(WARNING "MT_WITH_${var}: ${header} / lib${lib} not found under ${_mt_cuda_hints}")
  endif()
endmacro()

if(MT_WITH_NCCL)
  _mt_find_gpu_lib(NCCL nccl.h nccl.h nccl nccl NCCL)
endif()
if(MT_WITH_CUDNN)
  _mt_find_gpu_lib(CUDNN cudnn_version.h cudnn_version.h cudnn cudnn CUDNN)
endif()
