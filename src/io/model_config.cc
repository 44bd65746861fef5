// Parses a Hugging Face config.json into ModelConfig for every supported family.
// Each family's keys and defaults follow its transformers configuration class; rope settings are read from
// `rope_parameters` (transformers 5) or from the legacy `rope_theta` + `rope_scaling` pair.
#include "switchyard/io/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "switchyard/core/error.h"

namespace sy {

using nlohmann::json;

const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::kMixtral: return "mixtral";
    case Architecture::kQwen2Moe: return "qwen2_moe";
    case Architecture::kQwen3Moe: return "qwen3_moe";
    case Architecture::kOlmoe: return "olmoe";
    case Architecture::kDeepseekV2: return "deepseek_v2";
    case Architecture::kDeepseekV3: return "deepseek_v3";
    case Architecture::kGptOss: return "gpt_oss";
    case Architecture::kLlama: return "llama";
    case Architecture::kQwen3: return "qwen3";
  }
  return "?";
}

namespace {

constexpr const char* kComponent = "config";

bool has(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

int64_t get_int(const json& j, const char* key) {
  if (!has(j, key)) throw make_error<FormatError>(kComponent, "config.json is missing \"", key, "\"");
  const json& v = j[key];
  if (!v.is_number_integer() && !(v.is_number() && std::floor(v.get<double>()) == v.get<double>())) {
    throw make_error<FormatError>(kComponent, "\"", key, "\" must be an integer, got ", v.dump());
  }
  return v.is_number_integer() ? v.get<int64_t>() : static_cast<int64_t>(v.get<double>());
}
int64_t get_int(const json& j, const char* key, int64_t fallback) { return has(j, key) ? get_int(j, key) : fallback; }

double get_double(const json& j, const char* key, double fallback) {
  if (!has(j, key)) return fallback;
  if (!j[key].is_number()) throw make_error<FormatError>(kComponent, "\"", key, "\" must be a number, got ", j[key].dump());
  return j[key].get<double>();
}

bool get_bool(const json& j, const char* key, bool fallback) {
  if (!has(j, key)) return fallback;
  if (!j[key].is_boolean()) throw make_error<FormatError>(kComponent, "\"", key, "\" must be true or false, got ", j[key].dump());
  return j[key].get<bool>();
}

std::string get_string(const json& j, const char* key, const std::string& fallback) {
  if (!has(j, key)) return fallback;
  if (!j[key].is_string()) throw make_error<FormatError>(kComponent, "\"", key, "\" must be a string, got ", j[key].dump());
  return j[key].get<std::string>();
}

int64_t positive(int64_t v, const char* key) {
  if (v <= 0) throw make_error<FormatError>(kComponent, "\"", key, "\" must be positive, got ", v);
  return v;
}

// Reads rope settings from rope_parameters (new) or rope_theta + rope_scaling (legacy).
// As transformers 5 standardises them: a non-null legacy rope_scaling wins over rope_parameters; a rope_theta
// inside the dict wins over the top-level one; `default_theta` and `defaults` are the family's class defaults.
RopeConfig parse_rope(const json& j, double default_theta, const json& defaults = json::object()) {
  RopeConfig r;
  json params = defaults;
  if (has(j, "rope_scaling")) {
    params = j["rope_scaling"];
    if (!params.is_object()) throw make_error<FormatError>(kComponent, "\"rope_scaling\" must be an object or null");
  } else if (has(j, "rope_parameters")) {
    params = j["rope_parameters"];
    if (!params.is_object()) throw make_error<FormatError>(kComponent, "\"rope_parameters\" must be an object");
    // Per-layer-type parameters ({"full_attention": {...}, "sliding_attention": {...}}): take full attention.
    if (params.contains("full_attention") && params["full_attention"].is_object()) params = params["full_attention"];
  }
  r.theta = get_double(params, "rope_theta", get_double(j, "rope_theta", default_theta));
  std::string type = get_string(params, "rope_type", get_string(params, "type", "default"));
  if (type == "default") r.type = RopeType::kDefault;
  else if (type == "linear") r.type = RopeType::kLinear;
  else if (type == "yarn" || type == "deepseek_yarn") r.type = RopeType::kYarn;
  else if (type == "llama3") r.type = RopeType::kLlama3;
  else if (type == "dynamic") r.type = RopeType::kDynamic;
  else throw make_error<Unsupported>(kComponent, "rope type \"", type, "\" is not supported (default, linear, yarn, llama3, dynamic)");
  r.factor = get_double(params, "factor", 1.0);
  if (r.type != RopeType::kDefault && r.factor <= 0) throw make_error<FormatError>(kComponent, "rope factor must be positive");
  // A top-level original_max_position_embeddings overrides the dict's; absent both, max_position_embeddings.
  r.original_max_position = get_double(j, "original_max_position_embeddings",
                                       get_double(params, "original_max_position_embeddings",
                                                  get_double(j, "max_position_embeddings", 0.0)));
  r.beta_fast = get_double(params, "beta_fast", 32.0);
  r.beta_slow = get_double(params, "beta_slow", 1.0);
  r.mscale = get_double(params, "mscale", 0.0);
  r.mscale_all_dim = get_double(params, "mscale_all_dim", 0.0);
  r.attention_factor = get_double(params, "attention_factor", 0.0);
  r.truncate = get_bool(params, "truncate", true);
  r.low_freq_factor = get_double(params, "low_freq_factor", 1.0);
  r.high_freq_factor = get_double(params, "high_freq_factor", 4.0);
  r.partial_rotary_factor = get_double(params, "partial_rotary_factor", get_double(j, "partial_rotary_factor", 1.0));
  return r;
}

// yarn's magnitude correction 0.1 * m * ln(s) + 1 (1 when s <= 1).
double yarn_mscale(double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

std::vector<int64_t> int_list(const json& j, const char* key) {
  std::vector<int64_t> out;
  if (!has(j, key)) return out;
  if (j[key].is_number_integer()) return {j[key].get<int64_t>()};
  if (!j[key].is_array()) throw make_error<FormatError>(kComponent, "\"", key, "\" must be a list of integers");
  for (const json& v : j[key]) {
    if (!v.is_number_integer()) throw make_error<FormatError>(kComponent, "\"", key, "\" must hold integers, got ", v.dump());
    out.push_back(v.get<int64_t>());
  }
  return out;
}

void parse_common(const json& j, ModelConfig& c) {
  c.vocab_size = positive(get_int(j, "vocab_size"), "vocab_size");
  c.hidden_size = positive(get_int(j, "hidden_size"), "hidden_size");
  c.num_layers = static_cast<int>(positive(get_int(j, "num_hidden_layers"), "num_hidden_layers"));
  c.rms_norm_eps = get_double(j, "rms_norm_eps", 1e-6);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", 4096);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false);
  c.torch_dtype = get_string(j, "torch_dtype", get_string(j, "dtype", "float32"));
  c.eos_token_ids = int_list(j, "eos_token_id");
  c.bos_token_id = has(j, "bos_token_id") && j["bos_token_id"].is_number_integer() ? j["bos_token_id"].get<int64_t>() : -1;

  AttentionConfig& a = c.attention;
  a.num_heads = static_cast<int>(positive(get_int(j, "num_attention_heads"), "num_attention_heads"));
  a.num_kv_heads = static_cast<int>(positive(get_int(j, "num_key_value_heads", a.num_heads), "num_key_value_heads"));
  if (a.num_heads % a.num_kv_heads != 0) {
    throw make_error<FormatError>(kComponent, "num_attention_heads (", a.num_heads,
                                  ") must be a multiple of num_key_value_heads (", a.num_kv_heads, ")");
  }
  int64_t default_head_dim = c.hidden_size / a.num_heads;
  a.head_dim = static_cast<int>(positive(get_int(j, "head_dim", default_head_dim), "head_dim"));
  a.v_head_dim = a.head_dim;
  c.layer_is_moe.assign(c.num_layers, false);
  c.layer_sliding_window.assign(c.num_layers, 0);
}

// Sliding window for every layer, or per `layer_types` when present.
void parse_windows(const json& j, ModelConfig& c, bool window_enabled) {
  int64_t window = get_int(j, "sliding_window", 0);
  if (has(j, "layer_types")) {
    const json& types = j["layer_types"];
    if (!types.is_array() || static_cast<int>(types.size()) != c.num_layers) {
      throw make_error<FormatError>(kComponent, "\"layer_types\" must list one type per layer (", c.num_layers, ")");
    }
    for (int i = 0; i < c.num_layers; ++i) {
      std::string t = types[i].is_string() ? types[i].get<std::string>() : "";
      if (t == "sliding_attention") c.layer_sliding_window[i] = static_cast<int>(window);
      else if (t != "full_attention") throw make_error<FormatError>(kComponent, "unknown layer type ", types[i].dump());
    }
  } else if (window_enabled && window > 0) {
    for (int i = 0; i < c.num_layers; ++i) c.layer_sliding_window[i] = static_cast<int>(window);
  }
}

void require_experts(const ModelConfig& c) {
  if (c.moe.num_experts > 0) {
    if (c.moe.top_k <= 0 || c.moe.top_k > c.moe.num_experts) {
      throw make_error<FormatError>(kComponent, "experts per token (", c.moe.top_k, ") must be in [1, ",
                                    c.moe.num_experts, "]");
    }
    if (c.moe.expert_intermediate <= 0) throw make_error<FormatError>(kComponent, "expert intermediate size must be positive");
  }
}

void parse_mixtral(const json& j, ModelConfig& c) {
  c.arch = Architecture::kMixtral;
  c.intermediate_size = get_int(j, "intermediate_size");
  c.moe.num_experts = static_cast<int>(has(j, "num_local_experts") ? get_int(j, "num_local_experts") : get_int(j, "num_experts"));
  c.moe.top_k = static_cast<int>(get_int(j, "num_experts_per_tok"));
  c.moe.expert_intermediate = c.intermediate_size;
  c.moe.norm_topk_prob = true;  // Mixtral renormalises the top-k softmax weights
  c.layer_is_moe.assign(c.num_layers, true);
  parse_windows(j, c, true);
}

void parse_qwen_moe(const json& j, ModelConfig& c, bool qwen3) {
  c.arch = qwen3 ? Architecture::kQwen3Moe : Architecture::kQwen2Moe;
  c.intermediate_size = get_int(j, "intermediate_size");
  c.attention.qkv_bias = qwen3 ? get_bool(j, "attention_bias", false) : get_bool(j, "qkv_bias", true);
  c.attention.o_bias = qwen3 ? get_bool(j, "attention_bias", false) : false;
  if (qwen3) c.attention.qk_norm = QkNorm::kPerHead;
  c.moe.num_experts = static_cast<int>(get_int(j, "num_experts", get_int(j, "num_local_experts", 0)));
  c.moe.top_k = static_cast<int>(get_int(j, "num_experts_per_tok", 1));
  c.moe.expert_intermediate = get_int(j, "moe_intermediate_size", c.intermediate_size);
  c.moe.norm_topk_prob = get_bool(j, "norm_topk_prob", false);
  if (!qwen3) {
    c.moe.shared_intermediate = get_int(j, "shared_expert_intermediate_size", 0);
    c.moe.num_shared_experts = c.moe.shared_intermediate > 0 ? 1 : 0;
    c.moe.shared_expert_gate = c.moe.num_shared_experts > 0;
  }
  int64_t step = get_int(j, "decoder_sparse_step", 1);
  std::vector<int64_t> mlp_only = int_list(j, "mlp_only_layers");
  std::set<int64_t> dense(mlp_only.begin(), mlp_only.end());
  for (int i = 0; i < c.num_layers; ++i) {
    c.layer_is_moe[i] = !dense.count(i) && c.moe.num_experts > 0 && step > 0 && (i + 1) % step == 0;
  }
  // Sliding layers: Qwen3-MoE slides every layer; Qwen2-MoE slides even layers below max_window_layers.
  bool use_window = get_bool(j, "use_sliding_window", false);
  if (use_window && has(j, "layer_types") && !qwen3) {
    parse_windows(j, c, true);
  } else if (use_window) {
    int64_t max_window_layers = get_int(j, "max_window_layers", 28);
    int window = static_cast<int>(get_int(j, "sliding_window", 4096));
    for (int i = 0; i < c.num_layers; ++i) {
      c.layer_sliding_window[i] = qwen3 || (i % 2 == 0 && i < max_window_layers) ? window : 0;
    }
  }
}

void parse_olmoe(const json& j, ModelConfig& c) {
  c.arch = Architecture::kOlmoe;
  c.intermediate_size = get_int(j, "intermediate_size");
  c.attention.qk_norm = QkNorm::kFull;
  c.attention.qkv_bias = c.attention.o_bias = get_bool(j, "attention_bias", false);
  c.attention.clip_qkv = get_double(j, "clip_qkv", 0.0);
  c.moe.num_experts = static_cast<int>(get_int(j, "num_experts"));
  c.moe.top_k = static_cast<int>(get_int(j, "num_experts_per_tok"));
  c.moe.expert_intermediate = c.intermediate_size;
  c.moe.norm_topk_prob = get_bool(j, "norm_topk_prob", false);
  c.layer_is_moe.assign(c.num_layers, true);
}

void parse_deepseek(const json& j, ModelConfig& c, bool v3) {
  c.arch = v3 ? Architecture::kDeepseekV3 : Architecture::kDeepseekV2;
  AttentionConfig& a = c.attention;
  a.mla = true;
  a.q_lora_rank = static_cast<int>(get_int(j, "q_lora_rank", 0));
  a.kv_lora_rank = static_cast<int>(positive(get_int(j, "kv_lora_rank"), "kv_lora_rank"));
  a.qk_nope_head_dim = static_cast<int>(positive(get_int(j, "qk_nope_head_dim"), "qk_nope_head_dim"));
  a.qk_rope_head_dim = static_cast<int>(positive(get_int(j, "qk_rope_head_dim"), "qk_rope_head_dim"));
  a.v_head_dim = static_cast<int>(positive(get_int(j, "v_head_dim"), "v_head_dim"));
  a.head_dim = a.qk_nope_head_dim + a.qk_rope_head_dim;
  a.num_kv_heads = a.num_heads;
  a.qkv_bias = get_bool(j, "attention_bias", false);
  // V2 rotates interleaved pairs (complex form) always; V3 unless rope_interleave is false.
  c.rope.interleaved = v3 ? get_bool(j, "rope_interleave", true) : true;
  c.intermediate_size = get_int(j, "intermediate_size");
  MoeConfig& m = c.moe;
  m.num_experts = static_cast<int>(get_int(j, "n_routed_experts", get_int(j, "num_local_experts", get_int(j, "num_experts", 0))));
  m.top_k = static_cast<int>(get_int(j, "num_experts_per_tok", 0));
  m.expert_intermediate = get_int(j, "moe_intermediate_size", 0);
  m.num_shared_experts = static_cast<int>(get_int(j, "n_shared_experts", 0));
  m.shared_intermediate = m.expert_intermediate * m.num_shared_experts;
  m.routed_scaling_factor = get_double(j, "routed_scaling_factor", 1.0);
  m.num_groups = static_cast<int>(get_int(j, "n_group", 1));
  m.topk_groups = static_cast<int>(get_int(j, "topk_group", 1));
  if (v3) {
    // transformers' DeepSeek-V3 always routes with sigmoid scores, the correction bias and top-2-sum groups
    // (noaux_tc), renormalising when norm_topk_prob; topk_method and scoring_func are not read.
    m.score_function = ScoreFunction::kSigmoid;
    m.group_score = GroupScore::kTop2Sum;
    m.score_bias = true;
    m.norm_topk_prob = get_bool(j, "norm_topk_prob", true);
  } else {
    // DeepSeek-V2: softmax scores, never renormalised (norm_topk_prob is ignored), then scaled.
    std::string method = get_string(j, "topk_method", "greedy");
    if (method == "greedy") {
      m.num_groups = m.topk_groups = 1;
    } else if (method == "group_limited_greedy") {
      m.group_score = GroupScore::kMax;
    } else {
      throw make_error<Unsupported>(kComponent, "DeepSeek-V2 topk_method \"", method,
                                    "\" (greedy, group_limited_greedy)");
    }
    m.norm_topk_prob = false;
  }
  if (m.num_groups < 1 || (m.num_experts > 0 && m.num_experts % m.num_groups != 0) || m.topk_groups < 1 ||
      m.topk_groups > m.num_groups) {
    throw make_error<FormatError>(kComponent, "n_group (", m.num_groups, ") must divide n_routed_experts (",
                                  m.num_experts, ") and topk_group (", m.topk_groups, ") must be in [1, n_group]");
  }
  int64_t first_dense = get_int(j, "first_k_dense_replace", v3 ? 3 : 0);
  for (int i = 0; i < c.num_layers; ++i) c.layer_is_moe[i] = m.num_experts > 0 && i >= first_dense;
  // Softmax scale: 1/sqrt(qk head dim), times mscale(factor, mscale_all_dim)^2 under yarn.
  a.softmax_scale = 1.0 / std::sqrt(static_cast<double>(a.head_dim));
  if (c.rope.type == RopeType::kYarn && c.rope.mscale_all_dim > 0) {
    double ms = yarn_mscale(c.rope.factor, c.rope.mscale_all_dim);
    a.softmax_scale *= ms * ms;
  }
}

void parse_gpt_oss(const json& j, ModelConfig& c) {
  c.arch = Architecture::kGptOss;
  c.intermediate_size = get_int(j, "intermediate_size");
  c.attention.qkv_bias = c.attention.o_bias = get_bool(j, "attention_bias", true);
  c.attention.sinks = true;
  MoeConfig& m = c.moe;
  m.num_experts = static_cast<int>(has(j, "num_local_experts") ? get_int(j, "num_local_experts") : get_int(j, "num_experts"));
  m.top_k = static_cast<int>(get_int(j, "num_experts_per_tok", get_int(j, "experts_per_token", 4)));
  m.expert_intermediate = c.intermediate_size;
  m.softmax_over_topk = true;
  m.router_bias = true;
  m.expert_bias = true;
  m.swiglu_limit = get_double(j, "swiglu_limit", 7.0);
  c.layer_is_moe.assign(c.num_layers, true);
  if (has(j, "layer_types")) {
    parse_windows(j, c, true);
  } else {
    int window = static_cast<int>(get_int(j, "sliding_window", 128));
    for (int i = 0; i < c.num_layers; ++i) c.layer_sliding_window[i] = i % 2 == 0 ? window : 0;
  }
}

void parse_dense(const json& j, ModelConfig& c, bool qwen3) {
  c.arch = qwen3 ? Architecture::kQwen3 : Architecture::kLlama;
  c.intermediate_size = get_int(j, "intermediate_size");
  c.attention.qkv_bias = get_bool(j, "attention_bias", false);
  c.attention.o_bias = c.attention.qkv_bias;
  if (qwen3) c.attention.qk_norm = QkNorm::kPerHead;
  if (qwen3 && get_bool(j, "use_sliding_window", false)) {
    if (has(j, "layer_types")) {
      parse_windows(j, c, true);
    } else {
      int64_t max_window_layers = get_int(j, "max_window_layers", 28);
      int window = static_cast<int>(get_int(j, "sliding_window", 4096));
      for (int i = 0; i < c.num_layers; ++i) c.layer_sliding_window[i] = i >= max_window_layers ? window : 0;
    }
  } else if (has(j, "layer_types")) {
    parse_windows(j, c, true);
  }
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j) {
  if (!j.is_object()) throw make_error<FormatError>(kComponent, "config.json must hold a JSON object");
  ModelConfig c;
  c.model_type = get_string(j, "model_type", "");
  if (c.model_type.empty()) throw make_error<FormatError>(kComponent, "config.json has no \"model_type\"");
  static const std::set<std::string> known = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
                                              "deepseek_v3", "gpt_oss", "llama", "qwen3"};
  if (!known.count(c.model_type)) {
    throw make_error<Unsupported>(kComponent, "unknown model_type \"", c.model_type,
                                  "\"; supported: mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3, "
                                  "gpt_oss, llama, qwen3");
  }
  try {
    parse_common(j, c);
    if (c.model_type == "gpt_oss") {
      json yarn = {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_fast", 32.0}, {"beta_slow", 1.0},
                   {"truncate", false}, {"original_max_position_embeddings", 4096}};
      c.rope = parse_rope(j, 150000.0, yarn);
    } else {
      c.rope = parse_rope(j, c.model_type == "mixtral" ? 1e6 : 10000.0);
    }
    c.attention.softmax_scale = 1.0 / std::sqrt(static_cast<double>(c.attention.head_dim));
    if (c.model_type == "mixtral") parse_mixtral(j, c);
    else if (c.model_type == "qwen2_moe") parse_qwen_moe(j, c, false);
    else if (c.model_type == "qwen3_moe") parse_qwen_moe(j, c, true);
    else if (c.model_type == "olmoe") parse_olmoe(j, c);
    else if (c.model_type == "deepseek_v2") parse_deepseek(j, c, false);
    else if (c.model_type == "deepseek_v3") parse_deepseek(j, c, true);
    else if (c.model_type == "gpt_oss") parse_gpt_oss(j, c);
    else if (c.model_type == "llama") parse_dense(j, c, false);
    else if (c.model_type == "qwen3") parse_dense(j, c, true);
  } catch (const json::exception& e) {
    throw make_error<FormatError>(kComponent, "config.json for ", c.model_type, ": ", e.what());
  }
  require_experts(c);
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::string file = path;
  if (fs::is_directory(path)) file = (fs::path(path) / "config.json").string();
  if (!fs::exists(file)) throw make_error<IoError>(kComponent, "cannot find ", file, " (is this a model directory?)");
  std::ifstream in(file);
  if (!in) throw make_error<IoError>(kComponent, "cannot open ", file);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw make_error<FormatError>(kComponent, file, " is not valid JSON: ", e.what());
  }
  return from_json(j);
}

int ModelConfig::num_moe_layers() const {
  return static_cast<int>(std::count(layer_is_moe.begin(), layer_is_moe.end(), true));
}

namespace {
// Attention weights per layer.
int64_t attention_params(const ModelConfig& c) {
  const AttentionConfig& a = c.attention;
  const int64_t h = c.hidden_size;
  if (a.mla) {
    int64_t q = a.q_lora_rank > 0 ? h * a.q_lora_rank + a.q_lora_rank + int64_t{a.q_lora_rank} * a.num_heads * a.head_dim
                                  : h * a.num_heads * a.head_dim;
    int64_t kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank +
                 int64_t{a.kv_lora_rank} * a.num_heads * (a.qk_nope_head_dim + a.v_head_dim);
    return q + kv + int64_t{a.num_heads} * a.v_head_dim * h;
  }
  int64_t q = h * a.num_heads * a.head_dim, kv = 2 * h * a.num_kv_heads * a.head_dim;
  int64_t o = int64_t{a.num_heads} * a.head_dim * h;
  int64_t bias = a.qkv_bias ? int64_t{a.num_heads + 2 * a.num_kv_heads} * a.head_dim : 0;
  if (a.o_bias) bias += h;
  int64_t norms = a.qk_norm == QkNorm::kPerHead ? 2 * a.head_dim
                  : a.qk_norm == QkNorm::kFull  ? int64_t{a.num_heads + a.num_kv_heads} * a.head_dim
                                                : 0;
  int64_t sinks = a.sinks ? a.num_heads : 0;
  return q + kv + o + bias + norms + sinks;
}
}  // namespace

int64_t ModelConfig::total_params() const {
  int64_t total = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + hidden_size;
  for (int i = 0; i < num_layers; ++i) {
    total += attention_params(*this) + 2 * hidden_size;
    if (layer_is_moe[i]) {
      int64_t expert = 3 * hidden_size * moe.expert_intermediate + (moe.expert_bias ? 2 * moe.expert_intermediate + hidden_size : 0);
      total += int64_t{moe.num_experts} * expert + int64_t{moe.num_experts} * hidden_size + (moe.router_bias ? moe.num_experts : 0);
      total += 3 * hidden_size * moe.shared_intermediate + (moe.shared_expert_gate ? hidden_size : 0);
    } else {
      total += 3 * hidden_size * intermediate_size;
    }
  }
  return total;
}

int64_t ModelConfig::active_params() const {
  int64_t total = total_params();
  for (int i = 0; i < num_layers; ++i) {
    if (!layer_is_moe[i]) continue;
    int64_t expert = 3 * hidden_size * moe.expert_intermediate + (moe.expert_bias ? 2 * moe.expert_intermediate + hidden_size : 0);
    total -= int64_t{moe.num_experts - moe.top_k} * expert;
  }
  return total;
}

}  // namespace sy
