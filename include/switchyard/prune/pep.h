// PEP (PreMoe, 2025): per-layer expert selection. Each MoE layer keeps the M experts with the highest TCESS
// score; the router keeps only their rows. This file decides which experts stay; pruned_model.h applies it.
#pragma once

#include <vector>

#include "switchyard/io/model_config.h"

namespace sy::prune {

// Expert ids of one layer by decreasing score; equal scores keep the lower id first.
std::vector<int> rank_experts(const std::vector<double>& scores);

// Kept experts per layer: kept[l] holds original expert ids in ascending order (that order is their new
// index 0..M-1); empty for dense layers.
struct ExpertPattern {
  std::vector<std::vector<int>> kept;
  int keep() const;  // M (0 if no MoE layer)
};

// Checks 1 <= experts_per_token <= keep <= num_experts; experts_per_token 0 means the model's top-k.
// Throws InvalidArgument saying which bound was broken and what to pass instead.
void check_keep(const ModelConfig& config, int keep, int experts_per_token = 0);

// The first `keep` experts of each MoE layer's ranking (rankings[i] belongs to the i-th MoE layer), after
// check_keep(config, keep, experts_per_token).
ExpertPattern select_experts(const ModelConfig& config, const std::vector<std::vector<int>>& rankings, int keep,
                             int experts_per_token = 0);

}  // namespace sy::prune
