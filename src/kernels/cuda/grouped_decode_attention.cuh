// The grouped decode attention's entry points for attention.cu (grouped_decode_attention.cu): a thread-block
// cluster per (query, key head) over the paged bf16 pool. Not a public header.
#pragma once

#include <cstdint>

#include "switchyard/kernels/cuda_ops.h"

namespace sy::cuda::detail {

// paged_attention's result (where cuda::grouped_decode_fits) for q (t, heads, d) f32 over the bf16 pool views
// k, v into out (t, heads, d) f32; the arguments are paged_attention's, already checked (args.key_splits does not apply: every query's keys
// are split over one cluster).
// With src (paged_attention_qkv: a decode pass) the queries, and each query's own key and value, are formed
// from src.qkv as qkv_epilogue forms them (the key and value also written to the pools); q gives only the
// shape then.
struct QkvSource;
void grouped_decode_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                              const Tensor& table_start, const Tensor& block_tables, int64_t block_size,
                              const AttentionArgs& args, Tensor& out, const QkvSource* src = nullptr);

}  // namespace sy::cuda::detail
