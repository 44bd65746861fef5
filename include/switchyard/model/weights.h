// Weight containers of a decoder-only (MoE) transformer, filled by the per-architecture loaders.
// Tensors are zero-copy views of the checkpoint where its layout allows, in the checkpoint's dtype.
#pragma once

#include <string>
#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/moe/experts.h"

namespace sy {

struct AttentionWeights {
  // MHA / GQA.  q: (heads*head_dim, hidden); k, v: (kv_heads*head_dim, hidden); o: (hidden, heads*v_dim).
  Tensor q, k, v, o;
  Tensor q_bias, k_bias, v_bias, o_bias;
  Tensor q_norm, k_norm;  // (head_dim,) per head or (heads*head_dim,) / (kv_heads*head_dim,) over the projection
  Tensor sinks;           // (heads,) gpt-oss
  // MLA.  q_a: (q_rank, hidden); q_b: (heads*(nope+rope), q_rank); kv_a: (kv_rank+rope, hidden);
  // kv_b: (heads*(nope+v), kv_rank).  Without q_lora_rank, `q` holds (heads*(nope+rope), hidden).
  Tensor q_a, q_a_norm, q_b;
  Tensor kv_a, kv_a_bias, kv_a_norm, kv_b;
};

struct MoeWeights {
  Tensor router;       // (experts, hidden)
  Tensor router_bias;  // (experts,) gpt-oss
  Tensor score_bias;   // (experts,) DeepSeek-V3 e_score_correction_bias: selection only
  std::vector<moe::GatedMlpWeights> experts;
  moe::GatedMlpWeights shared;  // undefined gate when there is no shared expert
  Tensor shared_gate;           // (1, hidden) Qwen2-MoE sigmoid gate of the shared expert
};

struct LayerWeights {
  Tensor input_norm, post_attention_norm;  // (hidden,)
  AttentionWeights attention;
  bool is_moe = false;
  moe::GatedMlpWeights mlp;  // dense layers
  MoeWeights moe;
};

struct ModelWeights {
  Tensor embed;       // (vocab, hidden)
  Tensor final_norm;  // (hidden,)
  Tensor lm_head;     // (vocab, hidden); the embedding when tied
  std::vector<LayerWeights> layers;
};

}  // namespace sy
