// HttpServer: the OpenAI-compatible HTTP front end (cpp-httplib) over an Engine.
//   POST /v1/completions, POST /v1/chat/completions (stream: true as server-sent events), GET /v1/models,
//   GET /health, GET /metrics (Prometheus text), GET / (a small chat page).
// Every error is answered in the OpenAI error shape with a proper status code. With an API key set, /v1/*
// requires "Authorization: Bearer KEY" (compared in constant time).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "switchyard/io/chat_template.h"
#include "switchyard/io/tokenizer.h"
#include "switchyard/serve/engine.h"
#include "switchyard/serve/metrics.h"

namespace sy::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                       // 0: any free port (bind() returns it)
  std::string api_key;                   // empty: no authentication
  std::string model_name = "switchyard";
  size_t max_body_bytes = size_t{1} << 20;
  double request_timeout_s = 600;        // a request still running after this is cancelled
  int http_threads = 0;                  // 0: enough for max_seqs + queue
};

class HttpServer {
 public:
  HttpServer(Engine& engine, std::optional<Tokenizer> tokenizer, std::optional<ChatTemplate> chat_template,
             std::shared_ptr<ServerMetrics> metrics, ServerOptions options);
  ~HttpServer();
  // Binds the listening socket; returns the port. Throws IoError when the address cannot be bound.
  int bind();
  // Serves until stop(); call bind() first.
  void run();
  // Stops accepting connections and returns once in-flight handlers have finished.
  void stop();
  // /health answers 503 while draining.
  void set_draining();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The chat page served at "/" (src/serve/chat_page.html).
const char* chat_page_html();

}  // namespace sy::serve
