// OLMoE: q/k RMSNorm over the whole q and k projections (not per head), optional clip_qkv, softmax top-k
// MoE in every layer (mlp.gate, mlp.experts.E.{gate,up,down}_proj).
#include "arch.h"

namespace sy::model_detail {

ModelWeights load_olmoe(WeightSource& src, const ModelConfig& cfg) {
  ModelWeights w = load_embeddings_and_head(src, cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerWeights& lw = w.layers[i];
    const std::string mlp = layer_prefix(i) + "mlp";
    load_layer_norms(src, cfg, i, lw);
    lw.attention = load_gqa_attention(src, cfg, i);
    lw.is_moe = true;
    lw.moe.router = src.get(mlp + ".gate.weight", {cfg.moe.num_experts, cfg.hidden_size});
    lw.moe.experts = load_experts(src, mlp + ".experts", cfg);
  }
  return w;
}

}  // namespace sy::model_detail
