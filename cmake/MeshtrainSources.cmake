# mt_gpu_filter(<list-var>): drops the sources of GPU parts this build does not have, by name:
#   cuda_*.cc / *.cu / anything under a cuda/ folder  need MT_HAVE_CUDA
#   nccl_*.cc                                          need MT_HAVE_NCCL
#   cudnn_*.cc / cudnn_*.cu                            need MT_HAVE_CUDNN
# So a GPU source is added by dropping a file with the right name into its folder (the
# folders' CMakeLists glob *.cc, and cuda/*.cu + cuda/*.cc when MT_HAVE_CUDA).
function(mt_gpu_filter var)
  set(_keep "")
  foreach(_f ${${var}})
    get_filename_component(_n "${_f}" NAME)
    get_filename_component(_d "${_f}" DIRECTORY)
    get_filename_component(_d "${_d}" NAME)
    if((_n MATCHES "^cuda_" OR _n MATCHES "\\.cu$" OR _d STREQUAL "cuda") AND NOT MT_HAVE_CUDA)
      continue()
    endif()
    if(_n MATCHES "^nccl_" AND NOT MT_HAVE_NCCL)
      continue()
    endif()
    if(_n MATCHES "^cudnn_" AND NOT MT_HAVE_CUDNN)
      continue()
    endif()
    list(APPEND _keep "${_f}")
  endforeach()
  set(${var} ${_keep} PARENT_SCOPE)
endfunction()
