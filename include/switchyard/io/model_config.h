// ModelConfig: one description for every supported family, parsed from a Hugging Face config.json.
// Accepts the legacy `rope_theta`/`rope_scaling` keys and the newer `rope_parameters` object alike.
// Pure data: no weights and no kernels, so the planner can use it without the engine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace sy {

enum class Architecture {
  kMixtral,     // Llama attention + softmax top-k MoE
  kQwen2Moe,    // qkv bias, shared expert with sigmoid gate, mlp_only_layers, decoder_sparse_step
  kQwen3Moe,    // per-head q/k RMSNorm, explicit head_dim
  kOlmoe,       // q/k RMSNorm over the whole projection
  kDeepseekV2,  // MLA, softmax scores, (group-limited) greedy top-k
  kDeepseekV3,  // MLA, sigmoid scores + correction bias, group-limited top-k
  kGptOss,      // attention biases and sinks, alternating sliding window, clamped SwiGLU experts
  kLlama,       // dense
  kQwen3,       // dense with per-head q/k norm
};
const char* architecture_name(Architecture a);

enum class RopeType { kDefault, kLinear, kYarn, kLlama3, kDynamic };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;                      // linear / yarn / llama3 / dynamic scale
  double original_max_position = 0.0;      // yarn, llama3: pre-extension context
  double beta_fast = 32.0, beta_slow = 1.0;  // yarn ramp
  double mscale = 0.0, mscale_all_dim = 0.0;  // DeepSeek yarn variants (0 = absent)
  double attention_factor = 0.0;            // yarn: explicit magnitude scale (0 = derive)
  bool truncate = true;                     // yarn: floor/ceil the correction range (gpt-oss sets false)
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  double partial_rotary_factor = 1.0;       // fraction of head_dim rotated
  bool interleaved = false;                 // rotate (x0,x1),(x2,x3).. pairs instead of halves
};

enum class ScoreFunction { kSoftmax, kSigmoid };
enum class GroupScore { kMax, kTop2Sum };  // DeepSeek-V2 group_limited_greedy / DeepSeek-V3 noaux_tc

struct MoeConfig {
  int num_experts = 0;  // routed experts; 0 means a dense model
  int top_k = 0;
  int64_t expert_intermediate = 0;
  ScoreFunction score_function = ScoreFunction::kSoftmax;
  bool softmax_over_topk = false;  // gpt-oss: softmax over the k selected logits only
  bool norm_topk_prob = false;     // renormalise the k selected weights to sum to 1
  double routed_scaling_factor = 1.0;
  bool score_bias = false;   // e_score_correction_bias used for selection only
  bool router_bias = false;  // gate has a bias (gpt-oss)
  int num_groups = 1, topk_groups = 1;
  GroupScore group_score = GroupScore::kMax;
  int num_shared_experts = 0;          // shared experts folded into one MLP of width shared_intermediate
  int64_t shared_intermediate = 0;
  bool shared_expert_gate = false;     // Qwen2-MoE: sigmoid(x . w) scales the shared expert
  bool expert_bias = false;            // expert projections carry biases (gpt-oss)
  double swiglu_limit = 0.0;           // gpt-oss clamped SwiGLU (0 = plain SwiGLU)
  double swiglu_alpha = 1.702;
};

enum class QkNorm { kNone, kPerHead, kFull };

struct AttentionConfig {
  bool mla = false;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;     // q/k head dim for MHA/GQA; qk_nope + qk_rope for MLA
  int v_head_dim = 0;   // == head_dim except MLA
  bool qkv_bias = false;
  bool o_bias = false;
  QkNorm qk_norm = QkNorm::kNone;
  double clip_qkv = 0.0;  // OLMoE: clamp q,k,v projections to [-c, c] (0 = off)
  bool sinks = false;     // gpt-oss learned per-head sink logits
  // MLA (DeepSeek).
  int q_lora_rank = 0;  // 0: q_proj directly
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  double softmax_scale = 0.0;  // derived at parse: 1/sqrt(qk head dim) times any yarn mscale^2
};

struct ModelConfig {
  Architecture arch = Architecture::kMixtral;
  std::string model_type;  // as written in config.json
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int num_layers = 0;
  int64_t intermediate_size = 0;  // dense MLP width
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";
  AttentionConfig attention;
  RopeConfig rope;
  MoeConfig moe;
  std::vector<bool> layer_is_moe;         // per layer: MoE block (true) or dense MLP
  std::vector<int> layer_sliding_window;  // per layer: window in tokens, 0 = full attention
  std::vector<int64_t> eos_token_ids;
  int64_t bos_token_id = -1;

  // Parses a config.json object; throws FormatError naming the missing or invalid key, and Unsupported for
  // an unknown model_type.
  static ModelConfig from_json(const nlohmann::json& j);
  // Reads and parses DIR/config.json or a config file path.
  static ModelConfig from_file(const std::string& path);

  int num_moe_layers() const;
  // Parameter counts from the shapes this config implies (embedding and head included, tied counted once).
  int64_t total_params() const;
  int64_t active_params() const;  // per token: top_k routed experts + shared + dense parts
};

}  // namespace sy
