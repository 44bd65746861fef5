// FLOP counts per layer and the activation bytes a layer keeps for backward (Korthikanti et al. 2022
// accounting, generalised to GQA/MLA attention, gated MLPs and MoE blocks). Formulas: docs/planner.md.
// Not timing: cost_model.cc turns these into seconds.
#include <algorithm>

#include "switchyard/core/error.h"
#include "switchyard/plan/cost_model.h"

namespace sy::plan {

LayerFlops layer_flops(const PlanModel& m, int layer, int seq_len) {
  const ModelConfig& c = m.config;
  SY_CHECK(layer >= 0 && layer < c.num_layers);
  const AttentionConfig& a = c.attention;
  const double s = seq_len, h = static_cast<double>(c.hidden_size), heads = a.num_heads;
  LayerFlops f;
  double qk_dim = a.head_dim, v_dim = a.v_head_dim;
  if (a.mla) {
    double q = a.q_lora_rank > 0 ? 2 * s * (h * a.q_lora_rank + double(a.q_lora_rank) * heads * qk_dim) : 2 * s * h * heads * qk_dim;
    double kv = 2 * s * h * (a.kv_lora_rank + a.qk_rope_head_dim) +
                2 * s * double(a.kv_lora_rank) * heads * (a.qk_nope_head_dim + a.v_head_dim);
    f.attn_proj = q + kv + 2 * s * heads * v_dim * h;
  } else {
    f.attn_proj = 2 * s * h * (heads * qk_dim + 2.0 * a.num_kv_heads * qk_dim) + 2 * s * heads * v_dim * h;
  }
  // QK^T and AV: 2 * s * s_ctx * heads * (qk_dim + v_dim); s_ctx = s (full) or (s + 1) / 2 (causal average).
  f.attn_core_full = 2 * s * s * heads * (qk_dim + v_dim);
  f.attn_core_causal = f.attn_core_full * (s + 1) / (2 * s);
  if (c.layer_is_moe[layer]) {
    const MoeConfig& e = c.moe;
    f.router = 2 * s * h * e.num_experts;
    f.routed_experts = e.top_k * 6 * s * h * double(e.expert_intermediate);
    f.shared_experts = 6 * s * h * double(e.shared_intermediate);
  } else {
    f.mlp = (m.gated_mlp ? 6 : 4) * s * h * double(c.intermediate_size);
  }
  return f;
}

double head_flops(const PlanModel& m, int seq_len) {
  return 2.0 * seq_len * double(m.config.hidden_size) * double(m.config.vocab_size);
}

double model_flops_per_step(const PlanModel& m, int seq_len, int global_batch) {
  double per_seq = head_flops(m, seq_len);
  for (int i = 0; i < m.config.num_layers; ++i) per_seq += layer_flops(m, i, seq_len).total_model();
  return 3.0 * per_seq * global_batch;
}

double layer_activation_bytes(const PlanModel& m, int layer, int seq_len, int mbs, const ActivationOptions& o) {
  const ModelConfig& c = m.config;
  SY_CHECK(layer >= 0 && layer < c.num_layers);
  const AttentionConfig& a = c.attention;
  const double s = seq_len, h = double(c.hidden_size), heads = a.num_heads;
  const double tokens = s * mbs / o.cp;                           // tokens of this micro-batch on one CP rank
  const double sp_div = o.sequence_parallel ? o.tp : 1;           // SP splits the hidden-sized tensors too
  const double drop = m.dropout ? 1.0 : 0.0;
  if (o.recompute == Recompute::kFull) return tokens * 2 * h / sp_div;  // only the layer input is kept

  // Bytes per token: `sp` parts are split by TP only under SP, `tp` parts always, `rep` parts never.
  double sp = 0, tp = 0, rep = 0;
  // Attention block.
  sp += 2 * h + 2 * h + drop * h;  // norm input, projection input, dropout mask after the output projection
  if (a.mla) {
    rep += 2.0 * a.q_lora_rank * 2 + 2.0 * (a.kv_lora_rank + a.qk_rope_head_dim) + 2.0 * a.kv_lora_rank;  // latents + norm inputs
    tp += 2 * heads * a.head_dim * 2 + 2 * heads * a.v_head_dim;  // Q, K, V after up-projection
  } else {
    tp += 2 * heads * a.head_dim + 2 * 2.0 * a.num_kv_heads * a.head_dim;  // Q, K, V
  }
  tp += 2 * heads * a.v_head_dim;  // output-projection input
  if (o.recompute != Recompute::kSelective) {
    if (m.flash_attention) tp += 4 * heads;                 // softmax statistics (fp32)
    else tp += heads * s * (2 + drop * 3);                  // softmax output, dropout mask and output
  }
  if (!c.layer_is_moe[layer]) {
    const double f = double(c.intermediate_size);
    sp += 2 * h + 2 * h + drop * h;                         // norm input, fc1 input, dropout mask
    tp += m.gated_mlp ? 2 * 2 * f + 2 * f : 2 * f + 2 * f;  // fc1 output(s), activation output
    return tokens * (sp / sp_div + tp / o.tp + rep);
  }
  const MoeConfig& e = c.moe;
  sp += 2 * h + 2 * h + 4.0 * e.num_experts;                // norm input, router/permute input, fp32 probabilities
  const double shared = double(e.shared_intermediate);
  tp += shared > 0 ? 2 * 2 * shared + 2 * shared : 0;       // shared expert fc1 outputs and activation
  // Routed experts: token copies on this device = tokens * k / (tp) balanced; the busiest holds imbalance x.
  const double copies = tokens * e.top_k * o.imbalance / o.tp;           // per device, before the ETP gather
  const double fe = double(e.expert_intermediate) / o.etp;
  const double expert_bytes = copies * o.etp * (2 * h + 2 * 2 * fe + 2 * fe)  // fc1 input (gathered), fc1 out, act
                              + copies * 2 * h;                                // expert output kept for the combine
  return tokens * (sp / sp_div + tp / o.tp + rep) + expert_bytes;
}

}  // namespace sy::plan
