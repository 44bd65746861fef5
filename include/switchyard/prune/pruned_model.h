// A model restricted to an expert pattern, in memory: each MoE layer keeps only the pattern's experts
// (renumbered 0..M-1 in ascending original id), router rows, router bias and score bias sliced to match.
// Expert weights stay zero-copy views of the checkpoint's memory map, so a dropped expert's bytes are never
// read from disk. Writing a pruned checkpoint is pruned_checkpoint.h.
#pragma once

#include <memory>

#include "switchyard/model/model.h"
#include "switchyard/prune/pep.h"

namespace sy::prune {

// The pruned model's config: num_experts = M; top_k = experts_per_token (0 keeps the model's). Group-limited
// routing (DeepSeek n_group / topk_group) is turned off, since the kept experts no longer form equal groups.
ModelConfig pruned_config(const ModelConfig& config, int keep, int experts_per_token = 0);

// Weights with only the pattern's experts; non-expert tensors are shared with `weights`.
ModelWeights prune_weights(const ModelWeights& weights, const ModelConfig& config, const ExpertPattern& pattern);

// A new model over `full`'s weights restricted to `pattern`. `full` may be destroyed afterwards.
std::unique_ptr<Model> make_pruned_model(const Model& full, const ExpertPattern& pattern, int experts_per_token = 0);

// Rows `rows` of dimension 0 of t, copied into a new contiguous tensor of t's dtype.
Tensor gather_rows(const Tensor& t, const std::vector<int>& rows);

}  // namespace sy::prune
