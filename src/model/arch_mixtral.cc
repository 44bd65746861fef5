// Mixtral: Llama attention (GQA, optional sliding window) and a softmax top-k MoE in every layer.
// Hub names: block_sparse_moe.gate (router), block_sparse_moe.experts.E.{w1 gate, w3 up, w2 down};
// transformers 5 native names: mlp.gate, mlp.experts.{gate_up_proj, down_proj}.
#include "arch.h"

namespace sy::model_detail {

ModelWeights load_mixtral(WeightSource& src, const ModelConfig& cfg) {
  ModelWeights w = load_embeddings_and_head(src, cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerWeights& lw = w.layers[i];
    load_layer_norms(src, cfg, i, lw);
    lw.attention = load_gqa_attention(src, cfg, i);
    lw.is_moe = true;
    std::string moe = layer_prefix(i) + (src.has(layer_prefix(i) + "mlp.gate.weight") ? "mlp" : "block_sparse_moe");
    lw.moe.router = src.get(moe + ".gate.weight", {cfg.moe.num_experts, cfg.hidden_size});
    lw.moe.experts = load_experts(src, moe + ".experts", cfg, MlpNames{"w1", "w3", "w2"});
  }
  return w;
}

}  // namespace sy::model_detail
