// PlanModel: the model description the planner reads: a sy::ModelConfig plus the few facts the planner needs
// that config.json does not state (non-gated GELU MLP of GPT-3-era models, dropout masks, flash attention).
// Presets are built from embedded config.json text; a user's config.json goes through the same parser.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/io/model_config.h"

namespace sy::plan {

struct PlanModel {
  std::string name;
  ModelConfig config;
  bool gated_mlp = true;         // SwiGLU (3 matrices) vs GELU (2 matrices, GPT-3 style)
  bool dropout = false;          // training keeps dropout masks (GPT-3 era); modern MoE recipes use 0
  bool flash_attention = true;   // fused attention: the s x s softmax is never stored
};

std::vector<std::string> model_preset_names();
PlanModel model_preset(const std::string& name);  // throws InvalidArgument naming the presets
// A preset name, a config.json path, or a model directory holding config.json.
PlanModel load_model(const std::string& name_or_path);

// Parameter counts derived in plan code (the planner needs them split by kind and by layer).
struct ParamCounts {
  int64_t embedding = 0;        // input embedding (vocab x hidden)
  int64_t head = 0;             // output projection; 0 when tied to the embedding
  int64_t attention = 0;        // per layer, weights of attention incl. its norm
  int64_t dense_mlp = 0;        // per dense layer, MLP incl. its norm
  int64_t moe_nonexpert = 0;    // per MoE layer: router, shared expert(s), norm
  int64_t expert = 0;           // one routed expert
  int64_t total = 0;
  int64_t active = 0;           // per token
};
ParamCounts count_params(const PlanModel& m);

}  // namespace sy::plan
