// A decode-chain kernel that reads little itself pulling a later kernel's weight into L2 (cuda::L2Prefetch):
// the whole grid shares the range in 4 KB pieces, one bulk prefetch (cp.async.bulk.prefetch.L2, sm_90) per
// piece, issued and forgotten. Not a public header.
#pragma once

#include <cstdint>

#include "switchyard/kernels/cuda_ops.h"

namespace sy::cuda::detail {

// The device side of an L2Prefetch (a kernel parameter).
struct L2Range {
  const char* base = nullptr;
  int64_t bytes = 0;  // a multiple of 16
  bool keep = false;  // L2Prefetch::keep: evict-last
};

// Checks a prefetch range (InvalidArgument naming op otherwise) and converts it.
L2Range l2_range(const char* op, const L2Prefetch& prefetch);

// Every thread of the grid calls it (before its programmatic-launch wait: the range is no earlier kernel's
// output); thread i of the grid takes pieces i, i + threads, ... (the first blocks scheduled take them all).
__device__ __forceinline__ void prefetch_l2(const L2Range& r) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (r.base == nullptr) return;
  constexpr int64_t kPiece = 4096;
  const int64_t pieces = (r.bytes + kPiece - 1) / kPiece;
  const int64_t block = blockIdx.x + int64_t{gridDim.x} * (blockIdx.y + int64_t{gridDim.y} * blockIdx.z);
  const int64_t threads = int64_t{blockDim.x} * gridDim.x * gridDim.y * gridDim.z;
  uint64_t policy = 0;
  if (r.keep) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  for (int64_t i = block * blockDim.x + threadIdx.x; i < pieces; i += threads) {
    const int64_t at = i * kPiece;
    const uint32_t size = static_cast<uint32_t>(r.bytes - at < kPiece ? r.bytes - at : kPiece);
    if (r.keep) {
      asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(r.base + at), "r"(size),
                   "l"(policy)
                   : "memory");
    } else {
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(r.base + at), "r"(size) : "memory");
    }
  }
#endif
}

}  // namespace sy::cuda::detail
