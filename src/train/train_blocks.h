// Training forward/backward of the decoder blocks. Internal to src/train. Each *_forward fills its cache and
// returns the block output (N, H); each *_backward takes dy (N, H), accumulates parameter gradients into `g`
// and returns the gradient of the block input h (N, H).
#pragma once

#include "layer_cache.h"
#include "switchyard/io/model_config.h"
#include "switchyard/kernels/ops.h"
#include "switchyard/model/weights.h"

namespace sy::train {

Tensor gqa_forward(const ModelConfig& cfg, const AttentionWeights& w, int layer, const Tensor& h,
                   const BatchLayout& batch, const ops::RopeTable& rope, AttentionCache& c);
Tensor gqa_backward(const ModelConfig& cfg, const AttentionWeights& w, AttentionWeights& g, int layer, const Tensor& h,
                    const BatchLayout& batch, const ops::RopeTable& rope, const AttentionCache& c, const Tensor& dy);
Tensor mla_forward(const ModelConfig& cfg, const AttentionWeights& w, int layer, const Tensor& h,
                   const BatchLayout& batch, const ops::RopeTable& rope, AttentionCache& c);
Tensor mla_backward(const ModelConfig& cfg, const AttentionWeights& w, AttentionWeights& g, int layer, const Tensor& h,
                    const BatchLayout& batch, const ops::RopeTable& rope, const AttentionCache& c, const Tensor& dy);

// Dense gated MLP (SwiGLU). Caches gate/up/act in (gate, up, act).
Tensor mlp_forward(const moe::GatedMlpWeights& w, const Tensor& h, Tensor& gate, Tensor& up, Tensor& act);
Tensor mlp_backward(const moe::GatedMlpWeights& w, moe::GatedMlpWeights& g, const Tensor& h, const Tensor& gate,
                    const Tensor& up, const Tensor& act, const Tensor& dy);

Tensor moe_forward(const ModelConfig& cfg, const MoeWeights& w, const Tensor& h, FfnCache& c);
// dlogits_extra (N, E): gradient of auxiliary losses with respect to the router logits, added in.
Tensor moe_backward(const ModelConfig& cfg, const MoeWeights& w, MoeWeights& g, const Tensor& h, const FfnCache& c,
                    const Tensor& dy, const Tensor& dlogits_extra);

}  // namespace sy::train
