// Expert computation: each expert's rows of a DispatchLayout run through its MLP as one batched GEMM per
// projection (never token by token). Weights are per-expert views whatever the checkpoint's layout was.
#pragma once

#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"
#include "switchyard/moe/dispatch.h"

namespace sy::moe {

// One gated MLP: down(act(gate x + bg) * (up x + bu)) + bd.  gate, up: (inter, hidden); down: (hidden, inter).
struct GatedMlpWeights {
  Tensor gate, up, down;
  Tensor gate_bias, up_bias, down_bias;  // undefined unless the model has expert biases
};

enum class Activation { kSwiGlu, kClampedSwiGlu };

struct ActivationOptions {
  Activation kind = Activation::kSwiGlu;
  float alpha = 1.702f, limit = 7.f;  // clamped SwiGLU only
};
ActivationOptions activation_for(const MoeConfig& moe);

// y = mlp(x).  x: (rows, hidden) f32 -> (rows, hidden).
Tensor gated_mlp(const Tensor& x, const GatedMlpWeights& w, const ActivationOptions& act);

// expert_out: (rows, hidden) with rows ordered as in layout; experts.size() == layout.num_experts.
Tensor run_experts(const Tensor& permuted, const DispatchLayout& layout, const std::vector<GatedMlpWeights>& experts,
                   const ActivationOptions& act);
// The same over blocks: rows [offsets[i], offsets[i+1]) of permuted run through experts[i] (the expert-parallel
// path, where a rank holds a slice of the experts). experts has offsets.size() - 1 entries. When no block has
// more than 8 rows (decode), every expert's gate and up run in one parallel loop and every down in a second
// (bit-identical to one product at a time; SY_GROUPED_EXPERTS=0 turns it off).
Tensor run_expert_blocks(const Tensor& permuted, const std::vector<int64_t>& offsets, const GatedMlpWeights* experts,
                         const ActivationOptions& act);

}  // namespace sy::moe
