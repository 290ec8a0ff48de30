// What: CudnnAttention (see attention_cudnn.h). The one file that knows whether this build
// has cuDNN.
// Status: the seam only. create() returns null with the reason, so CudaOps uses the own
// attention kernel everywhere. The fused forward through the cuDNN backend graph API is not
// written yet: cuDNN 9.19's native SDPA descriptor (CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR)
// has no causal mask before 9.21 (score-modifier subgraphs), so a causal forward has to be
// the pattern-matched graph of matmul, scale, causal mask (gen-index, compare, select),
// softmax with statistics and matmul, which could not be executed on the machine where this
// was written (no GPU). See docs/architecture.md, "Attention".
#include "kernels/cuda/attention_cudnn.h"

#include "mt/build_config.h"

namespace mt::kernels::cuda {

std::unique_ptr<CudnnAttention> CudnnAttention::create(core::Device& dev, std::string* why) {
  (void)dev;
#if MT_WITH_CUDNN
  if (why) *why = "cuDNN's fused attention graph is not implemented yet in this version of meshtrain";
#else
  if (why) *why = "this build has no cuDNN (configure with -DMT_WITH_CUDNN=ON)";
#endif
  return nullptr;
}

}  // namespace mt::kernels::cuda
