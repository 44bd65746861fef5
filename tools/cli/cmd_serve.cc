// switchyard serve [--model DIR] [--host 127.0.0.1 --port 8000] [--device cpu] [--max-batch-tokens N]
//   [--max-seqs N] [--max-queue N] [--kv-cache-gib G] [--block-size N] [--api-key KEY] [--served-model-name NAME]
//   [--request-timeout S] [--shutdown-timeout S]
// Serves the model (default: the built-in model) over the OpenAI HTTP API. SIGTERM/SIGINT drain: new
// requests get 503, running ones finish for up to --shutdown-timeout seconds, then the rest are cancelled.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <future>
#include <pthread.h>
#include <thread>

#include "cli_util.h"
#include "commands.h"
#include "switchyard/core/log.h"
#include "switchyard/serve/http_server.h"

namespace sy::cli {

namespace {

struct ServeFlags {
  std::string model_dir, host = "127.0.0.1", device = "cpu", api_key, served_name;
  int port = 8000;
  int64_t max_batch_tokens = 256, max_seqs = 64, max_queue = 256, block_size = 16;
  double kv_cache_gib = 1.0, request_timeout = 600, shutdown_timeout = 30;
  size_t max_body_bytes = size_t{1} << 20;
};

std::string model_name_for(const std::string& model_dir) {
  if (model_dir.empty()) return "switchyard-builtin";
  std::filesystem::path p = std::filesystem::absolute(model_dir).lexically_normal();
  std::string name = p.filename().string();
  if (name.empty()) name = p.parent_path().filename().string();
  return name.empty() ? "switchyard" : name;
}

}  // namespace

CommandRunner add_serve_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  auto f = std::make_shared<ServeFlags>();
  cmd->add_option("--model", f->model_dir, "Hugging Face model directory (default: the built-in model)");
  cmd->add_option("--host", f->host, "Address to bind (0.0.0.0 exposes the server to the network)")
      ->capture_default_str();
  cmd->add_option("--port", f->port, "TCP port (0: any free port, printed at start)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--device", f->device, "cpu, or cuda (GPU 0; bf16 weights; not MLA or gpt-oss yet)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--max-batch-tokens", f->max_batch_tokens, "Token budget of one batched step")->capture_default_str();
  cmd->add_option("--max-seqs", f->max_seqs, "Sequences running at once")->capture_default_str();
  cmd->add_option("--max-queue", f->max_queue, "Requests waiting before new ones get 503")->capture_default_str();
  cmd->add_option("--kv-cache-gib", f->kv_cache_gib, "Memory for the paged KV cache, GiB")->capture_default_str();
  cmd->add_option("--block-size", f->block_size, "Tokens per KV block")->capture_default_str();
  cmd->add_option("--api-key", f->api_key, "Require 'Authorization: Bearer KEY' on /v1/* (also SWITCHYARD_API_KEY)");
  cmd->add_option("--served-model-name", f->served_name, "Model name in the API (default: the directory name)");
  cmd->add_option("--request-timeout", f->request_timeout, "Seconds before a request is cancelled")
      ->capture_default_str();
  cmd->add_option("--shutdown-timeout", f->shutdown_timeout, "Seconds to drain running requests on SIGTERM")
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", f->max_body_bytes, "Largest accepted request body")->capture_default_str();
  return [f]() {
    SY_REQUIRE(f->kv_cache_gib > 0 && f->kv_cache_gib < 4096, InvalidArgument, "serve",
               "--kv-cache-gib must be in (0, 4096), got ", f->kv_cache_gib);
    SY_REQUIRE(f->request_timeout > 0 && f->shutdown_timeout >= 0, InvalidArgument, "serve",
               "--request-timeout must be positive and --shutdown-timeout non-negative");
    SY_REQUIRE(f->max_body_bytes >= 1024, InvalidArgument, "serve", "--max-body-bytes must be at least 1024");
    if (f->api_key.empty()) {
      if (const char* env = std::getenv("SWITCHYARD_API_KEY")) f->api_key = env;
    }
    if (f->api_key.empty() && f->host != "127.0.0.1" && f->host != "localhost" && f->host != "::1") {
      log_warn("[serve] listening on ", f->host, " without --api-key: anyone who can reach this address can use "
               "the server");
    }
    // Signals are taken by sigwait below: block them before any thread starts so every thread inherits it.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    auto model = load_model_or_builtin(f->model_dir);
    if (f->device == "cuda") model->to_device(Device::kCuda);
    const std::string dir = resolve_model_dir(f->model_dir);
    std::optional<Tokenizer> tokenizer;
    std::optional<ChatTemplate> chat;
    if (!dir.empty() && std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json")) {
      tokenizer = Tokenizer::from_file((std::filesystem::path(dir) / "tokenizer.json").string());
      const auto cfg = std::filesystem::path(dir) / "tokenizer_config.json";
      if (std::filesystem::exists(cfg)) {
        try {
          chat = ChatTemplate::from_config_file(cfg.string());
        } catch (const Error& e) {
          log_warn("[serve] no chat template: ", e.what(), "; /v1/chat/completions will answer 400");
        }
      }
    }
    serve::EngineOptions eo;
    eo.max_batch_tokens = f->max_batch_tokens;
    eo.max_seqs = f->max_seqs;
    eo.max_queue = f->max_queue;
    eo.block_size = f->block_size;
    eo.kv_cache_bytes = static_cast<int64_t>(f->kv_cache_gib * double(int64_t{1} << 30));
    auto metrics = std::make_shared<serve::ServerMetrics>();
    serve::Engine engine(*model, eo, metrics);
    serve::ServerOptions so;
    so.host = f->host;
    so.port = f->port;
    so.api_key = f->api_key;
    so.model_name = f->served_name.empty() ? model_name_for(f->model_dir) : f->served_name;
    so.request_timeout_s = f->request_timeout;
    so.max_body_bytes = f->max_body_bytes;
    serve::HttpServer server(engine, tokenizer, chat, metrics, so);
    const int port = server.bind();
    std::printf("switchyard serve: %s on http://%s:%d (KV cache %lld blocks of %lld tokens%s)\n",
                so.model_name.c_str(), f->host.c_str(), port, static_cast<long long>(engine.options().num_blocks),
                static_cast<long long>(eo.block_size), so.api_key.empty() ? "" : ", API key required");
    std::fflush(stdout);
    std::thread http([&] { server.run(); });

    int sig = 0;
    sigwait(&signals, &sig);
    std::printf("switchyard serve: %s received, draining (up to %.0f s)\n", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                f->shutdown_timeout);
    std::fflush(stdout);
    server.set_draining();
    auto drained = std::async(std::launch::async, [&] { engine.shutdown(false); });
    if (drained.wait_for(std::chrono::duration<double>(f->shutdown_timeout)) != std::future_status::ready) {
      std::printf("switchyard serve: cancelling requests still running\n");
      engine.shutdown(true);
    }
    drained.wait();
    server.stop();
    http.join();
    std::printf("switchyard serve: stopped\n");
    return 0;
  };
}

}  // namespace sy::cli
