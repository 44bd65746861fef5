// Shared helpers of the CUDA op files: argument checks and bf16 conversions. Not a public header.
#pragma once

#include <cuda_bf16.h>

#include <functional>
#include <map>

#include "cuda_check.cuh"
#include "switchyard/core/error.h"
#include "switchyard/kernels/cuda_ops.h"

namespace sy::cuda::detail {

// The engine's cuBLAS handle, bound to stream() (linear.cu).
cublasHandle_t cublas_handle();
// out (bf16, same element count) = x (f32) rounded to bf16, on stream().
void to_bf16(const Tensor& x, Tensor& out);

inline void require_device(const char* op, const char* name, const Tensor& t) {
  SY_REQUIRE(t.defined() && t.device() == Device::kCuda && t.is_contiguous(), InvalidArgument, op, name,
             " must be a contiguous CUDA tensor, got ", t.defined() ? t.describe() : "undefined");
}
// A view with unit steps along its last dimension (a column slice of a wider tensor), any other strides.
inline void require_rows_device(const char* op, const char* name, const Tensor& t) {
  SY_REQUIRE(t.defined() && t.device() == Device::kCuda && t.dim() > 0 && t.strides().back() == 1, InvalidArgument,
             op, name, " must be a CUDA tensor with unit last stride, got ", t.defined() ? t.describe() : "undefined");
}
inline void require_dtype(const char* op, const char* name, const Tensor& t, DType a, DType b = DType::kF32) {
  SY_REQUIRE(t.dtype() == a || t.dtype() == b, InvalidArgument, op, name, " has dtype ", t.describe());
}
// Per-device capabilities (capability.cu). sm90a_device: the current device has compute capability 9.0,
// runs this build's sm_90a code (a one-time probe per device: it synchronises, so the first call must not fall
// inside a stream capture) and grants smem_bytes of shared memory per block. once_per_device: `probe`'s answer
// for the current device, computed on the first call per device and cached in `cache`. multiprocessors: the
// current device's SM count (cached per device).
bool sm90a_device(size_t smem_bytes);
int multiprocessors();
bool once_per_device(std::map<int, bool>& cache, const std::function<bool()>& probe);

// Checks the launch just queued (bad configuration shows here; faults show at the next synchronize).
#define SY_CUDA_CHECK_LAUNCH() SY_CUDA_CHECK(cudaGetLastError())

// Programmatic dependent launch (Hopper) for the kernels of a decode step's chain. With it on
// (set_programmatic_launch), launch_chained lets a kernel's blocks be scheduled while the previous kernel in the
// stream is still running; every chained kernel starts with chain_entry(), which releases its own dependents
// early and then waits until the previous grid has finished and its writes are visible, before reading
// anything. A kernel that reads constants (weights) first splits it: chain_release() at entry, the constant
// loads, then chain_wait() before the first read of anything an earlier kernel wrote (every thread must reach
// it or exit). So results are those of plain stream order; what is saved is the launch gap between kernels.
// Off, or launched with <<<>>>, both instructions return at once.
bool programmatic_launch();
__device__ __forceinline__ void chain_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void chain_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void chain_entry() {
  chain_release();
  chain_wait();
}
// Launches kernel on stream() in thread-block clusters of `cluster` blocks along x (1: no clusters; Hopper),
// and with programmatic dependent launch where `chained` and programmatic_launch() (a decode-chain kernel);
// a plain <<<>>> launch when neither applies.
template <typename... Params, typename... Args>
void launch_ex(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, unsigned cluster, bool chained,
               Args... args) {
  cudaLaunchAttribute attribute[2];
  unsigned count = 0;
  if (cluster > 1) {
    attribute[count].id = cudaLaunchAttributeClusterDimension;
    attribute[count].val.clusterDim.x = cluster;
    attribute[count].val.clusterDim.y = 1;
    attribute[count].val.clusterDim.z = 1;
    ++count;
  }
  if (chained && programmatic_launch()) {
    attribute[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  if (count == 0) {
    kernel<<<grid, block, smem, stream()>>>(args...);
    return;
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream();
  config.attrs = attribute;
  config.numAttrs = count;
  SY_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args...));  // the same implicit conversions as <<<>>>
}
template <typename... Params, typename... Args>
void launch_chained(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args... args) {
  launch_ex(kernel, grid, block, smem, 1, true, args...);
}

// The eight bf16 values of a 16-byte load, widened to f32.
__device__ __forceinline__ void unpack_bf16x8(const uint4& packed, float (&v)[8]) {
  const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&packed);
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float2 f = __bfloat1622float2(h2[q]);
    v[2 * q] = f.x;
    v[2 * q + 1] = f.y;
  }
}

// Expert weight tables (device addresses, one per expert) staged in shared memory by a chained kernel before
// its chain_wait: the table is a constant of the chain, so the load of an expert's address after the routing
// is known becomes a shared-memory read instead of another round trip to L2 on the critical path. Entries
// from kStagedExperts on stay in global memory (staged_pointer reads them there). The block's threads call
// stage_pointers together; the staged entries are visible after the block's next __syncthreads.
constexpr int kStagedExperts = 256;
__device__ __forceinline__ void stage_pointers(const uint64_t* table, int count, uint64_t* staged) {
  for (int i = threadIdx.x; i < count && i < kStagedExperts; i += blockDim.x) staged[i] = table[i];
}
__device__ __forceinline__ uint64_t staged_pointer(const uint64_t* table, const uint64_t* staged, int e) {
  return e < kStagedExperts ? staged[e] : table[e];
}

// The dot product of eight bf16 weights (one 16-byte load) with eight f32 activations a, b (in that order),
// summed left to right: the grouped expert GEMV and the combine share it, so their sums agree.
__device__ __forceinline__ float dot_bf16x8(const uint4& packed, const float4& a, const float4& b) {
  const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&packed);
  const float2 w0 = __bfloat1622float2(h2[0]), w1 = __bfloat1622float2(h2[1]);
  const float2 w2 = __bfloat1622float2(h2[2]), w3 = __bfloat1622float2(h2[3]);
  return w0.x * a.x + w0.y * a.y + w1.x * a.z + w1.y * a.w + w2.x * b.x + w2.y * b.y + w3.x * b.z + w3.y * b.w;
}

// The eight floats from p on (16-byte aligned), as two 16-byte loads.
__device__ __forceinline__ void load_f32x8(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ float load_f(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store_f(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16(v); }

inline unsigned blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 32 ? b : 65535 * 32);
}

}  // namespace sy::cuda::detail
