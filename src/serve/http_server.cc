// HttpServer: routes, authentication, limits and error shapes of the OpenAI-compatible server, and the two
// completion endpoints (whole JSON responses and server-sent-event streams).
#include "switchyard/serve/http_server.h"

#include <httplib.h>

#include <sys/socket.h>

#include <atomic>
#include <random>

#include "generation.h"
#include "switchyard/core/log.h"

namespace sy::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Constant-time comparison: the time taken does not depend on where the strings first differ.
bool same_secret(const std::string& given, const std::string& key) {
  unsigned char diff = given.size() != key.size() ? 1 : 0;
  for (size_t i = 0; i < key.size(); ++i) {
    diff |= static_cast<unsigned char>(key[i] ^ (i < given.size() ? given[i] : 0));
  }
  return diff == 0;
}

std::string endpoint_label(const std::string& path) {
  for (const char* known : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "/"}) {
    if (path == known) return path;
  }
  return "other";
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(error_body(e), "application/json");
}

std::string status_type(int status) {
  if (status == 401) return "authentication_error";
  if (status == 404) return "not_found_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

}  // namespace

struct HttpServer::Impl {
  Engine& engine;
  std::optional<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;
  std::shared_ptr<ServerMetrics> metrics;
  ServerOptions options;
  httplib::Server server;
  std::atomic<bool> draining{false};
  int listen_fd = -1;  // recorded while binding, to widen the listen backlog
  std::atomic<uint64_t> next_id{1};
  std::mt19937_64 seed_source{std::random_device{}()};
  std::mutex seed_mu;

  Impl(Engine& e, std::optional<Tokenizer> tok, std::optional<ChatTemplate> chat, std::shared_ptr<ServerMetrics> m,
       ServerOptions o)
      : engine(e), tokenizer(std::move(tok)), chat_template(std::move(chat)), metrics(std::move(m)),
        options(std::move(o)) {}

  void install_routes();
  void completion(const httplib::Request& req, httplib::Response& res, bool chat);
  std::vector<int64_t> prompt_ids(const CompletionRequest& r);
  uint64_t fresh_seed() {
    std::lock_guard<std::mutex> lock(seed_mu);
    return seed_source();
  }
};

std::vector<int64_t> HttpServer::Impl::prompt_ids(const CompletionRequest& r) {
  if (r.chat) {
    if (!tokenizer || !chat_template) {
      throw ApiError(400, "invalid_request_error",
                     "this model has no tokenizer.json or chat template; use /v1/completions with token ids");
    }
    std::vector<int32_t> ids = tokenizer->encode(chat_template->render(r.messages, true), false);
    return {ids.begin(), ids.end()};
  }
  if (!r.prompt_ids.empty()) return r.prompt_ids;
  if (!tokenizer) {
    throw ApiError(400, "invalid_request_error", "this model has no tokenizer.json; send the prompt as token ids",
                   "prompt");
  }
  std::vector<int32_t> ids = tokenizer->encode(r.prompt, true);
  return {ids.begin(), ids.end()};
}

void HttpServer::Impl::completion(const httplib::Request& req, httplib::Response& res, bool chat) {
  CompletionRequest r = parse_completion_request(req.body, chat);
  if (!r.model.empty() && r.model != options.model_name) {
    throw ApiError(404, "invalid_request_error",
                   "the model '" + r.model + "' does not exist; this server serves '" + options.model_name + "'",
                   "model", "model_not_found");
  }
  r.model = options.model_name;
  std::vector<int64_t> ids = prompt_ids(r);
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n == 0) throw ApiError(400, "invalid_request_error", "the prompt encodes to no tokens", "prompt");
  int64_t limit = engine.kv_capacity_tokens();
  if (engine.context_length() > 0) limit = std::min(limit, engine.context_length());
  if (n >= limit) {
    throw ApiError(400, "invalid_request_error",
                   "the prompt has " + std::to_string(n) + " tokens; this server accepts at most " +
                       std::to_string(limit - 1) + " so that one token can be generated",
                   chat ? "messages" : "prompt", "context_length_exceeded");
  }
  GenerationParams p;
  p.prompt = std::move(ids);
  // Defaults: chat generates up to the rest of the context; completions 16 tokens (OpenAI's), fewer if the
  // prompt leaves less room.
  p.max_tokens = r.max_tokens.value_or(chat ? limit - n : std::min<int64_t>(16, limit - n));
  if (n + p.max_tokens > limit) {
    throw ApiError(400, "invalid_request_error",
                   "the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" + std::to_string(p.max_tokens) +
                       ") exceeds the limit of " + std::to_string(limit) + " tokens",
                   "max_tokens", "context_length_exceeded");
  }
  p.sampling.temperature = r.temperature;
  p.sampling.top_p = r.top_p;
  p.sampling.top_k = r.top_k;
  p.sampling.seed = r.seed ? *r.seed : fresh_seed();
  if (!r.ignore_eos) p.stop_ids = engine.config().eos_token_ids;
  p.top_logprobs = r.logprobs;
  std::shared_ptr<RequestStream> stream;
  try {
    stream = engine.submit(p);
  } catch (const Overloaded& e) {
    throw ApiError(503, "server_error", e.what(), "", "overloaded");
  } catch (const InvalidArgument& e) {
    throw ApiError(400, "invalid_request_error", e.what());
  }
  const std::string id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(stream->id());
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(options.request_timeout_s * 1000));
  auto gen = std::make_shared<Generation>(r, stream, tokenizer ? &*tokenizer : nullptr, p.stop_ids, n, id, deadline);

  if (!r.stream) {
    std::string text;
    std::vector<RenderedToken> tokens;
    while (!gen->next(text, tokens, Clock::now() + std::chrono::seconds(1))) {
    }
    if (gen->error()) throw *gen->error();
    res.set_content(dump_json(completion_response(gen->request(), gen->id(), gen->created(), text, tokens,
                                                  gen->finish_reason(), gen->usage())),
                    "application/json");
    return;
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  struct SseState {
    bool role_sent = false, done = false;
    Clock::time_point last_write = Clock::now();
  };
  auto state = std::make_shared<SseState>();
  res.set_chunked_content_provider(
      "text/event-stream",
      [gen, state](size_t, httplib::DataSink& sink) {
        const CompletionRequest& rq = gen->request();
        auto send = [&](const std::string& payload) {
          const std::string event = "data: " + payload + "\n\n";
          if (!sink.write(event.data(), event.size())) {
            gen->cancel();  // the client went away: free its KV blocks
            return false;
          }
          state->last_write = Clock::now();
          return true;
        };
        if (state->done) return false;
        if (rq.chat && !state->role_sent) {
          state->role_sent = true;
          return send(dump_json(stream_chunk(rq, gen->id(), gen->created(), "", {}, "", true)));
        }
        std::string text;
        std::vector<RenderedToken> tokens;
        const bool over = gen->next(text, tokens, Clock::now() + std::chrono::milliseconds(250));
        if ((!text.empty() || !tokens.empty()) &&
            !send(dump_json(stream_chunk(rq, gen->id(), gen->created(), text, tokens, "")))) {
          return false;
        }
        if (!over) {
          // An SSE comment now and then finds a client that left while nothing was generated.
          if (Clock::now() - state->last_write > std::chrono::seconds(1)) {
            static const char kPing[] = ": ping\n\n";
            if (!sink.write(kPing, sizeof(kPing) - 1)) {
              gen->cancel();
              return false;
            }
            state->last_write = Clock::now();
          }
          return true;
        }
        state->done = true;
        if (gen->error()) {
          if (!send(error_body(*gen->error()))) return false;
        } else {
          if (!send(dump_json(stream_chunk(rq, gen->id(), gen->created(), "", {}, gen->finish_reason())))) return false;
          if (rq.include_usage && !send(dump_json(usage_chunk(rq, gen->id(), gen->created(), gen->usage())))) {
            return false;
          }
        }
        if (!send("[DONE]")) return false;
        sink.done();
        return true;
      },
      [gen](bool) { gen->cancel(); });
}

void HttpServer::Impl::install_routes() {
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of clients then waits out SYN retransmissions
  // (a 1 s stall) or is reset. Record the socket here; bind() widens the backlog after httplib's listen().
  server.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd = static_cast<int>(sock);
  });
  server.set_payload_max_length(options.max_body_bytes);
  server.set_read_timeout(30, 0);
  server.set_write_timeout(10, 0);
  server.set_keep_alive_max_count(1000);
  server.set_keep_alive_timeout(5);
  const int threads = options.http_threads > 0
                          ? options.http_threads
                          : static_cast<int>(std::min<int64_t>(
                                1024, engine.options().max_seqs + engine.options().max_queue + 16));
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };

  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    const std::string given = auth.rfind(prefix, 0) == 0 ? auth.substr(prefix.size()) : std::string();
    if (!same_secret(given, options.api_key)) {
      send_error(res, ApiError(401, "authentication_error", "a valid API key is required (Authorization: Bearer ...)",
                               "", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req,
                                                                   httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "HTTP " + std::to_string(res.status);
    if (res.status == 404) message = "no route for " + req.method + " " + req.path;
    if (res.status == 405) message = "method " + req.method + " is not allowed on " + req.path;
    if (res.status == 413) message = "the request body is too large";
    if (res.status == 400) message = "malformed HTTP request";
    send_error(res, ApiError(res.status, status_type(res.status), message));
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const InvalidArgument& e) {
      send_error(res, ApiError(400, "invalid_request_error", e.what()));
    } catch (const std::exception& e) {
      log_error("[serve] internal error: ", e.what());
      send_error(res, ApiError(500, "server_error", std::string("internal error: ") + e.what()));
    } catch (...) {
      send_error(res, ApiError(500, "server_error", "internal error"));
    }
  });
  server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    if (metrics) metrics->count_request(endpoint_label(req.path), res.status);
  });

  server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completion(req, res, false);
  });
  server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completion(req, res, true);
  });
  server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json model = {{"id", options.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "switchyard"},
                  {"max_model_len", engine.context_length()}};
    res.set_content(dump_json(json{{"object", "list"}, {"data", {model}}}), "application/json");
  });
  server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining.load()) {
      res.status = 503;
      res.set_content(R"({"status":"draining"})", "application/json");
    } else {
      res.set_content(R"({"status":"ok"})", "application/json");
    }
  });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics ? metrics->render(engine.gauges()) : std::string(), "text/plain; version=0.0.4");
  });
  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(chat_page_html(), "text/html; charset=utf-8");
  });
}

HttpServer::HttpServer(Engine& engine, std::optional<Tokenizer> tokenizer, std::optional<ChatTemplate> chat_template,
                       std::shared_ptr<ServerMetrics> metrics, ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, std::move(tokenizer), std::move(chat_template), std::move(metrics),
                                   std::move(options))) {
  impl_->install_routes();
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind() {
  const ServerOptions& o = impl_->options;
  int port = o.port;
  if (port == 0) {
    port = impl_->server.bind_to_any_port(o.host);
    if (port < 0) port = 0;
  } else if (!impl_->server.bind_to_port(o.host, port)) {
    port = 0;
  }
  if (port <= 0) {
    throw make_error<IoError>("serve", "cannot listen on ", o.host, ":", o.port,
                              " (address in use, not local, or not permitted)");
  }
  // Calling listen() again on a listening socket only updates its backlog (Linux, BSD).
  if (impl_->listen_fd >= 0) ::listen(impl_->listen_fd, SOMAXCONN);
  return port;
}

void HttpServer::run() { impl_->server.listen_after_bind(); }

void HttpServer::stop() {
  if (impl_->server.is_running()) impl_->server.stop();
}

void HttpServer::set_draining() { impl_->draining.store(true); }

}  // namespace sy::serve
