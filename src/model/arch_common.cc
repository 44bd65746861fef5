// Loaders shared by every architecture: embeddings and head, layer norms, GQA and MLA attention weights.
#include "arch.h"

namespace sy::model_detail {

std::string layer_prefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }

ModelWeights load_embeddings_and_head(WeightSource& src, const ModelConfig& cfg) {
  ModelWeights w;
  w.embed = src.get("model.embed_tokens.weight", {cfg.vocab_size, cfg.hidden_size});
  w.final_norm = load_norm(src, "model.norm.weight", cfg.hidden_size);
  if (cfg.tie_word_embeddings && !src.has("lm_head.weight")) {
    w.lm_head = w.embed;
  } else {
    w.lm_head = src.get("lm_head.weight", {cfg.vocab_size, cfg.hidden_size});
  }
  w.layers.resize(cfg.num_layers);
  return w;
}

void load_layer_norms(WeightSource& src, const ModelConfig& cfg, int layer, LayerWeights& lw) {
  const std::string p = layer_prefix(layer);
  lw.input_norm = load_norm(src, p + "input_layernorm.weight", cfg.hidden_size);
  lw.post_attention_norm = load_norm(src, p + "post_attention_layernorm.weight", cfg.hidden_size);
}

AttentionWeights load_gqa_attention(WeightSource& src, const ModelConfig& cfg, int layer) {
  const AttentionConfig& a = cfg.attention;
  const std::string p = layer_prefix(layer) + "self_attn.";
  const int64_t h = cfg.hidden_size, q_out = int64_t{a.num_heads} * a.head_dim, kv_out = int64_t{a.num_kv_heads} * a.head_dim;
  AttentionWeights w;
  w.q = src.get(p + "q_proj.weight", {q_out, h});
  w.k = src.get(p + "k_proj.weight", {kv_out, h});
  w.v = src.get(p + "v_proj.weight", {kv_out, h});
  w.o = src.get(p + "o_proj.weight", {h, q_out});
  if (a.qkv_bias) {
    w.q_bias = src.get(p + "q_proj.bias", {q_out});
    w.k_bias = src.get(p + "k_proj.bias", {kv_out});
    w.v_bias = src.get(p + "v_proj.bias", {kv_out});
  }
  if (a.o_bias) w.o_bias = src.get(p + "o_proj.bias", {h});
  if (a.qk_norm == QkNorm::kPerHead) {
    w.q_norm = src.get(p + "q_norm.weight", {a.head_dim});
    w.k_norm = src.get(p + "k_norm.weight", {a.head_dim});
  } else if (a.qk_norm == QkNorm::kFull) {
    w.q_norm = src.get(p + "q_norm.weight", {q_out});
    w.k_norm = src.get(p + "k_norm.weight", {kv_out});
  }
  if (a.sinks) w.sinks = src.get(p + "sinks", {a.num_heads});
  return w;
}

AttentionWeights load_mla_attention(WeightSource& src, const ModelConfig& cfg, int layer) {
  const AttentionConfig& a = cfg.attention;
  const std::string p = layer_prefix(layer) + "self_attn.";
  const int64_t h = cfg.hidden_size, heads = a.num_heads;
  const int64_t q_head = a.qk_nope_head_dim + a.qk_rope_head_dim;
  AttentionWeights w;
  if (a.q_lora_rank > 0) {
    w.q_a = src.get(p + "q_a_proj.weight", {a.q_lora_rank, h});
    w.q_a_norm = load_norm(src, p + "q_a_layernorm.weight", a.q_lora_rank);
    w.q_b = src.get(p + "q_b_proj.weight", {heads * q_head, a.q_lora_rank});
  } else {
    w.q = src.get(p + "q_proj.weight", {heads * q_head, h});
  }
  w.kv_a = src.get(p + "kv_a_proj_with_mqa.weight", {a.kv_lora_rank + a.qk_rope_head_dim, h});
  if (a.qkv_bias) w.kv_a_bias = src.get(p + "kv_a_proj_with_mqa.bias", {a.kv_lora_rank + a.qk_rope_head_dim});
  w.kv_a_norm = load_norm(src, p + "kv_a_layernorm.weight", a.kv_lora_rank);
  w.kv_b = src.get(p + "kv_b_proj.weight", {heads * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank});
  w.o = src.get(p + "o_proj.weight", {h, heads * a.v_head_dim});
  if (a.o_bias) w.o_bias = src.get(p + "o_proj.bias", {h});
  return w;
}

}  // namespace sy::model_detail
