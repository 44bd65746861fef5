// The per-thread online softmax and output rows shared by the prefill attention kernels (flash_attention.cu on
// mma.sync, flash_attention_sm90.cu on wgmma): both hold a thread's scores and outputs in the accumulator
// fragment layout, element 4j + 2r + e at row g + 8r of the thread's 16-row group and column 8j + 2c + e
// (g = lane / 4, c = lane % 4; a row's values are spread over the 4 threads of a quad). Not a public header.
#pragma once

#include <cmath>
#include <cstdint>

namespace sy::cuda::detail {

// One key tile's step for this thread's two query rows: scores s[4j + 2r + e] (j < kN / 8, tile offsets
// 8j + 2c + e, key k0 + offset) outside [row_lo[r], row_q[r]] are masked, the rest scaled to log2 units and
// exponentiated against the new running max m[r]; the sums join l[r], and the outputs o[4j + 2r + e]
// (j < kDv / 8) and l[r] are rescaled by exp2(old max - new max). s then holds P.
template <int kN, int kDv>
__device__ __forceinline__ void online_softmax(float* s, float* o, const int64_t (&row_q)[2],
                                               const int64_t (&row_lo)[2], int64_t k0, int c, float scale_log2,
                                               float (&m)[2], float (&l)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    // Visible keys of this row as tile offsets [lo, hi], clamped to [-1, kN] (32-bit compares below).
    const int64_t hi64 = row_q[r] - k0, lo64 = row_lo[r] - k0;
    const int hi = static_cast<int>(hi64 < -1 ? -1 : (hi64 > kN ? kN : hi64));
    const int lo = static_cast<int>(lo64 < -1 ? -1 : (lo64 > kN ? kN : lo64));
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = 8 * j + 2 * c + e;
        float& x = s[4 * j + 2 * r + e];
        x = key <= hi && key >= lo ? x * scale_log2 : -INFINITY;
        mx = fmaxf(mx, x);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m[r], mx);
    const float alpha = m_new == -INFINITY ? 1.f : exp2f(m[r] - m_new);  // 0 when m was -inf
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& x = s[4 * j + 2 * r + e];
        x = x == -INFINITY ? 0.f : exp2f(x - m_new);
        sum += x;
      }
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    l[r] = l[r] * alpha + sum;
    m[r] = m_new;
#pragma unroll
    for (int j = 0; j < kDv / 8; ++j) {
      o[4 * j + 2 * r] *= alpha;
      o[4 * j + 2 * r + 1] *= alpha;
    }
  }
}

// out[row_q[r]] (f32, columns 2c + 8j + e from `out`) = O / l for this thread's rows before t; a sink (log
// units, or null) adds exp(sink - max) to the denominator, as in ops::attention (every row saw its own key, so
// m is finite).
template <int kDv>
__device__ __forceinline__ void store_rows(const float* o, const float (&m)[2], const float (&l)[2],
                                           const int64_t (&row_q)[2], int64_t t, const float* sink, float* out,
                                           int64_t o_stride, int c) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (row_q[r] >= t) continue;
    float scale_o = 1.f, denom = l[r];
    if (sink) {
      const float s2 = *sink * 1.4426950408889634f, mf = fmaxf(m[r], s2);  // log2 units
      scale_o = exp2f(m[r] - mf);
      denom = l[r] * scale_o + exp2f(s2 - mf);
    }
    const float inv = scale_o / denom;
    float* dst = out + row_q[r] * o_stride + 2 * c;
#pragma unroll
    for (int j = 0; j < kDv / 8; ++j) {
      *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(o[4 * j + 2 * r] * inv, o[4 * j + 2 * r + 1] * inv);
    }
  }
}

}  // namespace sy::cuda::detail
