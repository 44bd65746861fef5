// Per-architecture weight loaders and the shared builders they are assembled from. Internal to src/model.
// Each arch_*.cc file holds one family's hub tensor-name map; the forward pass is shared (model.cc).
#pragma once

#include <string>

#include "switchyard/io/model_config.h"
#include "switchyard/model/weights.h"
#include "weight_source.h"

namespace sy::model_detail {

// "model.layers.{i}."
std::string layer_prefix(int layer);

// Embedding, final norm and LM head (tied or not), and an empty layer list of the right size.
ModelWeights load_embeddings_and_head(WeightSource& src, const ModelConfig& cfg);
// Input and post-attention RMSNorm of a layer.
void load_layer_norms(WeightSource& src, const ModelConfig& cfg, int layer, LayerWeights& lw);
// self_attn.{q,k,v,o}_proj with optional biases, q/k norms and sinks, shaped by cfg.attention.
AttentionWeights load_gqa_attention(WeightSource& src, const ModelConfig& cfg, int layer);
// DeepSeek MLA: q_proj or q_a_proj/q_a_layernorm/q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj.
AttentionWeights load_mla_attention(WeightSource& src, const ModelConfig& cfg, int layer);

ModelWeights load_mixtral(WeightSource& src, const ModelConfig& cfg);
ModelWeights load_qwen_moe(WeightSource& src, const ModelConfig& cfg);  // Qwen2-MoE and Qwen3-MoE
ModelWeights load_olmoe(WeightSource& src, const ModelConfig& cfg);
ModelWeights load_deepseek(WeightSource& src, const ModelConfig& cfg);  // V2 and V3
ModelWeights load_gpt_oss(WeightSource& src, const ModelConfig& cfg);
ModelWeights load_dense(WeightSource& src, const ModelConfig& cfg);  // Llama, Qwen3

}  // namespace sy::model_detail
