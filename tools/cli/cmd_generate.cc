// switchyard generate [--model DIR] --prompt-ids 1,2,3 --max-new-tokens N [--temperature T --seed S
//                      --top-k K --top-p P] [--format text|json]
//                      [--premoe-store DIR --keep M [--premoe-experts-per-token K]]  (PreMoe: docs/premoe.md)
// Prints the new token ids: streamed one per line-fragment as text, or one JSON object {"ids": [...]}.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
#include "prune_cli.h"
#include "switchyard/core/error.h"
#include "switchyard/model/generate.h"

namespace sy::cli {

CommandRunner add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate tokens from a prompt");
  struct Flags {
    std::string model_dir, ids_text, format = "text";
    int64_t max_new_tokens = 16;
    float temperature = 0.f, top_p = 1.f;
    int top_k = 0;
    uint64_t seed = 0;
    std::string premoe_store;
    int keep = 0, premoe_experts_per_token = 0;
  };
  auto f = std::make_shared<Flags>();
  cmd->add_option("--model", f->model_dir, "Hugging Face model directory (default: the built-in model)");
  cmd->add_option("--prompt-ids", f->ids_text, "Comma-separated prompt token ids, e.g. 1,2,3")->required();
  cmd->add_option("--max-new-tokens", f->max_new_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", f->temperature, "0 = greedy; > 0 samples")->capture_default_str();
  cmd->add_option("--top-k", f->top_k, "Sample among the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", f->top_p, "Nucleus sampling mass (1 = off)")->capture_default_str();
  cmd->add_option("--seed", f->seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--format", f->format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  cmd->add_option("--premoe-store", f->premoe_store, "PreMoe pattern store: run with the prompt's task experts only");
  cmd->add_option("--keep", f->keep, "With --premoe-store: experts kept per MoE layer");
  cmd->add_option("--premoe-experts-per-token", f->premoe_experts_per_token, "With --premoe-store: routed top-k");
  return [f]() {
    std::vector<int64_t> ids = parse_id_list(f->ids_text, "--prompt-ids");
    if (f->max_new_tokens < 0) throw make_error<InvalidArgument>("cli", "--max-new-tokens must be >= 0");
    GenerateOptions opt;
    opt.max_new_tokens = f->max_new_tokens;
    opt.sampling = {f->temperature, f->top_k, f->top_p, f->seed};
    validate_sampling(opt.sampling);
    SY_REQUIRE(f->premoe_store.empty() == (f->keep == 0), InvalidArgument, "cli",
               "--premoe-store and --keep go together (--keep M: experts kept per MoE layer)");
    auto model = f->premoe_store.empty()
                     ? load_model_or_builtin(f->model_dir)
                     : load_premoe_model(f->model_dir, f->premoe_store, f->keep, f->premoe_experts_per_token, ids);
    check_ids_in_vocab(ids, model->config().vocab_size, "--prompt-ids");
    const bool json = f->format == "json";
    bool first = true;
    if (!json) {
      opt.on_token = [&](int64_t id) {
        std::printf(first ? "%lld" : " %lld", static_cast<long long>(id));
        std::fflush(stdout);
        first = false;
        return true;
      };
    }
    std::vector<int64_t> out = generate(*model, ids, opt);
    if (json) {
      nlohmann::json j = {{"ids", out}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("\n");
    }
    return 0;
  };
}

}  // namespace sy::cli
