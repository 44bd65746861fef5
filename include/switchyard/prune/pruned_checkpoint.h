// Writes a pruned Hugging Face checkpoint: the source model with only an expert pattern's experts in each MoE
// layer (renumbered 0..M-1 in ascending original id), router rows / router bias / score bias sliced, and
// config.json's expert count set to M. Hub per-expert names (experts.E.*) and fused expert tensors
// (experts.gate_up_proj ...) are both handled, so Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V2/V3 and gpt-oss
// checkpoints prune alike. The result loads in switchyard and in transformers. Not a resharder: the weights
// go into one model.safetensors.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "switchyard/io/model_config.h"
#include "switchyard/prune/pep.h"

namespace sy::prune {

struct PrunedCheckpointOptions {
  int experts_per_token = 0;  // 0 keeps the model's top-k
  std::string task;           // recorded in OUT/premoe.json
  std::string source_fingerprint;
};

// Writes OUT (which must not exist or be empty): config.json, model.safetensors, premoe.json (provenance and
// the kept original expert ids per layer), and copies of the tokenizer and generation-config files (nothing
// else). Built in OUT.tmp.<pid> and renamed, so OUT appears complete or not at all.
// Throws InvalidArgument (bad OUT, bad keep), Unsupported (an expert tensor layout it does not know), IoError.
void write_pruned_checkpoint(const std::string& model_dir, const ModelConfig& config, const ExpertPattern& pattern,
                             const PrunedCheckpointOptions& options, const std::string& out_dir);

// The pruned config.json object: expert-count keys (num_local_experts, num_experts, n_routed_experts) set to M,
// num_experts_per_tok when asked, group-limited routing turned off (n_group = topk_group = 1, DeepSeek-V2
// topk_method "greedy").
nlohmann::json pruned_config_json(const nlohmann::json& config, int keep, int experts_per_token);

}  // namespace sy::prune
