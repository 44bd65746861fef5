// Shared helpers for the CPU kernels: argument checks and bf16/f16 row conversion.
// Internal to src/kernels/cpu; not part of the public API.
#pragma once

#include <cstdint>

#include "switchyard/core/error.h"
#include "switchyard/core/tensor.h"

namespace sy::cpu {

// Throws Unsupported unless the tensor lives on the CPU.
inline void require_cpu(const char* op, const Tensor& t) {
  if (t.defined() && t.device() != Device::kCpu) {
    throw make_error<Unsupported>(op, "tensor on ", device_name(t.device()),
                                  " but this op only has a CPU implementation in this build");
  }
}

inline void require_f32_contiguous(const char* op, const char* name, const Tensor& t) {
  SY_CHECK(t.defined() && t.dtype() == DType::kF32 && t.is_contiguous(), op, ": ", name,
           " must be a contiguous f32 tensor, got ", t.describe());
}

// dst[0:n] = float(src[0:n]) for a row of weights in dtype dt (f32, bf16 or f16).
void convert_row_to_f32(const void* src, DType dt, float* dst, int64_t n);

}  // namespace sy::cpu
