// One head of the fused q|k|v projection's row through the GQA epilogue (bias, clip, per-head RMSNorm, RoPE),
// shared by cuda::qkv_epilogue and the per-head decode attention that forms its own query, key and value
// (paged_attention_qkv), so both compute the same values bit for bit. A block stages the token's norm
// weights and rotary cosines and sines in shared memory (stage_qkv_tables, before the programmatic-launch
// wait: none of it is a kernel's output); then one warp transforms one head (transform_head). Also the
// host-side check of the epilogue's vectors both ops share.
#pragma once

#include <cmath>

#include "op_common.cuh"

namespace sy::cuda::detail {

struct QkvHeadParams {
  int heads, kv_heads, d, dv;
  float clip, eps;
  int half;  // rotary_dim / 2
  bool interleaved;
  float rope_scaling;
};

// The q|k|v epilogue folded into a decode pass's attention (paged_attention_qkv, per-head or grouped): the
// fused projection's rows, the epilogue's operands, and the pools the new key and value rows go to (the
// attention's k and v, writable).
struct QkvSource {
  const float* qkv = nullptr;  // (t, (heads + kv_heads) * d + kv_heads * dv)
  const float* bias = nullptr;
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  const float* inv_freq = nullptr;
  const int64_t* rows = nullptr;  // pool row of each query's own key and value
  void* keys = nullptr;
  void* values = nullptr;
  QkvHeadParams head{};
};

// The staged tables of one token at position pos: q_norm_s, k_norm_s (d each; left unset where the norm is
// null), cos_s, sin_s (half each). Every thread of the block calls it; visible after the next __syncthreads.
__device__ __forceinline__ void stage_qkv_tables(const float* q_norm, const float* k_norm, const float* inv_freq,
                                                 float pos, const QkvHeadParams& p, float* q_norm_s,
                                                 float* k_norm_s, float* cos_s, float* sin_s) {
  for (int j = threadIdx.x; j < p.d; j += blockDim.x) {
    if (q_norm) q_norm_s[j] = q_norm[j];
    if (k_norm) k_norm_s[j] = k_norm[j];
  }
  for (int f = threadIdx.x; f < p.half; f += blockDim.x) {  // as rope_kernel: the angle in f32, cos/sin in f64
    const float angle = pos * inv_freq[f];
    cos_s[f] = static_cast<float>(cos(static_cast<double>(angle))) * p.rope_scaling;
    sin_s[f] = static_cast<float>(sin(static_cast<double>(angle))) * p.rope_scaling;
  }
}

// buf[0, width) = the head at columns [col0, col0 + width) of row (f32) with bias[col0 + j] added (bias may be
// null), clamped to [-clip, clip] when clip > 0, RMS-normalised with `norm` (null: no norm) and rotated with
// the staged cosines and sines when `rotary` (q and k heads). One whole warp; buf in shared memory, complete
// for the warp on return.
__device__ __forceinline__ void transform_head(const float* row, const float* bias, int64_t col0, int width,
                                               const float* norm, bool rotary, const float* cos_s,
                                               const float* sin_s, const QkvHeadParams& p, float* buf) {
  const int lane = threadIdx.x & 31;
  float ss = 0.f;
  for (int j = lane; j < width; j += 32) {
    float v = row[col0 + j] + (bias ? bias[col0 + j] : 0.f);
    if (p.clip > 0.f) v = fminf(fmaxf(v, -p.clip), p.clip);
    buf[j] = v;
    ss += v * v;
  }
  if (norm) {
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float inv = 1.f / sqrtf(ss / static_cast<float>(width) + p.eps);
    for (int j = lane; j < width; j += 32) buf[j] = buf[j] * inv * norm[j];
  }
  __syncwarp();
  if (rotary) {
    for (int f = lane; f < p.half; f += 32) {
      const float c = cos_s[f], s = sin_s[f];
      const int i0 = p.interleaved ? 2 * f : f, i1 = p.interleaved ? 2 * f + 1 : f + p.half;
      const float x0 = buf[i0], x1 = buf[i1];
      buf[i0] = x0 * c - x1 * s;
      buf[i1] = x1 * c + x0 * s;
    }
    __syncwarp();
  }
}

// The epilogue's vectors, where given: f32 on the device, bias over the whole fused row (width values), the
// q/k norms over one head (d values). op names the caller in the error.
inline void check_qkv_epilogue_vectors(const char* op, const QkvEpilogueArgs& e, int64_t width, int64_t d) {
  const char* names[3] = {"bias", "q_norm", "k_norm"};
  const Tensor* vecs[3] = {&e.bias, &e.q_norm, &e.k_norm};
  const int64_t sizes[3] = {width, d, d};
  for (int i = 0; i < 3; ++i) {
    if (!vecs[i]->defined()) continue;
    require_device(op, names[i], *vecs[i]);
    require_dtype(op, names[i], *vecs[i], DType::kF32);
    SY_REQUIRE(vecs[i]->numel() == sizes[i], InvalidArgument, op, names[i], " ", vecs[i]->describe(), " for ",
               sizes[i], " values");
  }
}

}  // namespace sy::cuda::detail
