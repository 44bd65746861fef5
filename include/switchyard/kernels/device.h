// Accelerator discovery. In a build without CUDA these report no devices (the stub backend), so callers
// never need #ifdefs: asking for --device cuda then fails with a clear sy::Unsupported.
#pragma once

#include <string>
#include <vector>

namespace sy {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;  // compute capability
  size_t memory_bytes = 0;
};

// True when this binary was built with the CUDA backend.
bool cuda_compiled();
// Devices visible to this process (empty without CUDA or without a GPU).
std::vector<CudaDeviceInfo> cuda_devices();
// Throws Unsupported unless a device with compute capability >= 9.0 (Hopper) is present.
void require_cuda_device(int index = 0);
// Opens cuBLAS now (it is otherwise opened at the first GEMM, not at process start) and returns its file
// name. Needs no device. Throws Unsupported when this build has no CUDA or the library cannot be loaded.
std::string load_cublas();

}  // namespace sy
