// Prefill attention through cuDNN's fused flash attention (cudnn_attention.cu), one of flash_attention's
// kernels (AttentionArgs::cudnn). Not a public header.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "switchyard/kernels/cuda_ops.h"

namespace sy::cuda::detail {

// Whether cuDNN can be used at all here (library found, version 9.5 or newer but not 9.10.0/9.10.1); the
// reason when not in *why.
bool cudnn_attention_available(std::string* why);
bool cudnn_attention_compiled();  // this build has cuDNN's headers

// Runs flash_attention's contract (already validated by the caller) through cuDNN when it can take the call:
// no window, no sinks, head dims multiples of 8 up to 256, and a cuDNN engine for the graph of these shapes.
// Returns false, having queued nothing, where it cannot (the reason is logged once per shape), so the caller
// runs its own kernel instead. out: (t, heads, dv) f32 or bf16; rows outside every sequence stay untouched.
bool cudnn_flash_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                           const std::vector<std::pair<int64_t, int64_t>>& sequences, const AttentionArgs& args,
                           Tensor& out);

}  // namespace sy::cuda::detail
