// Training forward/backward of the decoder blocks. Internal to src/train. Each *_forward fills its cache and
// returns the block output (N, H); each *_backward takes dy (N, H), accumulates parameter gradients into `g`
// and returns the gradient of the block input h (N, H).
#pragma once

#include "layer_cache.h"
#include "switchyard/io/model_config.h"
#include "switchyard/kernels/ops.h"
#include "switchyard/model/weights.h"
#include "switchyard/moe/experts.h"
#include "switchyard/train/trainable_model.h"

namespace sy::train {

// One decoder layer's training forward from x_in (N, H): fills every activation of c and returns the layer
// output (N, H). Router statistics are in c.ffn.layout.
Tensor layer_forward(const ModelConfig& cfg, const LayerWeights& w, int layer, const Tensor& x_in,
                     const BatchLayout& batch, const ops::RopeTable& rope, LayerCache& c);
// Releases what `r` recomputes (nothing for kNone; see Recompute) and rebuilds it before backward.
void drop_for_recompute(LayerCache& c, Recompute r);
void restore_for_backward(const ModelConfig& cfg, const LayerWeights& w, int layer, const BatchLayout& batch,
                          const ops::RopeTable& rope, LayerCache& c, Recompute r);
// Bytes of the tensors and index vectors a cache holds.
int64_t cache_bytes(const LayerCache& c);

Tensor gqa_forward(const ModelConfig& cfg, const AttentionWeights& w, int layer, const Tensor& h,
                   const BatchLayout& batch, const ops::RopeTable& rope, AttentionCache& c);
Tensor gqa_backward(const ModelConfig& cfg, const AttentionWeights& w, AttentionWeights& g, int layer, const Tensor& h,
                    const BatchLayout& batch, const ops::RopeTable& rope, const AttentionCache& c, const Tensor& dy);
Tensor mla_forward(const ModelConfig& cfg, const AttentionWeights& w, int layer, const Tensor& h,
                   const BatchLayout& batch, const ops::RopeTable& rope, AttentionCache& c);
Tensor mla_backward(const ModelConfig& cfg, const AttentionWeights& w, AttentionWeights& g, int layer, const Tensor& h,
                    const BatchLayout& batch, const ops::RopeTable& rope, const AttentionCache& c, const Tensor& dy);

// act = activation(gate, up) (allocated when undefined): SwiGLU or clamped SwiGLU.
void apply_activation(const moe::ActivationOptions& a, const Tensor& gate, const Tensor& up, Tensor& act);

// Dense gated MLP. Caches gate/up/act in (gate, up, act).
Tensor mlp_forward(const moe::GatedMlpWeights& w, const moe::ActivationOptions& a, const Tensor& h, Tensor& gate,
                   Tensor& up, Tensor& act);
Tensor mlp_backward(const moe::GatedMlpWeights& w, const moe::ActivationOptions& a, moe::GatedMlpWeights& g,
                    const Tensor& h, const Tensor& gate, const Tensor& up, const Tensor& act, const Tensor& dy);

Tensor moe_forward(const ModelConfig& cfg, const MoeWeights& w, const Tensor& h, FfnCache& c);
// Selective recompute: rebuilds the permuted inputs and the activation products (routed and shared) from the
// kept routing and gate/up pre-activations.
void moe_restore_selective(const ModelConfig& cfg, const MoeWeights& w, const Tensor& h, FfnCache& c);
// dlogits_extra (N, E): gradient of auxiliary losses with respect to the router logits, added in.
Tensor moe_backward(const ModelConfig& cfg, const MoeWeights& w, MoeWeights& g, const Tensor& h, const FfnCache& c,
                    const Tensor& dy, const Tensor& dlogits_extra);

}  // namespace sy::train
