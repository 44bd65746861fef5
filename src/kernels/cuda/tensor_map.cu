// cuTensorMapEncodeTiled for the bf16 weight maps of tensor_map.cuh, fetched once from the driver through
// cudaGetDriverEntryPointByVersion (no link against libcuda). Host code.
#include "tensor_map.cuh"

#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstring>
#include <mutex>

#include "switchyard/kernels/cuda_memory.h"

namespace sy::cuda::detail {

namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static std::once_flag once;
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found) ==
            cudaSuccess &&
        found == cudaDriverEntryPointSuccess) {
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
    } else {
      cudaGetLastError();  // not a sticky error: the answer is "no TMA"
    }
  });
  return fn;
}

// Encodes into out (kTensorMapBytes bytes) the map of a (rows, k) row-major bf16 matrix at device address
// `base` with the weight box of tensor_map.cuh; reads past the matrix fill zeros. False where the driver has no
// cuTensorMapEncodeTiled, the matrix is empty, too large or not 16-byte aligned per row, or the driver refuses.
bool encode_weight_map(void* out, const void* base, int64_t rows, int64_t k) {
  static_assert(sizeof(CUtensorMap) == kTensorMapBytes, "CUtensorMap size");
  const auto fn = encoder();
  if (fn == nullptr || rows <= 0 || k <= 0 || k % 8 != 0 || reinterpret_cast<uintptr_t>(base) % 16 != 0 ||
      rows > (int64_t{1} << 31) || k > (int64_t{1} << 31)) {
    return false;
  }
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(rows)};  // innermost first
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(k) * 2};                           // bytes per row
  const cuuint32_t box[2] = {kWeightBoxK, kWeightBoxRows};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = fn(static_cast<CUtensorMap*>(out), CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base),
                        dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                        CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

}  // namespace

Tensor expert_weight_maps(const std::vector<Tensor>& weights) {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();
    return Tensor();
  }
  if (major < 9) return Tensor();
  const int64_t experts = static_cast<int64_t>(weights.size());
  Tensor host = Tensor::zeros({experts * kTensorMapBytes}, DType::kU8);
  for (int64_t e = 0; e < experts; ++e) {
    const Tensor& w = weights[static_cast<size_t>(e)];
    if (!w.defined()) continue;
    if (!encode_weight_map(static_cast<uint8_t*>(host.raw()) + e * kTensorMapBytes, w.raw(), w.size(0), w.size(1))) {
      return Tensor();  // no TMA for this table: the kernels keep cp.async
    }
  }
  return to_device(host);
}

}  // namespace sy::cuda::detail
