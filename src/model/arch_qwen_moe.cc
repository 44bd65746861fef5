// Qwen2-MoE and Qwen3-MoE. Both: mlp.gate router, mlp.experts.E.{gate,up,down}_proj, dense mlp.* on
// mlp_only_layers / decoder_sparse_step gaps. Qwen2-MoE adds qkv biases and a shared expert
// (mlp.shared_expert.*) scaled by sigmoid(mlp.shared_expert_gate x); Qwen3-MoE adds per-head q/k RMSNorm.
#include "arch.h"

namespace sy::model_detail {

ModelWeights load_qwen_moe(WeightSource& src, const ModelConfig& cfg) {
  ModelWeights w = load_embeddings_and_head(src, cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerWeights& lw = w.layers[i];
    const std::string mlp = layer_prefix(i) + "mlp";
    load_layer_norms(src, cfg, i, lw);
    lw.attention = load_gqa_attention(src, cfg, i);
    lw.is_moe = cfg.layer_is_moe[i];
    if (!lw.is_moe) {
      lw.mlp = load_gated_mlp(src, mlp, cfg.hidden_size, cfg.intermediate_size);
      continue;
    }
    lw.moe.router = src.get(mlp + ".gate.weight", {cfg.moe.num_experts, cfg.hidden_size});
    lw.moe.experts = load_experts(src, mlp + ".experts", cfg);
    if (cfg.moe.num_shared_experts > 0) {
      lw.moe.shared = load_gated_mlp(src, mlp + ".shared_expert", cfg.hidden_size, cfg.moe.shared_intermediate);
      lw.moe.shared_gate = src.get(mlp + ".shared_expert_gate.weight", {1, cfg.hidden_size});
    }
  }
  return w;
}

}  // namespace sy::model_detail
