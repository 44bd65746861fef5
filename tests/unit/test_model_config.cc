// ModelConfig parsing: rope key spellings, family rules, parameter counts checked against real checkpoints,
// and clear errors for inconsistent configs.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/io/model_config.h"
#include "switchyard/io/safetensors.h"
#include "test_util.h"

namespace sy {
namespace {

using nlohmann::json;

json mixtral_base() {
  return {{"model_type", "mixtral"},     {"vocab_size", 100},         {"hidden_size", 32},
          {"intermediate_size", 16},     {"num_hidden_layers", 2},    {"num_attention_heads", 4},
          {"num_key_value_heads", 2},    {"num_local_experts", 4},    {"num_experts_per_tok", 2}};
}

TEST(ModelConfig, LegacyAndNewRopeKeysAgree) {
  json legacy = mixtral_base();
  legacy["rope_theta"] = 5e5;
  legacy["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64}};
  json fresh = mixtral_base();
  fresh["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 5e5}, {"factor", 4.0},
                              {"original_max_position_embeddings", 64}};
  for (const json& j : {legacy, fresh}) {
    ModelConfig c = ModelConfig::from_json(j);
    EXPECT_EQ(c.rope.type, RopeType::kYarn);
    EXPECT_DOUBLE_EQ(c.rope.theta, 5e5);
    EXPECT_DOUBLE_EQ(c.rope.factor, 4.0);
    EXPECT_DOUBLE_EQ(c.rope.original_max_position, 64.0);
  }
}

TEST(ModelConfig, FamilyDefaultThetaAndGptOssYarnDefaults) {
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(mixtral_base()).rope.theta, 1e6);
  json g = mixtral_base();
  g["model_type"] = "gpt_oss";
  ModelConfig c = ModelConfig::from_json(g);
  EXPECT_EQ(c.rope.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(c.rope.theta, 150000.0);
  EXPECT_FALSE(c.rope.truncate);
  EXPECT_EQ(c.layer_sliding_window[0], 128);  // even layers slide by default
  EXPECT_EQ(c.layer_sliding_window[1], 0);
}

TEST(ModelConfig, QwenMoeLayerRules) {
  json j = mixtral_base();
  j["model_type"] = "qwen2_moe";
  j.erase("num_local_experts");
  j["num_experts"] = 4;
  j["moe_intermediate_size"] = 8;
  j["num_hidden_layers"] = 4;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  ModelConfig c = ModelConfig::from_json(j);
  EXPECT_EQ(c.layer_is_moe, (std::vector<bool>{false, true, false, false}));
}

TEST(ModelConfig, TotalParamsMatchEveryGoldenCheckpoint) {
  namespace fs = std::filesystem;
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(test::fixtures_dir() + "/golden")) {
    if (!fs::exists(entry.path() / "config.json")) continue;
    ModelConfig c = ModelConfig::from_file(entry.path().string());
    SafetensorsCheckpoint ck(entry.path().string());
    int64_t numel = 0;
    for (const std::string& name : ck.names()) {
      if (name.find("e_score_correction_bias") != std::string::npos) continue;  // a buffer, not a parameter
      numel += shape_numel(ck.entry(name).shape);
    }
    EXPECT_EQ(c.total_params(), numel) << entry.path().filename();
    if (c.moe.num_experts > c.moe.top_k) EXPECT_LT(c.active_params(), c.total_params()) << entry.path().filename();
    else EXPECT_EQ(c.active_params(), c.total_params()) << entry.path().filename();
    ++checked;
  }
  EXPECT_GE(checked, 7);
}

void expect_config_error(const json& j, const std::string& fragment) {
  try {
    ModelConfig::from_json(j);
    FAIL() << "expected an error mentioning " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, InconsistentConfigsAreClearErrors) {
  json j = mixtral_base();
  j["num_key_value_heads"] = 3;
  expect_config_error(j, "multiple of num_key_value_heads");
  j = mixtral_base();
  j["num_experts_per_tok"] = 9;
  expect_config_error(j, "experts per token");
  j = mixtral_base();
  j["hidden_size"] = -4;
  expect_config_error(j, "\"hidden_size\" must be positive");
  j = mixtral_base();
  j["hidden_size"] = "big";
  expect_config_error(j, "\"hidden_size\" must be an integer");
  j = mixtral_base();
  j["rope_scaling"] = {{"type", "spiral"}};
  expect_config_error(j, "rope type \"spiral\"");
  j = mixtral_base();
  j["model_type"] = "deepseek_v3";
  j.update({{"kv_lora_rank", 8}, {"qk_nope_head_dim", 4}, {"qk_rope_head_dim", 4}, {"v_head_dim", 4},
            {"n_routed_experts", 6}, {"n_group", 4}, {"topk_group", 2}, {"moe_intermediate_size", 8}});
  expect_config_error(j, "n_group");
  expect_config_error(json::array(), "JSON object");
  expect_config_error(json{{"vocab_size", 3}}, "model_type");
}

}  // namespace
}  // namespace sy
