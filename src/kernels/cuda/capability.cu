// Per-device capability answers for the hand-written kernels: once_per_device caches a probe's answer per
// device, sm90a_device says whether the current device runs this build's sm_90a (wgmma) code, multiprocessors
// counts its SMs. Host code.
#include <atomic>
#include <map>
#include <mutex>

#include "op_common.cuh"

namespace sy::cuda::detail {

namespace {
// Writes 1 when the running code is an sm_90a image (wgmma available), 0 when it is a PTX fallback.
__global__ void probe_sm90a_kernel(int* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *out = 1;
#else
  *out = 0;
#endif
}
}  // namespace

bool once_per_device(std::map<int, bool>& cache, const std::function<bool()>& probe) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  static std::mutex mutex;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(device);
    if (it != cache.end()) return it->second;
  }
  // The probe runs unlocked: probes nest (a kernel's probe asks sm90a_device), and two threads probing the
  // same device at once both get the same answer (setting a function attribute twice is harmless).
  const bool answer = probe();
  std::lock_guard<std::mutex> lock(mutex);
  return cache.emplace(device, answer).first->second;
}

int multiprocessors() {
  int device = 0;
  SY_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::map<int, int> counts;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = counts.find(device);
  if (it != counts.end()) return it->second;
  int n = 0;
  SY_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return counts.emplace(device, n).first->second;
}

bool sm90a_device(size_t smem_bytes) {
  static std::map<int, bool> cache;
  const bool sm90a = once_per_device(cache, [] {
    // An error left by earlier asynchronous work surfaces here instead of reading as "not sm_90a" forever.
    SY_CUDA_CHECK(cudaGetLastError());
    int device = 0;
    cudaDeviceProp prop{};
    SY_CUDA_CHECK(cudaGetDevice(&device));
    SY_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    if (prop.major != 9 || prop.minor != 0) return false;
    int* flag = nullptr;
    int host = 0;
    SY_CUDA_CHECK(cudaMalloc(&flag, sizeof(int)));
    probe_sm90a_kernel<<<1, 1>>>(flag);
    const cudaError_t launched = cudaGetLastError();  // no kernel image for this device: a PTX-less build
    const cudaError_t copied = cudaMemcpy(&host, flag, sizeof(int), cudaMemcpyDeviceToHost);
    SY_CUDA_CHECK(cudaFree(flag));
    SY_CUDA_CHECK(copied);
    return launched == cudaSuccess && host == 1;
  });
  if (!sm90a) return false;
  int device = 0, optin = 0;
  SY_CUDA_CHECK(cudaGetDevice(&device));
  SY_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(optin) >= smem_bytes;
}

namespace {
std::atomic<bool> g_programmatic_launch{false};
bool g_programmatic_launch_chosen = false;  // set_programmatic_launch was called (under the mutex)
std::mutex g_programmatic_launch_mutex;
}  // namespace

bool programmatic_launch() { return g_programmatic_launch.load(std::memory_order_relaxed); }

}  // namespace sy::cuda::detail

namespace sy::cuda {

bool set_programmatic_launch(bool on) {
  // Compute capability 9.0 with this build's sm_90a code, where the griddepcontrol instructions exist.
  const bool granted = on && detail::sm90a_device(0);
  std::lock_guard<std::mutex> lock(detail::g_programmatic_launch_mutex);
  detail::g_programmatic_launch.store(granted);
  detail::g_programmatic_launch_chosen = true;
  return granted;
}

bool programmatic_launch_enabled() { return detail::programmatic_launch(); }

void default_programmatic_launch() {
  const bool available = detail::sm90a_device(0);
  std::lock_guard<std::mutex> lock(detail::g_programmatic_launch_mutex);
  if (!detail::g_programmatic_launch_chosen) detail::g_programmatic_launch.store(available);
}

}  // namespace sy::cuda
