// Training layout of parameters: the tensors TrainableModel holds, keyed by checkpoint names. It equals the
// checkpoint layout for every family except gpt-oss, whose fused expert tensors are held per expert so that
// the loaders can hand out (out, in) views of parameters and gradients:
//   mlp.experts.gate_up_proj (E, H, 2I), columns interleaving gate (even) and up (odd)
//       -> mlp.experts.<e>.gate_proj.weight (I, H) and mlp.experts.<e>.up_proj.weight (I, H)
//   mlp.experts.gate_up_proj_bias (E, 2I) -> mlp.experts.<e>.gate_proj.bias (I), up_proj.bias (I)
//   mlp.experts.down_proj (E, I, H) -> mlp.experts.<e>.down_proj.weight (H, I)
//   mlp.experts.down_proj_bias (E, H) -> mlp.experts.<e>.down_proj.bias (H)
// Both directions are exact permutations of f32 values. Internal to src/train.
#pragma once

#include <map>
#include <string>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"

namespace sy::train {

// Tensors must be f32. A fused tensor with an unexpected shape raises FormatError naming it.
std::map<std::string, Tensor> to_training_layout(const ModelConfig& cfg, std::map<std::string, Tensor> tensors);
std::map<std::string, Tensor> to_checkpoint_layout(const ModelConfig& cfg, const std::map<std::string, Tensor>& tensors);

}  // namespace sy::train
