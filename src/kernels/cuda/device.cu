// CUDA device discovery, the capability check (Hopper, sm_90, or newer) and opening cuBLAS up front.
#include <dlfcn.h>

#include "cuda_check.cuh"
#include "switchyard/kernels/device.h"

namespace sy {

bool cuda_compiled() { return true; }

std::vector<CudaDeviceInfo> cuda_devices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: report none
    return {};
  }
  std::vector<CudaDeviceInfo> out;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    SY_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
    out.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  return out;
}

void require_cuda_device(int index) {
  std::vector<CudaDeviceInfo> devices = cuda_devices();
  if (index < 0 || index >= static_cast<int>(devices.size())) {
    throw make_error<Unsupported>("cuda", "no CUDA device ", index, " (", devices.size(), " visible)");
  }
  const CudaDeviceInfo& d = devices[index];
  if (d.major < 9) {
    throw make_error<Unsupported>("cuda", d.name, " has compute capability ", d.major, ".", d.minor,
                                  "; switchyard's CUDA kernels need Hopper (9.0) or newer");
  }
}

std::string load_cublas() {
  const cuda::detail::CublasApi& api = cuda::detail::cublas();
  Dl_info info{};
  return dladdr(reinterpret_cast<void*>(api.gemm_ex), &info) && info.dli_fname ? info.dli_fname : "libcublas";
}

}  // namespace sy
