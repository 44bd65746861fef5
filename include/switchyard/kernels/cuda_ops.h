// CUDA ops: the device counterparts of switchyard/kernels/ops.h and the MoE router/dispatch, each tested
// against its CPU reference by tests/gpu. Compiled only in CUDA builds (SY_HAS_CUDA). All tensors passed here
// live on Device::kCuda and are contiguous; all work is queued on sy::cuda::stream() (call synchronize() or
// to_host() to wait). Errors in arguments throw sy::InvalidArgument; CUDA/cuBLAS failures throw sy::Error
// naming the call, the error and file:line.
// Deliberately not here yet (issue 4): grouped expert GEMM, fused SwiGLU epilogue, flash/paged attention,
// MLA, CUDA graphs, sampling.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"
#include "switchyard/kernels/cuda_memory.h"
#include "switchyard/kernels/ops.h"

namespace sy::cuda {

// y = x W^T + b through cuBLAS (cublasGemmEx, f32 accumulation).
// w: (n, k) bf16 (the checkpoint dtype; f32/f16 weights are converted once at load, not here).
// x: (m, k) f32 or bf16. f32 activations are rounded to bf16 in a scratch buffer before the GEMM, so both
// operands run on the bf16 tensor cores; that rounding is the op's documented error (bf16 tolerance 2e-2).
// bias: (n,) f32 or bf16, or undefined. y: (m, n) f32 or bf16 (rounded once, after the f32 accumulation).
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);

// y[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w.  x, y: (m, d) f32 (y may alias x); w: (d,) f32|bf16.
void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y);

// Rotates the first rotary_dim features of every head in place, either layout (table.interleaved).
// x: (t, heads, d) f32; positions: (t,) int64 on the device.
void apply_rope(Tensor& x, const Tensor& positions, const ops::RopeTable& table);

// out = silu(gate) * up.  gate, up, out: same shape f32 (out may alias gate).
void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out);

// Fused router, one thread block per token, up to 256 experts: softmax or sigmoid scores (or softmax over the
// top-k logits only), score bias for selection only, group-limited top-k (max or top-2-sum group scores),
// renormalisation and scaling; the same decisions as sy::moe::route, ties to the lower expert index.
// logits: (tokens, experts) f32; score_bias: (experts,) f32 or undefined.
// expert: (tokens, top_k) int32, [t, s] = expert of slot s; weight: (tokens, top_k) f32 its combine weight.
void route(const Tensor& logits, const Tensor& score_bias, const MoeConfig& options, Tensor& expert,
           Tensor& weight);

// Row maps of a dispatch, on the device (same meaning as sy::moe::DispatchLayout): rows are grouped by
// expert and, within an expert, ordered by assignment index t * top_k + s (deterministic, no atomics).
struct DeviceDispatchLayout {
  int num_experts = 0;
  int64_t num_tokens = 0;
  int top_k = 0;
  Tensor tokens_per_expert;  // (experts,) int64
  Tensor offsets;            // (experts + 1,) int64: exclusive prefix sums of tokens_per_expert
  Tensor row_assignment;     // (rows,) int64: [r] = t * top_k + s of the assignment in row r
  Tensor assignment_row;     // (tokens * top_k,) int64: inverse of row_assignment
};
// expert: (tokens, top_k) int32 as written by route.
DeviceDispatchLayout make_dispatch_layout(const Tensor& expert, int num_experts);

// permuted[r, :] = x[row_assignment[r] / top_k, :].  x: (tokens, hidden) f32|bf16; permuted: (rows, hidden) same.
void permute(const Tensor& x, const DeviceDispatchLayout& layout, Tensor& permuted);
// out[t, :] += sum_s weight[t, s] * expert_out[assignment_row[t * top_k + s], :], in slot order (one thread
// owns each output element: deterministic). expert_out: (rows, hidden) f32; weight: (tokens, top_k) f32;
// out: (tokens, hidden) f32.
void unpermute(const Tensor& expert_out, const DeviceDispatchLayout& layout, const Tensor& weight, Tensor& out);

// Causal prefill attention of t queries against the first kv_len keys of one sequence; the semantics of
// sy::ops::attention (GQA, sliding window, sinks) except packed documents (key_start is not supported yet).
// q: (t, heads, dk) f32; k: (>= kv_len, kv_heads, dk) f32; v: (>= kv_len, kv_heads, dv) f32, dv <= 256;
// positions: (t,) int64 on the device; sinks: (heads,) f32 or undefined; out: (t, heads, dv) f32.
// A correctness-first kernel (one block per query and head, online softmax in f32); not flash-style tiling.
struct AttentionArgs {
  float scale = 1.f;
  int window = 0;
  Tensor sinks;
};
void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, int64_t kv_len,
               const AttentionArgs& args, Tensor& out);

}  // namespace sy::cuda
