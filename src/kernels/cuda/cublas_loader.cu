// The lazily opened cuBLAS (see cublas_loader.cuh): dlopen on first use, dlsym per entry point.
#include <dlfcn.h>

#include <string>

#include "cublas_loader.cuh"
#include "switchyard/core/error.h"

namespace sy::cuda::detail {

namespace {

const std::string kSoname = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);

void* open_cublas() {
  if (void* h = dlopen(kSoname.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  std::string first_error = dlerror();
  // Next to the CUDA runtime in use (a toolkit outside the loader's search path).
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&cudaGetDeviceCount), &info) && info.dli_fname) {
    std::string dir = info.dli_fname;
    dir = dir.substr(0, dir.find_last_of('/') + 1);
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
    resolve(lib, "cublasGemmGroupedBatchedEx", a.gemm_grouped_batched_ex);
    resolve(lib, "cublasGetStatusName", a.status_name);
    return a;
  }();
  return api;
}

}  // namespace sy::cuda::detail
