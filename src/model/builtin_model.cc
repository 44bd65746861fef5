// Built-in tiny Mixtral-style model (4 layers, 8 experts, top-2) from a fixed seed. It is written out as
// a real checkpoint and loaded through the ordinary path, so the built-in model exercises the same code
// as a user's model.
#include "switchyard/model/builtin.h"

#include <cmath>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy {

namespace {

constexpr int64_t kVocab = 512, kHidden = 128, kInter = 192, kLayers = 4, kHeads = 4, kKvHeads = 2, kExperts = 8;

nlohmann::json builtin_config() {
  return {{"model_type", "mixtral"},
          {"architectures", {"MixtralForCausalLM"}},
          {"vocab_size", kVocab},
          {"hidden_size", kHidden},
          {"intermediate_size", kInter},
          {"num_hidden_layers", kLayers},
          {"num_attention_heads", kHeads},
          {"num_key_value_heads", kKvHeads},
          {"num_local_experts", kExperts},
          {"num_experts_per_tok", 2},
          {"max_position_embeddings", 4096},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 1e6},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"torch_dtype", "float32"}};
}

// Deterministic normal-ish values (sum of uniforms) from a splitmix64 stream.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  float normal() {
    double acc = 0;
    for (int i = 0; i < 4; ++i) acc += uniform();
    return static_cast<float>((acc - 2.0) * std::sqrt(3.0));
  }

 private:
  double uniform() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
  }
  uint64_t s_;
};

Tensor random_tensor(Rng& rng, const Shape& shape, float scale, float offset = 0.f) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = offset + scale * rng.normal();
  return t;
}

}  // namespace

void write_builtin_model(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  Rng rng(20251123);
  std::vector<std::pair<std::string, Tensor>> tensors;
  auto add = [&](const std::string& name, const Shape& shape, float scale, float offset = 0.f) {
    tensors.emplace_back(name, random_tensor(rng, shape, scale, offset));
  };
  const float proj = 1.f / std::sqrt(static_cast<float>(kHidden));
  const int64_t head_dim = kHidden / kHeads;
  add("model.embed_tokens.weight", {kVocab, kHidden}, 1.f);
  for (int l = 0; l < kLayers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {kHidden}, 0.05f, 1.f);
    add(p + "post_attention_layernorm.weight", {kHidden}, 0.05f, 1.f);
    add(p + "self_attn.q_proj.weight", {kHeads * head_dim, kHidden}, proj);
    add(p + "self_attn.k_proj.weight", {kKvHeads * head_dim, kHidden}, proj);
    add(p + "self_attn.v_proj.weight", {kKvHeads * head_dim, kHidden}, proj);
    add(p + "self_attn.o_proj.weight", {kHidden, kHeads * head_dim}, proj);
    add(p + "block_sparse_moe.gate.weight", {kExperts, kHidden}, proj);
    for (int e = 0; e < kExperts; ++e) {
      std::string ep = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      add(ep + "w1.weight", {kInter, kHidden}, proj);
      add(ep + "w3.weight", {kInter, kHidden}, proj);
      add(ep + "w2.weight", {kHidden, kInter}, 1.f / std::sqrt(static_cast<float>(kInter)));
    }
  }
  add("model.norm.weight", {kHidden}, 0.05f, 1.f);
  add("lm_head.weight", {kVocab, kHidden}, proj * 4.f);
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  std::ofstream cfg(fs::path(dir) / "config.json");
  if (!cfg) throw make_error<IoError>("builtin", "cannot write ", dir, "/config.json");
  cfg << builtin_config().dump(2) << "\n";
}

std::string builtin_model_dir() {
  namespace fs = std::filesystem;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("SY_BUILTIN_MODEL")) {
    candidates.push_back(env);  // when set, only this one ("synthetic" selects the random fallback)
  } else {
#ifdef SY_SOURCE_DIR
    candidates.push_back(std::string(SY_SOURCE_DIR) + "/models/builtin");
#endif
  }
  for (const std::string& c : candidates) {
    if (fs::exists(fs::path(c) / "config.json") && fs::exists(fs::path(c) / "model.safetensors")) return c;
  }
  return "";
}

std::unique_ptr<Model> make_builtin_model() {
  namespace fs = std::filesystem;
  if (std::string trained = builtin_model_dir(); !trained.empty()) return Model::load(trained);
  // Cached per user under the temp directory; rewritten if missing or unreadable.
  fs::path dir = fs::temp_directory_path() / ("switchyard-builtin-v1-" + std::to_string(::getuid()));
  try {
    if (fs::exists(dir / "config.json") && fs::exists(dir / "model.safetensors")) return Model::load(dir.string());
  } catch (const Error&) {
    // fall through and rewrite
  }
  fs::path tmp = dir.string() + ".tmp" + std::to_string(::getpid());
  write_builtin_model(tmp.string());
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::rename(tmp, dir, ec);
  if (ec) return Model::load(tmp.string());
  return Model::load(dir.string());
}

}  // namespace sy
