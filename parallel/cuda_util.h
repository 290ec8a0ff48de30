// What: the CUDA runtime pieces the communication layer needs, behind a header free of CUDA
// types (so the factory and tests include it without the toolkit's headers): CUDA errors as
// mt::core::Error (through core/cuda_device.h's checks) and which ranks of a group share a GPU.
// Why: every CUDA call's status must become an error with context (the op, the device, the
// runtime's own message, and for "no driver"/"no device" a hint), and NCCL refuses two ranks
// on one GPU, which the factory must detect before choosing a backend.
// Built only with MT_WITH_CUDA (files named cuda_*.cc are, see cmake/MeshtrainSources.cmake).
// NOT RUN ON A GPU YET: on the dev machine every CUDA call returns error 35 (insufficient
// driver); only those error paths have run.
#pragma once

#include <string>


namespace mt::parallel {
class Communicator;
}

namespace mt::parallel::cuda {

// "<what> failed" with the runtime's code, name and message (core::cuda_check_status), and a
// hint when the runtime has no usable GPU (cudaErrorInsufficientDriver 35, cudaErrorNoDevice
// 100). `code` is a cudaError_t.
[[noreturn]] void throw_error(int code, const std::string& what);
inline void check(int code, const std::string& what) {
  if (code != 0) throw_error(code, what);
}

struct DeviceIdentity {
  std::string uuid;        // 32 hex digits (cudaDeviceProp::uuid): unique across hosts
  std::string pci_bus_id;  // "0000:3b:00.0"
  std::string host;        // hostname, for messages
};
DeviceIdentity device_identity(int device);

// Collective over `group`: every rank contributes its device's identity; returns a
// description of the GPUs that more than one rank of the group uses ("ranks 0,1 share GPU
// 0000:3b:00.0 on node-a"), or "" when every rank has its own. If any rank cannot query its
// device, every rank throws (the failing one with the CUDA message), so no rank goes on alone.
std::string shared_gpus(Communicator& group, int device);

}  // namespace mt::parallel::cuda
