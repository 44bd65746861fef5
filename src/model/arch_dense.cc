// Dense Llama and Qwen3 (per-head q/k norm): the same builders with a dense SwiGLU MLP in every layer.
#include "arch.h"

namespace sy::model_detail {

ModelWeights load_dense(WeightSource& src, const ModelConfig& cfg) {
  ModelWeights w = load_embeddings_and_head(src, cfg);
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerWeights& lw = w.layers[i];
    load_layer_norms(src, cfg, i, lw);
    lw.attention = load_gqa_attention(src, cfg, i);
    lw.mlp = load_gated_mlp(src, layer_prefix(i) + "mlp", cfg.hidden_size, cfg.intermediate_size);
  }
  return w;
}

}  // namespace sy::model_detail
