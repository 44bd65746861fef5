// OpenAI request validation and response rendering (completions and chat completions, whole and streamed).
#include "switchyard/serve/openai_protocol.h"

#include <cmath>
#include <limits>

namespace sy::serve {

using nlohmann::json;

ApiError::ApiError(int status, std::string type, std::string message, std::string param, std::string code)
    : Error(message), status_(status), type_(std::move(type)), param_(std::move(param)), code_(std::move(code)) {}

std::string ApiError::message() const { return what(); }

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string error_body(const ApiError& e) {
  json err = {{"message", e.message()}, {"type", e.type()}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param().empty()) err["param"] = e.param();
  if (!e.code().empty()) err["code"] = e.code();
  return dump_json(json{{"error", err}});
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, "invalid_request_error", message, param);
}

double number(const json& j, const char* key, double lo, double hi) {
  const json& v = j.at(key);
  if (!v.is_number()) bad(key, std::string("'") + key + "' must be a number");
  double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    bad(key, std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return x;
}

int64_t integer(const json& j, const char* key, int64_t lo, int64_t hi) {
  const json& v = j.at(key);
  if (!v.is_number_integer()) bad(key, std::string("'") + key + "' must be an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) {
    bad(key, std::string("'") + key + "' must be at most " + std::to_string(hi));
  }
  int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) {
    bad(key, std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return x;
}

bool present(const json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

std::string message_content(const json& m, size_t i) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  if (!m.contains("content") || m["content"].is_null()) return "";
  const json& c = m["content"];
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {  // content parts: only text parts are understood
    std::string text;
    for (const json& part : c) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
        bad(param, "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
      }
      text += part["text"].get<std::string>();
    }
    return text;
  }
  bad(param, "'" + param + "' must be a string or an array of text parts");
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, bool chat) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    throw ApiError(400, "invalid_request_error", std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, "invalid_request_error", "the request body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  if (present(j, "model")) {
    if (!j["model"].is_string()) bad("model", "'model' must be a string");
    r.model = j["model"].get<std::string>();
  }
  if (chat) {
    if (!j.contains("messages")) bad("messages", "'messages' is required");
    const json& msgs = j["messages"];
    if (!msgs.is_array() || msgs.empty()) bad("messages", "'messages' must be a non-empty array");
    for (size_t i = 0; i < msgs.size(); ++i) {
      const json& m = msgs[i];
      const std::string param = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) bad(param, "'" + param + "' must be an object");
      if (!m.contains("role") || !m["role"].is_string()) bad(param + ".role", "'" + param + ".role' must be a string");
      std::string role = m["role"].get<std::string>();
      if (role == "developer") role = "system";
      if (role != "system" && role != "user" && role != "assistant") {
        bad(param + ".role", "role '" + role + "' is not supported (system, developer, user, assistant)");
      }
      r.messages.push_back({role, message_content(m, i)});
    }
  } else {
    if (!j.contains("prompt")) bad("prompt", "'prompt' is required");
    const json& p = j["prompt"];
    if (p.is_string()) {
      r.prompt = p.get<std::string>();
    } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
      for (const json& id : p) {
        if (!id.is_number_integer()) bad("prompt", "a token-id prompt must hold only integers");
        r.prompt_ids.push_back(id.get<int64_t>());
      }
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r.prompt = p[0].get<std::string>();
    } else if (p.is_array() && p.size() > 1) {
      bad("prompt", "batched prompts are not supported; send one request per prompt");
    } else {
      bad("prompt", "'prompt' must be a string or an array of token ids");
    }
    if (r.prompt.empty() && r.prompt_ids.empty()) bad("prompt", "'prompt' is empty");
  }
  const char* max_key = chat && present(j, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (present(j, max_key)) r.max_tokens = integer(j, max_key, 1, std::numeric_limits<int32_t>::max());
  if (present(j, "temperature")) r.temperature = static_cast<float>(number(j, "temperature", 0, 2));
  if (present(j, "top_p")) r.top_p = static_cast<float>(number(j, "top_p", 0, 1));
  if (r.top_p <= 0.f) bad("top_p", "'top_p' must be greater than 0");
  if (present(j, "top_k")) r.top_k = static_cast<int>(integer(j, "top_k", -1, 1 << 30));
  if (r.top_k < 0) r.top_k = 0;  // -1: off, as in vLLM
  if (present(j, "seed")) {
    if (!j["seed"].is_number_integer()) bad("seed", "'seed' must be an integer");
    r.seed = j["seed"].is_number_unsigned() ? j["seed"].get<uint64_t>() : static_cast<uint64_t>(j["seed"].get<int64_t>());
  }
  if (present(j, "n") && integer(j, "n", 1, 128) != 1) bad("n", "only n = 1 is supported");
  if (present(j, "best_of") && integer(j, "best_of", 1, 128) != 1) bad("best_of", "only best_of = 1 is supported");
  if (present(j, "echo")) {
    if (!j["echo"].is_boolean()) bad("echo", "'echo' must be a boolean");
    if (j["echo"].get<bool>()) bad("echo", "echo is not supported");
  }
  if (present(j, "stop")) {
    const json& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > 4) bad("stop", "at most 4 stop sequences");
      for (const json& x : s) {
        if (!x.is_string()) bad("stop", "'stop' must be a string or an array of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or an array of strings");
    }
    for (const std::string& x : r.stop) {
      if (x.empty()) bad("stop", "stop sequences must not be empty");
    }
  }
  if (present(j, "stream")) {
    if (!j["stream"].is_boolean()) bad("stream", "'stream' must be a boolean");
    r.stream = j["stream"].get<bool>();
  }
  if (present(j, "stream_options")) {
    const json& so = j["stream_options"];
    if (!so.is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' needs stream: true");
    if (so.contains("include_usage")) {
      if (!so["include_usage"].is_boolean()) bad("stream_options.include_usage", "'include_usage' must be a boolean");
      r.include_usage = so["include_usage"].get<bool>();
    }
  }
  if (present(j, "return_token_ids")) {
    if (!j["return_token_ids"].is_boolean()) bad("return_token_ids", "'return_token_ids' must be a boolean");
    r.return_token_ids = j["return_token_ids"].get<bool>();
  }
  if (present(j, "ignore_eos")) {
    if (!j["ignore_eos"].is_boolean()) bad("ignore_eos", "'ignore_eos' must be a boolean");
    r.ignore_eos = j["ignore_eos"].get<bool>();
  }
  if (chat) {
    bool want = false;
    if (present(j, "logprobs")) {
      if (!j["logprobs"].is_boolean()) bad("logprobs", "'logprobs' must be a boolean for chat completions");
      want = j["logprobs"].get<bool>();
    }
    if (present(j, "top_logprobs")) {
      int64_t k = integer(j, "top_logprobs", 0, 20);
      if (!want) bad("top_logprobs", "'top_logprobs' needs logprobs: true");
      r.logprobs = static_cast<int>(k);
    } else if (want) {
      r.logprobs = 0;
    }
  } else if (present(j, "logprobs")) {
    r.logprobs = static_cast<int>(integer(j, "logprobs", 0, 20));
  }
  return r;
}

namespace {

json completion_logprobs(const std::vector<RenderedToken>& tokens, int64_t text_offset) {
  json toks = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const RenderedToken& t : tokens) {
    toks.push_back(t.text);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [text, lp] : t.top) {
      if (!top.contains(text)) top[text] = lp;
    }
    tops.push_back(top);
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(t.text.size());
  }
  return {{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json byte_list(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

json chat_logprobs(const std::vector<RenderedToken>& tokens) {
  json content = json::array();
  for (const RenderedToken& t : tokens) {
    json top = json::array();
    for (const auto& [text, lp] : t.top) top.push_back({{"token", text}, {"logprob", lp}, {"bytes", byte_list(text)}});
    content.push_back({{"token", t.text}, {"logprob", t.logprob}, {"bytes", byte_list(t.text)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json token_ids(const std::vector<RenderedToken>& tokens) {
  json ids = json::array();
  for (const RenderedToken& t : tokens) ids.push_back(t.id);
  return ids;
}

json finish_json(const std::string& finish_reason) {
  return finish_reason.empty() ? json(nullptr) : json(finish_reason);
}

}  // namespace

json completion_response(const CompletionRequest& r, const std::string& id, int64_t created, const std::string& text,
                         const std::vector<RenderedToken>& tokens, const std::string& finish_reason,
                         const Usage& usage) {
  json choice = {{"index", 0}, {"finish_reason", finish_reason}, {"logprobs", nullptr}};
  if (r.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
    if (r.logprobs >= 0) choice["logprobs"] = chat_logprobs(tokens);
  } else {
    choice["text"] = text;
    if (r.logprobs >= 0) choice["logprobs"] = completion_logprobs(tokens, 0);
  }
  if (r.return_token_ids) choice["token_ids"] = token_ids(tokens);
  return {{"id", id},           {"object", r.chat ? "chat.completion" : "text_completion"},
          {"created", created}, {"model", r.model},
          {"choices", {choice}}, {"usage", usage_json(usage)}};
}

json stream_chunk(const CompletionRequest& r, const std::string& id, int64_t created, const std::string& text,
                  const std::vector<RenderedToken>& tokens, const std::string& finish_reason, bool role_chunk) {
  json choice = {{"index", 0}, {"finish_reason", finish_json(finish_reason)}, {"logprobs", nullptr}};
  if (r.chat) {
    json delta = json::object();
    if (role_chunk) {
      delta = {{"role", "assistant"}, {"content", ""}};
    } else if (!text.empty()) {
      delta["content"] = text;
    }
    choice["delta"] = delta;
    if (r.logprobs >= 0 && !tokens.empty()) choice["logprobs"] = chat_logprobs(tokens);
  } else {
    choice["text"] = text;
    if (r.logprobs >= 0 && !tokens.empty()) choice["logprobs"] = completion_logprobs(tokens, 0);
  }
  if (r.return_token_ids) choice["token_ids"] = token_ids(tokens);
  json j = {{"id", id},           {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created}, {"model", r.model},
            {"choices", {choice}}};
  if (r.include_usage) j["usage"] = nullptr;
  return j;
}

json usage_chunk(const CompletionRequest& r, const std::string& id, int64_t created, const Usage& usage) {
  return {{"id", id},           {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created}, {"model", r.model},
          {"choices", json::array()}, {"usage", usage_json(usage)}};
}

}  // namespace sy::serve
