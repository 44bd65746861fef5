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
// The normed form: y = rms_norm(x, norm_w, eps) W^T + bias with the norm's 1/rms applied to the f32 sums (the
// bf16 operand is x * norm_w rounded). gemv_normed_fits adds to gemv_fits: x f32, norm_w contiguous and
// 16-byte aligned. norm_w: (k,) f32 or bf16, validated by the caller.
bool gemv_normed_fits(const Tensor& x, const Tensor& norm_w, const Tensor& w, const Tensor& y);
void gemv_normed(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, const Tensor& bias, Tensor& y);

}  // namespace sy::cuda::detail
