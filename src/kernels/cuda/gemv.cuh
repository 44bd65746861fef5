// The dense bf16 GEMV cuda::linear uses for decode-sized batches (gemv.cu). Not a public header.
#pragma once

#include "switchyard/core/tensor.h"

namespace sy::cuda::detail {

// The most rows of x one GEMV pass takes (set_dense_gemv_max_rows picks the threshold up to this; default 2).
constexpr int kGemvMaxRows = 4;

// Whether gemv takes this (checked) linear: 1 to dense_gemv_max_rows() rows, k a multiple of 8, contiguous
// operands with 16-byte aligned starts. x: (m, k), w: (n, k), y: (m, n).
bool gemv_fits(const Tensor& x, const Tensor& w, const Tensor& y);
// y = x W^T + bias, or y += x W^T + bias with accumulate, on stream(); arguments as cuda::linear's, validated
// by the caller.
void gemv(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate);

}  // namespace sy::cuda::detail
