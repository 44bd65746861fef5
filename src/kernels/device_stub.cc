// Stub accelerator discovery for builds without CUDA: no devices, and a clear error when one is asked for.
#include "switchyard/core/error.h"
#include "switchyard/kernels/device.h"

#if !SY_HAS_CUDA
namespace sy {

bool cuda_compiled() { return false; }
std::vector<CudaDeviceInfo> cuda_devices() { return {}; }
void require_cuda_device(int) {
  throw make_error<Unsupported>("cuda", "this switchyard was built without CUDA; rebuild with nvcc available "
                                        "(cmake -DSY_CUDA=ON) to use --device cuda");
}

std::string load_cublas() {
  throw make_error<Unsupported>("cuda", "this switchyard was built without CUDA; there is no cuBLAS to load");
}

}  // namespace sy
#endif
