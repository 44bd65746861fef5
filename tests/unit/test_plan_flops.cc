// Planner FLOP and parameter counts: hand-computed values for tiny configs (GQA, MoE, MLA), the
// Korthikanti et al. closed form for GPT, and the published parameter totals of the presets.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "switchyard/plan/cost_model.h"

namespace sy::plan {
namespace {

PlanModel tiny(const char* text) {
  PlanModel m;
  m.name = "tiny";
  m.config = ModelConfig::from_json(nlohmann::json::parse(text));
  return m;
}

TEST(PlanFlops, TinyGqaDenseByHand) {
  // hidden 64, 4 heads of 16, 2 kv heads, MLP 128 (SwiGLU), vocab 100, 2 layers, seq 8.
  PlanModel m = tiny(R"({"model_type":"llama","vocab_size":100,"hidden_size":64,"num_hidden_layers":2,
      "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128})");
  LayerFlops f = layer_flops(m, 0, 8);
  EXPECT_DOUBLE_EQ(f.attn_proj, 2.0 * 8 * 64 * (64 + 2 * 32) + 2.0 * 8 * 64 * 64);  // qkv + out = 196608
  EXPECT_DOUBLE_EQ(f.attn_proj, 196608);
  EXPECT_DOUBLE_EQ(f.attn_core_full, 2.0 * 8 * 8 * 4 * (16 + 16));                 // 16384
  EXPECT_DOUBLE_EQ(f.attn_core_causal, 16384.0 * 9 / 16);                          // s(s+1)/2 visible scores
  EXPECT_DOUBLE_EQ(f.mlp, 6.0 * 8 * 64 * 128);                                     // 393216
  EXPECT_DOUBLE_EQ(f.routed_experts + f.router + f.shared_experts, 0);
  EXPECT_DOUBLE_EQ(head_flops(m, 8), 2.0 * 8 * 64 * 100);
  // Step: 3 x (2 layers + head) x global batch 2.
  EXPECT_DOUBLE_EQ(model_flops_per_step(m, 8, 2), 3.0 * 2 * (2 * (196608 + 16384 + 393216) + 102400));
}

TEST(PlanFlops, TinyMoeByHand) {
  PlanModel m = tiny(R"({"model_type":"mixtral","vocab_size":100,"hidden_size":64,"num_hidden_layers":2,
      "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":32,"num_local_experts":4,
      "num_experts_per_tok":2})");
  LayerFlops f = layer_flops(m, 1, 8);
  EXPECT_DOUBLE_EQ(f.mlp, 0);
  EXPECT_DOUBLE_EQ(f.router, 2.0 * 8 * 64 * 4);
  EXPECT_DOUBLE_EQ(f.routed_experts, 2 * 6.0 * 8 * 64 * 32);  // top-2 SwiGLU experts
  EXPECT_DOUBLE_EQ(f.shared_experts, 0);
}

TEST(PlanFlops, TinyMlaByHand) {
  PlanModel m = tiny(R"({"model_type":"deepseek_v3","vocab_size":100,"hidden_size":64,"num_hidden_layers":2,
      "num_attention_heads":2,"q_lora_rank":16,"kv_lora_rank":8,"qk_nope_head_dim":8,"qk_rope_head_dim":4,
      "v_head_dim":8,"intermediate_size":96,"moe_intermediate_size":16,"n_routed_experts":4,"n_shared_experts":1,
      "num_experts_per_tok":2,"n_group":1,"topk_group":1,"first_k_dense_replace":1})");
  LayerFlops f = layer_flops(m, 0, 4);  // dense layer
  const double q = 2.0 * 4 * (64 * 16 + 16 * 2 * 12), kv = 2.0 * 4 * 64 * 12 + 2.0 * 4 * 8 * 2 * 16, o = 2.0 * 4 * 2 * 8 * 64;
  EXPECT_DOUBLE_EQ(f.attn_proj, q + kv + o);
  EXPECT_DOUBLE_EQ(f.attn_core_full, 2.0 * 4 * 4 * 2 * (12 + 8));
  LayerFlops g = layer_flops(m, 1, 4);  // MoE layer: 2 routed + 1 shared expert of width 16
  EXPECT_DOUBLE_EQ(g.routed_experts, 2 * 6.0 * 4 * 64 * 16);
  EXPECT_DOUBLE_EQ(g.shared_experts, 6.0 * 4 * 64 * 16);
}

TEST(PlanFlops, GptMatchesKorthikantiClosedForm) {
  // 72 B s L h^2 (1 + s / 6h + V / 12 L h), Korthikanti et al. 2022 (MFU numerator).
  for (const char* name : {"GPT-22B", "GPT-3-175B", "GPT-530B", "GPT-1T"}) {
    PlanModel m = model_preset(name);
    const double B = 64, s = 2048, L = m.config.num_layers, h = double(m.config.hidden_size), V = 51200;
    const double expected = 72 * B * s * L * h * h * (1 + s / (6 * h) + V / (12 * L * h));
    EXPECT_NEAR(model_flops_per_step(m, 2048, 64) / expected, 1.0, 1e-12) << name;
  }
}

TEST(PlanParams, PresetsMatchPublishedTotals) {
  struct Row { const char* name; double total_b, active_b; };
  // Published totals (billions); the planner's own count from shapes must land within 1.5%.
  const Row rows[] = {{"Mixtral-8x7B", 46.7, 12.9},    {"Mixtral-8x22B", 141, 39},      {"Qwen2-57B-A14B", 57.4, 14.2},
                      {"Qwen3-30B-A3B", 30.5, 3.3},   {"Qwen3-235B-A22B", 235, 22},    {"DeepSeek-V3", 671, 37},
                      {"Pangu-Ultra-MoE-718B", 718, 39}, {"Llama-3-405B", 405, 405},     {"GPT-3-175B", 175, 175}};
  for (const Row& r : rows) {
    ParamCounts p = count_params(model_preset(r.name));
    EXPECT_NEAR(p.total / 1e9 / r.total_b, 1.0, 0.015) << r.name;
    EXPECT_NEAR(p.active / 1e9 / r.active_b, 1.0, 0.04) << r.name;
  }
}

}  // namespace
}  // namespace sy::plan
