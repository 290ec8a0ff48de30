// What: CudnnAttention, cuDNN's fused scaled-dot-product attention (flash attention) for the
// causal forward, built through the cuDNN backend graph API (kernels/cuda/attention_cudnn.cc).
// Why: cuDNN's SDPA runs on tensor cores and is several times faster than the own kernel.
// It writes the same state the own backward reads (the log-sum-exp of every score row), so
// its forward pairs with the own backward. The caller (CudaOps) falls back to the own kernel
// whenever this returns false: cuDNN not built, no handle, a shape or type it does not
// support, any cuDNN status error, or doc_ids (document masks are not expressed here).
// Multi-head only: the interface takes qkv (B, T, 3C), i.e. NKV == NH; CudaOps runs grouped
// kv heads (NKV < NH) on the own kernel. cuDNN's SDPA accepts k/v with fewer heads than q
// (dims (B, NKV, T, HS), strides of the qkv row (NH + 2 NKV) HS), so a future graph can take
// an NKV argument; it was not added because the graph itself is not written and nothing with
// GQA could be run where this was written.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "core/device.h"
#include "kernels/cuda/launch.h"

namespace mt::kernels::cuda {

class CudnnAttention {
 public:
  // Null (with *why) when cuDNN cannot be used in this build or process.
  static std::unique_ptr<CudnnAttention> create(core::Device& dev, std::string* why);
  virtual ~CudnnAttention() = default;
  // out: (B, T, C), lse: (B, NH, T) fp32 from qkv: (B, T, 3C), causal, scale 1/sqrt(C/NH).
  // Queued on the device stream. False (with *why, nothing written) if cuDNN cannot run it.
  virtual bool forward(Dt dt, void* out, float* lse, const void* qkv, int B, int T, int C, int NH,
                       std::string* why) = 0;
  virtual std::string version() const = 0;
};

}  // namespace mt::kernels::cuda
