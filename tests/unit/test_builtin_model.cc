// The shipped built-in model (models/builtin): loads as the default model, carries its tokenizer, and
// generates text through the ordinary CLI path.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "switchyard/model/builtin.h"
#include "test_util.h"

namespace sy {
namespace {

TEST(BuiltinModel, TrainedModelIsTheDefault) {
  ASSERT_FALSE(builtin_model_dir().empty()) << "models/builtin/model.safetensors is missing";
  auto model = make_builtin_model();
  EXPECT_EQ(model->config().vocab_size, 4096);
  EXPECT_EQ(model->config().moe.num_experts, 8);
  auto r = test::run_cli("generate --prompt 'ROMEO:' --max-new-tokens 12 --temperature 0.7 --top-k 40 --seed 1 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["ids"].size(), 12u);
  EXPECT_FALSE(j["text"].get<std::string>().empty());
}

}  // namespace
}  // namespace sy
