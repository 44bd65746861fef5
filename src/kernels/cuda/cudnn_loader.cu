// The lazily opened cuDNN (see cudnn_loader.cuh): dlopen on first use, dlsym per entry point.
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "cudnn_loader.cuh"
#include "library_loader.cuh"

namespace sy::cuda::detail {

#if SY_HAVE_CUDNN_HEADERS
namespace {

#define SY_CUDNN_STR2(x) #x
#define SY_CUDNN_STR(x) SY_CUDNN_STR2(x)
constexpr const char* kSoname = "libcudnn.so." SY_CUDNN_STR(CUDNN_MAJOR);

void* open_cudnn(std::string& error) {
  if (const char* path = std::getenv("SY_CUDNN_LIBRARY"); path && *path) {
    if (void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL)) return h;
    error = std::string("SY_CUDNN_LIBRARY=") + path + ": " + dlerror();
    return nullptr;
  }
  if (void* h = open_cuda_library(kSoname, &error)) return h;
  error = std::string("cannot load ") + kSoname + " (" + error +
          "); install cuDNN 9 or point SY_CUDNN_LIBRARY at its libcudnn.so.9";
  return nullptr;
}

template <typename F>
bool resolve(void* lib, const char* name, F& fn, std::string& error) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (fn == nullptr && error.empty()) error = std::string(kSoname) + " has no " + name;
  return fn != nullptr;
}

}  // namespace

const CudnnApi* cudnn_or_null(std::string* why) {
  static std::once_flag once;
  static CudnnApi api{};
  static bool ok = false;
  static std::string error;
  std::call_once(once, [] {
    void* lib = open_cudnn(error);  // kept open for the process's life
    if (lib == nullptr) return;
    bool all = resolve(lib, "cudnnGetVersion", api.get_version, error);
    all &= resolve(lib, "cudnnGetErrorString", api.error_string, error);
    all &= resolve(lib, "cudnnGetLastErrorString", api.last_error, error);
    all &= resolve(lib, "cudnnCreate", api.create, error);
    all &= resolve(lib, "cudnnSetStream", api.set_stream, error);
    all &= resolve(lib, "cudnnBackendCreateDescriptor", api.create_descriptor, error);
    all &= resolve(lib, "cudnnBackendDestroyDescriptor", api.destroy_descriptor, error);
    all &= resolve(lib, "cudnnBackendSetAttribute", api.set_attribute, error);
    all &= resolve(lib, "cudnnBackendGetAttribute", api.get_attribute, error);
    all &= resolve(lib, "cudnnBackendFinalize", api.finalize, error);
    all &= resolve(lib, "cudnnBackendExecute", api.execute, error);
    if (!all) return;
    api.version = api.get_version();
    ok = true;
  });
  if (!ok && why) *why = error;
  return ok ? &api : nullptr;
}
#endif

}  // namespace sy::cuda::detail
