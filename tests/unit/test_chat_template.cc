// Chat template recognition and the built-in renderings per family; unknown templates are an error.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/io/chat_template.h"

namespace {

const std::vector<sy::ChatMessage> kChat = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};

// Marker-bearing excerpts of the real templates (enough for recognition).
const char* kQwen25 =
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}";
const char* kMixtral = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                       "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token}}";
const char* kDeepSeekR1 = "{{bos_token}}{{ns.system_prompt}}{{'<｜User｜>' + message['content']}}"
                          "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{{'<｜Assistant｜><think>\\n'}}";
const char* kHarmony = "<|start|>system<|message|>You are ChatGPT<|end|>{{- '<|start|>assistant<|channel|>final<|message|>' }}";
const char* kLlama3 = "{{ bos_token }}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}{{ '<|eot_id|>' }}";

TEST(ChatTemplate, ChatMLWithQwenDefaultSystem) {
  auto t = sy::ChatTemplate::from_template(kQwen25, "", "<|im_end|>");
  EXPECT_EQ(t.family(), sy::ChatFamily::kChatML);
  EXPECT_EQ(t.render({{"user", "Hi"}}),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.render(kChat, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!"
            "<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n");
}

TEST(ChatTemplate, Mistral) {
  auto t = sy::ChatTemplate::from_template(kMixtral, "<s>", "</s>");
  EXPECT_EQ(t.family(), sy::ChatFamily::kMistral);
  EXPECT_EQ(t.render(kChat), "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] 2+2? [/INST]");
}

TEST(ChatTemplate, DeepSeekR1) {
  auto t = sy::ChatTemplate::from_template(kDeepSeekR1, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>");
  EXPECT_EQ(t.family(), sy::ChatFamily::kDeepSeek);
  EXPECT_EQ(t.render(kChat), "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>Hello!<｜end▁of▁sentence｜>"
                             "<｜User｜>2+2?<｜Assistant｜><think>\n");
}

TEST(ChatTemplate, HarmonyAndLlama3) {
  auto h = sy::ChatTemplate::from_template(kHarmony, "<|startoftext|>", "<|return|>");
  EXPECT_EQ(h.family(), sy::ChatFamily::kHarmony);
  EXPECT_EQ(h.render({{"user", "Hi"}}), "<|start|>user<|message|>Hi<|end|><|start|>assistant");
  auto l = sy::ChatTemplate::from_template(kLlama3, "<|begin_of_text|>", "<|eot_id|>");
  EXPECT_EQ(l.family(), sy::ChatFamily::kLlama3);
  EXPECT_EQ(l.render({{"user", "Hi"}}), "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                                        "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, UnknownTemplateAndRoleAreErrors) {
  EXPECT_THROW(sy::ChatTemplate::from_template("{{ messages[0]['content'] }}", "", ""), sy::Unsupported);
  auto t = sy::ChatTemplate::from_template(kQwen25, "", "");
  EXPECT_THROW(t.render({{"tool", "x"}}), sy::InvalidArgument);
}

TEST(ChatTemplate, FromConfigFile) {
  auto dir = std::filesystem::temp_directory_path() / "sy_chat_template_test";
  std::filesystem::create_directories(dir);
  auto path = (dir / "tokenizer_config.json").string();
  {
    std::ofstream f(path);
    f << R"({"bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>", "chat_template": )"
      << nlohmann::json(kMixtral).dump() << "}";
  }
  auto t = sy::ChatTemplate::from_config_file(path);
  EXPECT_EQ(t.family(), sy::ChatFamily::kMistral);
  EXPECT_EQ(t.render({{"user", "Hi"}}), "<s>[INST] Hi [/INST]");
  { std::ofstream f(path); f << R"({"eos_token": "</s>"})"; }
  EXPECT_THROW(sy::ChatTemplate::from_config_file(path), sy::Unsupported);
  EXPECT_THROW(sy::ChatTemplate::from_config_file((dir / "missing.json").string()), sy::IoError);
  std::filesystem::remove_all(dir);
}

}  // namespace
