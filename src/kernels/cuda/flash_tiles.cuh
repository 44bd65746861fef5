// The work table of the prefill attention kernels (flash_attention.cu, flash_attention_sm90.cu). Not a public
// header.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "switchyard/kernels/cuda_ops.h"

namespace sy::cuda::detail {

// A block's work: query rows [q0, q0 + block_m) of the sequence of `len` rows that starts at packed row `row0`.
struct FlashTile {
  int64_t row0, len, q0;
};

// One entry per block_m-query tile of every [first, second) sequence, the tiles with the most keys first (a
// causal tile's work grows with q0), uploaded asynchronously to the device (the table's bytes, DType::kU8);
// `count` receives the number of tiles. The sequences must already be validated (sorted, disjoint).
Tensor flash_tile_table(const std::vector<std::pair<int64_t, int64_t>>& sequences, int64_t block_m, int64_t& count);

// dst rows of every [first, second) sequence = src's, converted (f32 <-> bf16); adjacent sequences in one
// launch. src, dst: (t, ...) contiguous, same shape.
void cast_sequence_rows(const Tensor& src, Tensor& dst, const std::vector<std::pair<int64_t, int64_t>>& sequences);

// The Hopper kernel (flash_attention_sm90.cu) for head dims 128/128: whether this device runs it, and the launch
// over a table of 128-query tiles.
bool flash_sm90_supported();
void launch_flash_sm90(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args,
                       const Tensor& tiles, int64_t num_tiles, Tensor& out);
constexpr int64_t kFlashSm90BlockM = 128;

}  // namespace sy::cuda::detail
