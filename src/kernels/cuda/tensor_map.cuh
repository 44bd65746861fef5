// Tensor maps (CUtensorMap, Hopper's TMA descriptors) for the bf16 weight matrices the warp-specialised
// grouped GEMM loads with cp.async.bulk.tensor. Host code; cuTensorMapEncodeTiled comes from the driver through
// the runtime's entry-point query, so nothing links libcuda. Not a public header.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/core/tensor.h"

namespace sy::cuda::detail {

constexpr int kTensorMapBytes = 128;  // sizeof(CUtensorMap); device copies are 64-byte aligned
// The weight map's box: 64 k columns (one 128-byte swizzle span) x 64 rows, written in the 128-byte swizzled
// layout of the wgmma descriptors (sm90::swizzled) into a 1024-byte aligned 8 KB block.
constexpr int kWeightBoxRows = 64, kWeightBoxK = 64;

// The maps (cuTensorMapEncodeTiled, the box above, reads past a matrix filling zeros) of the experts' (n, k)
// bf16 matrices, one after another on the device ((E * kTensorMapBytes,) u8; an expert this process does not
// hold gets zeros), for an ExpertWeightTable; undefined where the current device is not compute capability 9.0
// or later or a map cannot be made (the TMA loads are then not used).
Tensor expert_weight_maps(const std::vector<Tensor>& weights);

}  // namespace sy::cuda::detail
