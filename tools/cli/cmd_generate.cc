// switchyard generate [--model DIR] (--prompt-ids 1,2,3 | --prompt TEXT | --chat TEXT) --max-new-tokens N
//                      [--temperature T --seed S --top-k K --top-p P] [--format text|json]
//                      [--premoe-store DIR --keep M [--premoe-experts-per-token K]
//                       [--premoe-key-layers first|all]]  (PreMoe: docs/premoe.md)
// Expert parallelism: mpirun -np N switchyard generate --model DIR --ep N [--dispatch alltoall|allgather]
// [--comm-timeout S] [--int8-dispatch]: each rank loads only its experts; rank 0 prints. With --device cuda, one GPU per rank
// and the dispatch over NCCL. Tensor parallelism: --tp N splits the attention heads and dense MLP widths over
// the N ranks (with --ep N too: experts sharded over the same ranks).
// Text prompts use the model directory's tokenizer.json (and tokenizer_config.json's chat template for
// --chat). Text output is streamed as it is generated; json prints one object {"ids": [...], "text": ...}.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli_util.h"
#include "commands.h"
#include "prune_cli.h"
#include "switchyard/core/error.h"
#include "switchyard/io/chat_template.h"
#include "switchyard/io/tokenizer.h"
#include "switchyard/model/generate.h"
#include "switchyard/moe/token_dispatcher.h"
#include "switchyard/parallel/comm.h"

namespace sy::cli {

namespace {

// The model directory's tokenizer, if it has one.
std::optional<Tokenizer> find_tokenizer(const std::string& model_dir) {
  if (model_dir.empty()) return std::nullopt;
  std::filesystem::path p = std::filesystem::path(model_dir) / "tokenizer.json";
  if (!std::filesystem::exists(p)) return std::nullopt;
  return Tokenizer::from_file(p.string());
}

Tokenizer require_tokenizer(const std::optional<Tokenizer>& tok, const std::string& model_dir, const char* flag) {
  if (!tok) {
    throw make_error<InvalidArgument>("cli", flag, " needs a tokenizer, but ",
                                      model_dir.empty() ? std::string("the built-in model") : model_dir,
                                      " has no tokenizer.json; pass token ids with --prompt-ids instead");
  }
  return *tok;
}

}  // namespace

CommandRunner add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate tokens from a prompt");
  struct Flags {
    std::string model_dir, ids_text, prompt, chat, format = "text";
    int64_t max_new_tokens = 16;
    float temperature = 0.f, top_p = 1.f;
    int top_k = 0;
    uint64_t seed = 0;
    std::string premoe_store, premoe_key_layers = "first";
    int keep = 0, premoe_experts_per_token = 0;
    int ep = 1, tp = 1;
    std::string dispatch = "alltoall";
    bool int8_dispatch = false;
    double comm_timeout = 300;
    std::string device = "cpu";
    bool ignore_eos = false;
  };
  auto f = std::make_shared<Flags>();
  cmd->add_option("--model", f->model_dir, "Hugging Face model directory (default: the built-in model)");
  auto* ids_opt = cmd->add_option("--prompt-ids", f->ids_text, "Comma-separated prompt token ids, e.g. 1,2,3");
  auto* prompt_opt = cmd->add_option("--prompt", f->prompt, "Prompt text (encoded with the model's tokenizer)");
  auto* chat_opt = cmd->add_option("--chat", f->chat, "A user message, formatted with the model's chat template");
  ids_opt->excludes(prompt_opt)->excludes(chat_opt);
  prompt_opt->excludes(chat_opt);
  cmd->add_option("--max-new-tokens", f->max_new_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", f->temperature, "0 = greedy; > 0 samples")->capture_default_str();
  cmd->add_option("--top-k", f->top_k, "Sample among the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", f->top_p, "Nucleus sampling mass (1 = off)")->capture_default_str();
  cmd->add_option("--seed", f->seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--format", f->format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  cmd->add_option("--premoe-store", f->premoe_store, "PreMoe pattern store: run with the prompt's task experts only");
  cmd->add_option("--keep", f->keep, "With --premoe-store: experts kept per MoE layer");
  cmd->add_option("--premoe-experts-per-token", f->premoe_experts_per_token, "With --premoe-store: routed top-k");
  cmd->add_option("--premoe-key-layers", f->premoe_key_layers,
                  "With --premoe-store: retrieval key from the first MoE layer (PreMoe) or all of them")
      ->capture_default_str();
  cmd->add_option("--ep", f->ep, "Expert-parallel ranks (run under mpirun -np N)")->capture_default_str();
  cmd->add_option("--tp", f->tp, "Tensor-parallel ranks for attention and dense MLPs (run under mpirun -np N)")
      ->capture_default_str();
  cmd->add_option("--dispatch", f->dispatch, "Token dispatch with --ep: alltoall or allgather")
      ->check(CLI::IsMember({"alltoall", "allgather"}))->capture_default_str();
  cmd->add_flag("--int8-dispatch", f->int8_dispatch,
                "With --ep: send dispatched token rows as int8 with one scale per row (combine stays full width)");
  cmd->add_option("--comm-timeout", f->comm_timeout, "Seconds a collective may wait for a peer before failing")
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", f->ignore_eos, "Generate --max-new-tokens tokens even after end-of-sequence");
  cmd->add_option("--device", f->device, "cpu, or cuda (GPU 0, bf16 weights)")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  return [f, ids_opt, prompt_opt, chat_opt]() {
    if (!ids_opt->count() && !prompt_opt->count() && !chat_opt->count()) {
      throw make_error<InvalidArgument>("cli", "give a prompt with --prompt-ids, --prompt or --chat");
    }
    if (f->max_new_tokens < 0) throw make_error<InvalidArgument>("cli", "--max-new-tokens must be >= 0");
    GenerateOptions opt;
    opt.max_new_tokens = f->max_new_tokens;
    opt.stop_at_eos = !f->ignore_eos;
    opt.sampling = {f->temperature, f->top_k, f->top_p, f->seed};
    validate_sampling(opt.sampling);
    std::optional<Tokenizer> tok = find_tokenizer(resolve_model_dir(f->model_dir));
    std::vector<int64_t> ids;
    if (ids_opt->count()) {
      ids = parse_id_list(f->ids_text, "--prompt-ids");
    } else {
      Tokenizer t = require_tokenizer(tok, f->model_dir, prompt_opt->count() ? "--prompt" : "--chat");
      std::vector<int32_t> enc;
      if (prompt_opt->count()) {
        enc = t.encode(f->prompt, true);
      } else {
        std::filesystem::path cfg = std::filesystem::path(resolve_model_dir(f->model_dir)) / "tokenizer_config.json";
        ChatTemplate chat = ChatTemplate::from_config_file(cfg.string());
        enc = t.encode(chat.render({{"user", f->chat}}, true), false);
      }
      ids.assign(enc.begin(), enc.end());
      if (ids.empty()) throw make_error<InvalidArgument>("cli", "the prompt encodes to no tokens");
    }
    SY_REQUIRE(f->premoe_store.empty() == (f->keep == 0), InvalidArgument, "cli",
               "--premoe-store and --keep go together (--keep M: experts kept per MoE layer)");
    SY_REQUIRE(f->ep >= 1, InvalidArgument, "cli", "--ep must be >= 1 (got ", f->ep, ")");
    SY_REQUIRE(!f->int8_dispatch || f->ep > 1, InvalidArgument, "cli",
               "--int8-dispatch needs expert parallelism (--ep N under mpirun -np N)");
    SY_REQUIRE(f->tp >= 1, InvalidArgument, "cli", "--tp must be >= 1 (got ", f->tp, ")");
    SY_REQUIRE((f->ep == 1 && f->tp == 1) || f->premoe_store.empty(), InvalidArgument, "cli",
               "--ep/--tp and --premoe-store cannot be combined yet");
    SY_REQUIRE(f->ep == 1 || f->tp == 1 || f->ep == f->tp, InvalidArgument, "cli", "--ep ", f->ep, " and --tp ",
               f->tp, " must be equal when both are set: both map onto the same ranks");
    std::unique_ptr<Model> model;
    bool quiet = false;  // ranks other than 0 print nothing
    if (f->ep > 1 || f->tp > 1) {
      const int ranks = std::max(f->ep, f->tp);
      auto world = parallel::world_comm("auto", {f->comm_timeout});
      if (world->size() != ranks) {
        throw make_error<InvalidArgument>("cli", f->ep > 1 ? "--ep " : "--tp ", ranks, " needs exactly ", ranks,
                                          " ranks, but ", world->size(), " were started; run mpirun -np ", ranks,
                                          " switchyard ...");
      }
      LoadOptions load;
      if (!f->model_dir.empty() && f->ep > 1) {
        const int experts = ModelConfig::from_file(f->model_dir).moe.num_experts;
        auto [lo, hi] = Model::expert_range(experts, world->size(), world->rank());
        load.load_expert = [lo = lo, hi = hi](int64_t e) { return e >= lo && e < hi; };
      }
      model = f->model_dir.empty() ? load_model_or_builtin("") : Model::load(f->model_dir, load);
      if (f->ep > 1) {
        moe::DispatcherOptions dispatch;
        dispatch.strategy =
            f->dispatch == "allgather" ? moe::DispatchStrategy::kAllGather : moe::DispatchStrategy::kAllToAll;
        dispatch.int8_payload = f->int8_dispatch;
        model->set_expert_parallel(world, dispatch);
      }
      if (f->tp > 1) model->set_tensor_parallel(world);
      quiet = world->rank() != 0;
    } else if (!f->premoe_store.empty()) {
      model = load_premoe_model(f->model_dir, f->premoe_store, f->keep, f->premoe_experts_per_token, ids,
                                prune::parse_key_layers(f->premoe_key_layers));
    } else {
      model = load_model_or_builtin(f->model_dir);
    }
    check_ids_in_vocab(ids, model->config().vocab_size, "prompt");
    if (f->device == "cuda") {
      SY_REQUIRE(f->tp == 1, InvalidArgument, "cli", "--device cuda and --tp cannot be combined yet");
      model->to_device(Device::kCuda);
    }
    const bool json = f->format == "json";
    bool first = true;
    std::optional<StreamDecoder> stream;
    if (tok) stream.emplace(*tok, true);
    if (!json && !quiet) {
      opt.on_token = [&](int64_t id) {
        if (stream) {
          std::string piece = stream->step(static_cast<int32_t>(id));
          std::fwrite(piece.data(), 1, piece.size(), stdout);
        } else {
          std::printf(first ? "%lld" : " %lld", static_cast<long long>(id));
        }
        std::fflush(stdout);
        first = false;
        return true;
      };
    }
    std::vector<int64_t> out = generate(*model, ids, opt);
    if (quiet) return 0;
    if (json) {
      nlohmann::json j = {{"ids", out}};
      if (tok) {
        std::vector<int32_t> ids32(out.begin(), out.end());
        j["text"] = tok->decode(ids32, true);
      }
      std::printf("%s\n", j.dump().c_str());
    } else {
      if (stream) {
        std::string rest = stream->flush();
        std::fwrite(rest.data(), 1, rest.size(), stdout);
      }
      std::printf("\n");
    }
    return 0;
  };
}

}  // namespace sy::cli
