// DeepSeek-V2 and V3: MLA attention; dense mlp.* for the first_k_dense_replace layers; MoE layers with
// mlp.gate (router; V3 adds mlp.gate.e_score_correction_bias), mlp.experts.E.{gate,up,down}_proj and
// mlp.shared_experts.* (n_shared_experts folded into one MLP).
#include "arch.h"

namespace sy::model_detail {

ModelWeights load_deepseek(WeightSource& src, const ModelConfig& cfg) {
  ModelWeights w = load_embeddings_and_head(src, cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerWeights& lw = w.layers[i];
    const std::string mlp = layer_prefix(i) + "mlp";
    load_layer_norms(src, cfg, i, lw);
    lw.attention = load_mla_attention(src, cfg, i);
    lw.is_moe = cfg.layer_is_moe[i];
    if (!lw.is_moe) {
      lw.mlp = load_gated_mlp(src, mlp, cfg.hidden_size, cfg.intermediate_size);
      continue;
    }
    lw.moe.router = src.get(mlp + ".gate.weight", {cfg.moe.num_experts, cfg.hidden_size});
    if (cfg.moe.score_bias) lw.moe.score_bias = src.get(mlp + ".gate.e_score_correction_bias", {cfg.moe.num_experts});
    lw.moe.experts = load_experts(src, mlp + ".experts", cfg);
    if (cfg.moe.num_shared_experts > 0) {
      lw.moe.shared = load_gated_mlp(src, mlp + ".shared_experts", cfg.hidden_size, cfg.moe.shared_intermediate);
    }
  }
  return w;
}

}  // namespace sy::model_detail
