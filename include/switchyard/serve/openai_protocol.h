// The OpenAI HTTP API as Switchyard speaks it: request parsing with field-by-field validation (wrong types and
// out-of-range values name the offending field; unknown fields are ignored, as OpenAI clients send many), the
// error body shape {"error": {"message", "type", "param", "code"}}, and response/stream-chunk rendering for
// /v1/completions and /v1/chat/completions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/io/chat_template.h"

namespace sy::serve {

// An error answered to the client: HTTP status, OpenAI error type, offending parameter, machine code.
class ApiError : public Error {
 public:
  ApiError(int status, std::string type, std::string message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  std::string message() const;

 private:
  int status_;
  std::string type_, param_, code_;
};

// {"error": {...}} for `e`; a bare status for errors raised outside the handlers (413, 404 routes, ...).
std::string error_body(const ApiError& e);

struct CompletionRequest {
  bool chat = false;
  std::string model;
  std::string prompt;                       // completions: text prompt (empty when ids were given)
  std::vector<int64_t> prompt_ids;          // completions: token-id prompt
  std::vector<ChatMessage> messages;        // chat
  std::optional<int64_t> max_tokens;
  float temperature = 1.f, top_p = 1.f;
  int top_k = 0;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool stream = false, include_usage = false;
  int logprobs = -1;                        // -1: none; else top alternatives per token (0..20)
  bool return_token_ids = false;            // extension (as in vLLM): the generated ids in "token_ids"
  bool ignore_eos = false;                  // extension (as in vLLM): generate max_tokens tokens (benchmarks)
};

// Parses and validates a JSON body. Throws ApiError (400) naming the field; `chat` picks the endpoint schema.
CompletionRequest parse_completion_request(const std::string& body, bool chat);

// One generated token as the response renders it.
struct RenderedToken {
  int64_t id = 0;
  std::string text;
  float logprob = 0.f;
  std::vector<std::pair<std::string, float>> top;
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

// JSON that must not fail on odd bytes: invalid UTF-8 becomes U+FFFD.
std::string dump_json(const nlohmann::json& j);

nlohmann::json completion_response(const CompletionRequest& r, const std::string& id, int64_t created,
                                   const std::string& text, const std::vector<RenderedToken>& tokens,
                                   const std::string& finish_reason, const Usage& usage);
// One streamed chunk; finish_reason empty for a delta chunk. role_chunk: the chat stream's first chunk.
nlohmann::json stream_chunk(const CompletionRequest& r, const std::string& id, int64_t created,
                            const std::string& text, const std::vector<RenderedToken>& tokens,
                            const std::string& finish_reason, bool role_chunk = false);
nlohmann::json usage_chunk(const CompletionRequest& r, const std::string& id, int64_t created, const Usage& usage);

}  // namespace sy::serve
