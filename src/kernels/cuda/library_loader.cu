// The search for the lazily opened CUDA libraries (see library_loader.cuh).
#include <dlfcn.h>

#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "library_loader.cuh"

namespace sy::cuda::detail {

void* open_cuda_library(const char* soname, std::string* error) {
  if (void* h = dlopen(soname, RTLD_NOW | RTLD_LOCAL)) return h;
  const std::string first_error = dlerror();
  std::vector<std::string> dirs;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&cudaGetDeviceCount), &info) && info.dli_fname) {
    const std::string file = info.dli_fname;
    if (file.find("libcudart") != std::string::npos) dirs.push_back(file.substr(0, file.find_last_of('/') + 1));
  }
#ifdef SY_CUDA_LIBRARY_DIR
  dirs.push_back(std::string(SY_CUDA_LIBRARY_DIR) + "/");
#endif
  for (const std::string& dir : dirs) {
    if (void* h = dlopen((dir + soname).c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  }
  if (error) *error = first_error;
  return nullptr;
}

}  // namespace sy::cuda::detail
