// Built-in chat formats, selected by recognising marker strings in a Jinja chat_template. Each family's output is
// spelled out in render_*; docs/tokenizer.md lists what each reproduces and what it leaves out.
// Not a Jinja interpreter.
#include "switchyard/io/chat_template.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "switchyard/core/error.h"

namespace sy {
namespace {

constexpr const char* kComponent = "chat";
constexpr const char* kQwenDefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

bool has(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

// A special token in tokenizer_config.json: a string, an AddedToken object {"content": ...}, or null.
std::string token_string(const nlohmann::json& cfg, const char* key) {
  if (!cfg.contains(key) || cfg[key].is_null()) return "";
  const auto& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw make_error<FormatError>(kComponent, key, " in tokenizer_config.json must be a string or {\"content\": ...}");
}

void check_role(const ChatMessage& m) {
  SY_REQUIRE(m.role == "system" || m.role == "user" || m.role == "assistant", InvalidArgument, kComponent,
             "unknown message role \"", m.role, "\"; use system, user or assistant");
}

}  // namespace

ChatTemplate::ChatTemplate(ChatFamily family, std::string bos, std::string eos)
    : family_(family), bos_(std::move(bos)), eos_(std::move(eos)) {}

ChatTemplate ChatTemplate::from_template(const std::string& t, const std::string& bos, const std::string& eos) {
  if (has(t, "<|im_start|>") && has(t, "<|im_end|>")) {
    ChatTemplate c(ChatFamily::kChatML, bos, eos);
    if (has(t, kQwenDefaultSystem)) c.default_system_ = kQwenDefaultSystem;
    return c;
  }
  if (has(t, "<|start|>") && has(t, "<|message|>") && has(t, "<|channel|>"))
    return ChatTemplate(ChatFamily::kHarmony, bos, eos);
  if (has(t, "<\xEF\xBD\x9C" "User\xEF\xBD\x9C>") && has(t, "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>")) {
    ChatTemplate c(ChatFamily::kDeepSeek, bos, eos);
    c.think_prefix_ = has(t, "<think>\\n") || has(t, "<think>\n");
    return c;
  }
  if (has(t, "<|start_header_id|>") && has(t, "<|eot_id|>")) return ChatTemplate(ChatFamily::kLlama3, bos, eos);
  if (has(t, "[INST]") && has(t, "[/INST]")) {
    ChatTemplate c(ChatFamily::kMistral, bos, eos);
    c.spaced_inst_ = has(t, " [/INST]");
    return c;
  }
  throw make_error<Unsupported>(kComponent, "the chat_template is of no known family (ChatML/Qwen, Mistral [INST], "
                                "DeepSeek, gpt-oss harmony, Llama 3); pass the prompt as plain text instead of --chat");
}

ChatTemplate ChatTemplate::from_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SY_REQUIRE(in, IoError, kComponent, "cannot open ", path, "; check that the model directory has tokenizer_config.json");
  std::ostringstream ss;
  ss << in.rdbuf();
  nlohmann::json cfg = nlohmann::json::parse(ss.str(), nullptr, false);
  SY_REQUIRE(!cfg.is_discarded() && cfg.is_object(), FormatError, kComponent, path, " is not a JSON object");
  SY_REQUIRE(cfg.contains("chat_template"), Unsupported, kComponent, path,
             " has no chat_template: this model is not a chat model; pass a plain prompt");
  std::string tmpl;
  const auto& ct = cfg["chat_template"];
  if (ct.is_string()) {
    tmpl = ct.get<std::string>();
  } else if (ct.is_array()) {  // [{"name": "default", "template": ...}, ...]
    for (const auto& e : ct)
      if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
        tmpl = e["template"].get<std::string>();
  }
  SY_REQUIRE(!tmpl.empty(), FormatError, kComponent, path, ": chat_template must be a string or a list with a \"default\"");
  return from_template(tmpl, token_string(cfg, "bos_token"), token_string(cfg, "eos_token"));
}

const char* ChatTemplate::family_name() const {
  switch (family_) {
    case ChatFamily::kChatML: return "chatml";
    case ChatFamily::kMistral: return "mistral";
    case ChatFamily::kDeepSeek: return "deepseek";
    case ChatFamily::kHarmony: return "harmony";
    case ChatFamily::kLlama3: return "llama3";
  }
  return "unknown";
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  for (const auto& m : messages) check_role(m);
  std::string out;
  switch (family_) {
    case ChatFamily::kChatML: {
      // <|im_start|>{role}\n{content}<|im_end|>\n ... then <|im_start|>assistant\n
      if (!default_system_.empty() && (messages.empty() || messages[0].role != "system"))
        out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    }
    case ChatFamily::kMistral: {
      // {bos}[INST] {system\n\n}{user} [/INST]{assistant}{eos}[INST] ...; system joins the first user turn.
      out += bos_;
      std::string system;
      bool first_user = true;
      for (const auto& m : messages) {
        if (m.role == "system") {
          system = m.content;
        } else if (m.role == "user") {
          std::string content = first_user && !system.empty() ? system + "\n\n" + m.content : m.content;
          out += spaced_inst_ ? "[INST] " + content + " [/INST]" : "[INST]" + content + "[/INST]";
          first_user = false;
        } else {
          out += (spaced_inst_ ? "" : " ") + m.content + eos_;
        }
      }
      break;  // the generation prompt is the open [/INST]
    }
    case ChatFamily::kDeepSeek: {
      // {bos}{system}<｜User｜>{user}<｜Assistant｜>{assistant}<｜end▁of▁sentence｜>...<｜Assistant｜>
      out += bos_;
      for (const auto& m : messages)
        if (m.role == "system") out += m.content;
      for (const auto& m : messages) {
        if (m.role == "user") out += "<\xEF\xBD\x9CUser\xEF\xBD\x9C>" + m.content;
        else if (m.role == "assistant") out += "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>" + m.content + eos_;
      }
      if (add_generation_prompt) out += std::string("<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>") + (think_prefix_ ? "<think>\n" : "");
      break;
    }
    case ChatFamily::kHarmony: {
      // A caller's system message becomes the developer message; assistant turns are final-channel messages.
      for (const auto& m : messages) {
        if (m.role == "system") out += "<|start|>developer<|message|># Instructions\n\n" + m.content + "<|end|>";
        else if (m.role == "user") out += "<|start|>user<|message|>" + m.content + "<|end|>";
        else out += "<|start|>assistant<|channel|>final<|message|>" + m.content + "<|end|>";
      }
      if (add_generation_prompt) out += "<|start|>assistant";
      break;
    }
    case ChatFamily::kLlama3: {
      out += bos_;
      for (const auto& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    }
  }
  return out;
}

}  // namespace sy
