// The lazily opened cuBLAS (see cublas_loader.cuh): dlopen on first use, dlsym per entry point.
#include <dlfcn.h>

#include <string>
#include <vector>

#include "cublas_loader.cuh"
#include "switchyard/core/error.h"

namespace sy::cuda::detail {

namespace {

#define SY_STR2(x) #x
#define SY_STR(x) SY_STR2(x)
constexpr const char* kSoname = "libcublas.so." SY_STR(CUBLAS_VER_MAJOR);

void* open_cublas() {
  if (void* h = dlopen(kSoname, RTLD_NOW | RTLD_LOCAL)) return h;
  std::string first_error = dlerror();
  // Next to the shared CUDA runtime in use, then in the toolkit this was built with (either may lie outside
  // the loader's search path).
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
    if (void* h = dlopen((dir + kSoname).c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  }
  throw make_error<Unsupported>("cuda", "cannot load cuBLAS (", kSoname, "): ", first_error,
                                "; install the CUDA toolkit's cuBLAS ", CUBLAS_VER_MAJOR,
                                " or add its directory to LD_LIBRARY_PATH");
}

template <typename F>
void resolve(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  SY_REQUIRE(fn != nullptr, Unsupported, "cuda", kSoname, " has no ", name, "; it is older than the cuBLAS ",
             CUBLAS_VER_MAJOR, " this build needs");
}

}  // namespace

const CublasApi& cublas() {
  static const CublasApi api = [] {
    void* lib = open_cublas();  // kept open for the process's life
    CublasApi a{};
    resolve(lib, "cublasCreate_v2", a.create);
    resolve(lib, "cublasSetStream_v2", a.set_stream);
    resolve(lib, "cublasGemmEx", a.gemm_ex);
    resolve(lib, "cublasGemmStridedBatchedEx", a.gemm_strided_batched_ex);
    // Optional: grouped_gemm falls back to one GEMM per group without it.
    a.gemm_grouped_batched_ex =
        reinterpret_cast<decltype(a.gemm_grouped_batched_ex)>(dlsym(lib, "cublasGemmGroupedBatchedEx"));
    resolve(lib, "cublasGetStatusName", a.status_name);
    return a;
  }();
  return api;
}

}  // namespace sy::cuda::detail
