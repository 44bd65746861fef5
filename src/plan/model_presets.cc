// Model presets for the planner, as embedded config.json text parsed by sy::ModelConfig, plus the
// planner-only facts (GELU MLP, dropout, no fused attention) of the GPT-3-era models of Korthikanti et al.
// Not a weight loader: only shapes matter here.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/plan/model.h"

namespace sy::plan {

using nlohmann::json;

namespace {
constexpr const char* kComponent = "plan";

struct Preset {
  const char* name;
  const char* config;  // config.json text (Hugging Face keys)
  bool gpt = false;    // GELU MLP, dropout masks, unfused attention (Megatron GPT of 2022)
};

// Shapes from each model's Hugging Face config.json. Pangu Ultra MoE: layers, dense layers, hidden, experts,
// top-k and MLA ranks from the paper (arXiv 2505.04519); heads, head dims, expert width and vocabulary follow
// DeepSeek-V3 and reproduce the published 718B total / 39B active (see docs/planner.md).
// GPT models: Korthikanti et al. 2022 Table 3 (vocabulary 51200, sequence 2048, 4h MLP).
const Preset kPresets[] = {
    {"Mixtral-8x7B", R"({"model_type":"mixtral","vocab_size":32000,"hidden_size":4096,"num_hidden_layers":32,
      "num_attention_heads":32,"num_key_value_heads":8,"intermediate_size":14336,"num_local_experts":8,
      "num_experts_per_tok":2,"max_position_embeddings":32768,"rope_theta":1000000.0})"},
    {"Mixtral-8x22B", R"({"model_type":"mixtral","vocab_size":32768,"hidden_size":6144,"num_hidden_layers":56,
      "num_attention_heads":48,"num_key_value_heads":8,"intermediate_size":16384,"num_local_experts":8,
      "num_experts_per_tok":2,"max_position_embeddings":65536,"rope_theta":1000000.0})"},
    {"Qwen2-57B-A14B", R"({"model_type":"qwen2_moe","vocab_size":151936,"hidden_size":3584,"num_hidden_layers":28,
      "num_attention_heads":28,"num_key_value_heads":4,"intermediate_size":18944,"moe_intermediate_size":2560,
      "shared_expert_intermediate_size":20480,"num_experts":64,"num_experts_per_tok":8,
      "max_position_embeddings":32768,"rope_theta":1000000.0})"},
    {"Qwen3-30B-A3B", R"({"model_type":"qwen3_moe","vocab_size":151936,"hidden_size":2048,"num_hidden_layers":48,
      "num_attention_heads":32,"num_key_value_heads":4,"head_dim":128,"intermediate_size":6144,
      "moe_intermediate_size":768,"num_experts":128,"num_experts_per_tok":8,"norm_topk_prob":true,
      "max_position_embeddings":40960,"rope_theta":1000000.0})"},
    {"Qwen3-235B-A22B", R"({"model_type":"qwen3_moe","vocab_size":151936,"hidden_size":4096,"num_hidden_layers":94,
      "num_attention_heads":64,"num_key_value_heads":4,"head_dim":128,"intermediate_size":12288,
      "moe_intermediate_size":1536,"num_experts":128,"num_experts_per_tok":8,"norm_topk_prob":true,
      "max_position_embeddings":40960,"rope_theta":1000000.0})"},
    {"DeepSeek-V3", R"({"model_type":"deepseek_v3","vocab_size":129280,"hidden_size":7168,"num_hidden_layers":61,
      "num_attention_heads":128,"num_key_value_heads":128,"q_lora_rank":1536,"kv_lora_rank":512,
      "qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,"intermediate_size":18432,
      "moe_intermediate_size":2048,"n_routed_experts":256,"n_shared_experts":1,"num_experts_per_tok":8,
      "n_group":8,"topk_group":4,"first_k_dense_replace":3,"moe_layer_freq":1,"routed_scaling_factor":2.5,
      "norm_topk_prob":true,"max_position_embeddings":163840})"},
    {"Pangu-Ultra-MoE-718B", R"({"model_type":"deepseek_v3","vocab_size":153600,"hidden_size":7680,
      "num_hidden_layers":61,"num_attention_heads":128,"num_key_value_heads":128,"q_lora_rank":1536,
      "kv_lora_rank":512,"qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,
      "intermediate_size":18432,"moe_intermediate_size":2048,"n_routed_experts":256,"n_shared_experts":1,
      "num_experts_per_tok":8,"n_group":1,"topk_group":1,"first_k_dense_replace":3,"moe_layer_freq":1,
      "norm_topk_prob":true,"max_position_embeddings":131072})"},
    {"Llama-3-405B", R"({"model_type":"llama","vocab_size":128256,"hidden_size":16384,"num_hidden_layers":126,
      "num_attention_heads":128,"num_key_value_heads":8,"intermediate_size":53248,
      "max_position_embeddings":131072,"rope_theta":500000.0})"},
    {"GPT-3-175B", R"({"model_type":"llama","vocab_size":51200,"hidden_size":12288,"num_hidden_layers":96,
      "num_attention_heads":96,"intermediate_size":49152,"max_position_embeddings":2048})", true},
    {"GPT-22B", R"({"model_type":"llama","vocab_size":51200,"hidden_size":6144,"num_hidden_layers":48,
      "num_attention_heads":64,"intermediate_size":24576,"max_position_embeddings":2048})", true},
    {"GPT-530B", R"({"model_type":"llama","vocab_size":51200,"hidden_size":20480,"num_hidden_layers":105,
      "num_attention_heads":128,"intermediate_size":81920,"max_position_embeddings":2048})", true},
    {"GPT-1T", R"({"model_type":"llama","vocab_size":51200,"hidden_size":25600,"num_hidden_layers":128,
      "num_attention_heads":160,"intermediate_size":102400,"max_position_embeddings":2048})", true},
};

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}
}  // namespace

std::vector<std::string> model_preset_names() {
  std::vector<std::string> out;
  for (const Preset& p : kPresets) out.emplace_back(p.name);
  return out;
}

PlanModel model_preset(const std::string& name) {
  for (const Preset& p : kPresets) {
    if (lower(name) != lower(p.name)) continue;
    PlanModel m;
    m.name = p.name;
    m.config = ModelConfig::from_json(json::parse(p.config));
    if (p.gpt) {
      m.gated_mlp = false;
      m.dropout = true;
      m.flash_attention = false;
    }
    return m;
  }
  std::string names;
  for (const Preset& p : kPresets) names += std::string(names.empty() ? "" : ", ") + p.name;
  throw make_error<InvalidArgument>(kComponent, "unknown model \"", name, "\"; use one of ", names,
                                    ", a config.json path or a model directory");
}

PlanModel load_model(const std::string& name_or_path) {
  namespace fs = std::filesystem;
  if (!fs::exists(name_or_path)) return model_preset(name_or_path);
  PlanModel m;
  m.config = ModelConfig::from_file(name_or_path);
  m.name = fs::path(name_or_path).filename().string();
  if (m.name == "config.json") m.name = fs::path(name_or_path).parent_path().filename().string();
  return m;
}

ParamCounts count_params(const PlanModel& m) {
  const ModelConfig& c = m.config;
  const AttentionConfig& a = c.attention;
  const int64_t h = c.hidden_size;
  ParamCounts p;
  p.embedding = c.vocab_size * h;
  p.head = c.tie_word_embeddings ? 0 : c.vocab_size * h;
  if (a.mla) {
    int64_t q = a.q_lora_rank > 0 ? h * a.q_lora_rank + a.q_lora_rank + int64_t{a.q_lora_rank} * a.num_heads * a.head_dim
                                  : h * a.num_heads * a.head_dim;
    int64_t kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank +
                 int64_t{a.kv_lora_rank} * a.num_heads * (a.qk_nope_head_dim + a.v_head_dim);
    p.attention = q + kv + int64_t{a.num_heads} * a.v_head_dim * h + h;
  } else {
    int64_t qkv = h * int64_t{a.num_heads + 2 * a.num_kv_heads} * a.head_dim;
    int64_t o = int64_t{a.num_heads} * a.head_dim * h;
    int64_t bias = a.qkv_bias ? int64_t{a.num_heads + 2 * a.num_kv_heads} * a.head_dim : 0;
    if (!m.gated_mlp) bias = int64_t{a.num_heads + 2 * a.num_kv_heads} * a.head_dim + h;  // GPT: all biases
    p.attention = qkv + o + bias + h;
  }
  const int64_t mats = m.gated_mlp ? 3 : 2;
  p.dense_mlp = mats * h * c.intermediate_size + h + (m.gated_mlp ? 0 : c.intermediate_size + h);
  const MoeConfig& e = c.moe;
  p.expert = 3 * h * e.expert_intermediate;
  p.moe_nonexpert = int64_t{e.num_experts} * h + 3 * h * e.shared_intermediate + (e.shared_expert_gate ? h : 0) + h;
  p.total = p.embedding + p.head + h;
  p.active = p.total;
  for (int i = 0; i < c.num_layers; ++i) {
    p.total += p.attention;
    p.active += p.attention;
    if (c.layer_is_moe[i]) {
      p.total += p.moe_nonexpert + int64_t{e.num_experts} * p.expert;
      p.active += p.moe_nonexpert + int64_t{e.top_k} * p.expert;
    } else {
      p.total += p.dense_mlp;
      p.active += p.dense_mlp;
    }
  }
  return p;
}

}  // namespace sy::plan
