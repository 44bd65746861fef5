// The host side of cuda::L2Prefetch: a tensor's bytes as a range, and the checks before a kernel takes one.
#include "l2_prefetch.cuh"

#include "op_common.cuh"

namespace sy::cuda {

L2Prefetch L2Prefetch::of(const Tensor& t) {
  if (!t.defined()) return {};
  detail::require_device("cuda L2Prefetch", "tensor", t);
  SY_REQUIRE(t.is_contiguous(), InvalidArgument, "cuda L2Prefetch", "a contiguous tensor expected, got ",
             t.describe());
  // A hint: an unaligned start gives none, a ragged end is left out.
  if (reinterpret_cast<uintptr_t>(t.raw()) % 16 != 0) return {};
  return {t.raw(), static_cast<int64_t>(t.nbytes()) / 16 * 16};
}

namespace detail {

L2Range l2_range(const char* op, const L2Prefetch& prefetch) {
  if (prefetch.base == nullptr) return {};
  SY_REQUIRE(reinterpret_cast<uintptr_t>(prefetch.base) % 16 == 0 && prefetch.bytes >= 0 && prefetch.bytes % 16 == 0,
             InvalidArgument, op, "an L2 prefetch range must start 16-byte aligned and span a multiple of 16 bytes, got ",
             prefetch.bytes, " bytes at offset ", reinterpret_cast<uintptr_t>(prefetch.base) % 16, " of 16");
  return {static_cast<const char*>(prefetch.base), prefetch.bytes, prefetch.keep};
}

}  // namespace detail

}  // namespace sy::cuda
