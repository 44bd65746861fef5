// Tensor operations used by the model forward passes. Activations are f32; weights may be f32, bf16 or f16.
// Every op here has a plain CPU implementation (src/kernels/cpu) that is the reference for any other
// backend; an op called on a device this build cannot serve throws sy::Unsupported.
// Output tensors are passed in preallocated; an output may alias its input where the comment says so.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"

namespace sy::ops {

// y = x W^T + b.  x: (m, k) f32; w: (n, k) f32|bf16|f16; bias: (n,) any float or undefined; y: (m, n) f32.
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());
// Columns [n0, n1) of y = x W^T (no bias) on the calling thread, for callers that split work over several
// products in one parallel loop (moe::run_expert_blocks at decode sizes). Other columns of y are untouched.
void linear_columns(const Tensor& x, const Tensor& w, int64_t n0, int64_t n1, Tensor& y);

// y[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w.  x, y: (m, d) f32 (y may alias x); w: (d,) any float.
void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y);

// out[i, :] = table[ids[i], :] as f32.  table: (vocab, d) any float; out: (len(ids), d).
void embedding(const std::vector<int64_t>& ids, const Tensor& table, Tensor& out);

// Rotary position embedding tables for one model (inverse frequencies and the magnitude scale).
struct RopeTable {
  std::vector<float> inv_freq;   // (rotary_dim / 2,)
  float attention_scaling = 1.f;  // multiplies cos and sin (yarn)
  int rotary_dim = 0;
  bool interleaved = false;       // pairs (2i, 2i+1) instead of (i, i + rotary_dim/2)
};
RopeTable make_rope_table(const RopeConfig& rope, int head_dim, int64_t max_position);

// Rotates the first rotary_dim features of every head in place.  x: (t, heads, d) f32 with d >= rotary_dim,
// positions: (t,) absolute positions.
void apply_rope(Tensor& x, const std::vector<int64_t>& positions, const RopeTable& table);

struct AttentionOptions {
  float scale = 1.f;
  int window = 0;         // key j visible to query at position p iff j <= p and (window == 0 or p - j < window)
  const Tensor* sinks = nullptr;  // (heads,) sink logits joining the softmax denominator (gpt-oss)
  // Packed documents: per query i, the first key index it may see (keys of earlier documents are masked).
  const std::vector<int64_t>* key_start = nullptr;
};
// Causal attention of t queries against the first kv_len cached keys of one sequence.
// q: (t, heads, dk); k: (>= kv_len, kv_heads, dk); v: (>= kv_len, kv_heads, dv); positions: (t,) with
// positions[i] < kv_len; out: (t, heads, dv). heads must be a multiple of kv_heads (GQA).
void attention(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& positions,
               int64_t kv_len, const AttentionOptions& options, Tensor& out);

// One sequence of a paged_attention batch: its query rows [q_begin, q_end) and its block table (num_blocks
// entries); key j of the sequence lives at pool row block_table[j / block_size] * block_size + j % block_size.
struct PagedSequence {
  int64_t q_begin = 0, q_end = 0;
  const int32_t* block_table = nullptr;
  int64_t num_blocks = 0;
  int64_t kv_len = 0;  // keys cached for the sequence, the new rows included
};
// Causal attention of the queries of many sequences against their paged keys/values.
// q: (t, heads, dk); k: (blocks*block_size, kv_heads, dk); v: (blocks*block_size, kv_heads, dv);
// positions: (t,) with positions[i] < kv_len of its sequence; out: (t, heads, dv). Every query row belongs
// to exactly one sequence. options.key_start must be null. Bitwise equal to `attention` on the same keys.
void paged_attention(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& positions,
                     const std::vector<PagedSequence>& sequences, int64_t block_size,
                     const AttentionOptions& options, Tensor& out);

// out = silu(gate) * up, elementwise.  gate, up, out: same shape f32 (out may alias gate).
void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out);
// gpt-oss clamped SwiGLU: g = min(gate, limit); u = clamp(up, -limit, limit); out = (u + 1) * g * sigmoid(alpha g).
void clamped_swiglu(const Tensor& gate, const Tensor& up, float alpha, float limit, Tensor& out);

// Row-wise softmax in place.  x: (m, n) f32.
void softmax_rows(Tensor& x);

// One token drawn from one row of logits, given the uniform draw u in [0, 1) (the reference of
// cuda::sample_rows; sy::Sampler draws u and calls this). temperature 0: argmax, ties to the lower id (u
// unused). Otherwise tokens are ranked by logit, descending, ties to the lower id; the first min(top_k, vocab)
// are kept (top_k 0: all); p = softmax(logit / temperature) over them; with top_p < 1 the kept set is cut
// after the first rank whose cumulative p reaches top_p, and renormalised; the result is the first token in
// rank order whose cumulative p exceeds u (the last kept token if rounding leaves none). logits: (vocab,) f32.
int64_t sample_row(const float* logits, int64_t vocab, float temperature, int top_k, float top_p, double u);

// One row as an int8 payload (the dispatcher's INT8 rows; reference of cuda::quantize_rows_int8): dst holds
// 4 + hidden bytes, the f32 scale amax / 127 (1 when that is 0: an all-zero row) then q[i] =
// round-half-even(clamp(x[i] / scale, -127, 127)) as int8 (NaN gives -127; meant for finite rows).
// dequantize_row_int8 writes y[i] = q[i] * scale.
void quantize_row_int8(const float* x, int64_t hidden, uint8_t* dst);
void dequantize_row_int8(const uint8_t* src, int64_t hidden, float* y);

// y += x (same shape, f32).  y += s * x for axpy.
void add_inplace(Tensor& y, const Tensor& x);
void axpy_inplace(Tensor& y, float s, const Tensor& x);

// Vector primitives shared by CPU kernels (n elements, f32).
float dot(const float* a, const float* b, int64_t n);
void axpy(float* y, float s, const float* x, int64_t n);  // y += s * x

}  // namespace sy::ops
