// Chat formatting for instruction-tuned models: recognises the family of a tokenizer_config.json `chat_template`
// and renders messages with a documented built-in for that family (no Jinja interpreter). Families: ChatML
// (Qwen), Mistral [INST], DeepSeek (V3/R1), gpt-oss harmony, Llama 3. An unrecognised template is an error,
// never a silent guess. Not here: tools/function calling, multimodal content, reasoning-content replay.
#pragma once

#include <string>
#include <vector>

namespace sy {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

enum class ChatFamily { kChatML, kMistral, kDeepSeek, kHarmony, kLlama3 };

class ChatTemplate {
 public:
  // Reads chat_template, bos_token and eos_token from a tokenizer_config.json. Throws IoError, FormatError, and
  // Unsupported when the template is missing or of no known family.
  static ChatTemplate from_config_file(const std::string& path);
  // Recognises `jinja_template`; bos/eos are the model's special token strings.
  static ChatTemplate from_template(const std::string& jinja_template, const std::string& bos, const std::string& eos);
  // Builds a template for a family directly (tests, or a user override).
  ChatTemplate(ChatFamily family, std::string bos, std::string eos);

  ChatFamily family() const { return family_; }
  const char* family_name() const;
  // Renders the conversation; add_generation_prompt appends the header that starts the assistant's reply.
  // Throws InvalidArgument for an unknown role or an order the family cannot express.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true) const;

 private:
  ChatFamily family_;
  std::string bos_, eos_;
  std::string default_system_;  // system prompt the template inserts when none is given (Qwen2.5)
  bool think_prefix_ = false;   // DeepSeek-R1 opens the reply with "<think>\n"
  bool spaced_inst_ = true;     // Mistral "[INST] u [/INST]" (v0.1/Mixtral) vs "[INST]u[/INST]" (v0.3+)
};

}  // namespace sy
