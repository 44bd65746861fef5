// The lazily opened cuBLAS (see cublas_loader.cuh): dlopen on first use, dlsym per entry point.
#include <dlfcn.h>

#include <string>

#include "cublas_loader.cuh"
#include "library_loader.cuh"
#include "switchyard/core/error.h"

namespace sy::cuda::detail {

namespace {

#define SY_STR2(x) #x
#define SY_STR(x) SY_STR2(x)
constexpr const char* kSoname = "libcublas.so." SY_STR(CUBLAS_VER_MAJOR);

void* open_cublas() {
  std::string error;
  if (void* h = open_cuda_library(kSoname, &error)) return h;
  throw make_error<Unsupported>("cuda", "cannot load cuBLAS (", kSoname, "): ", error,
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
