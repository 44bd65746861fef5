// switchyard generate [--model DIR] --prompt-ids 1,2,3 --max-new-tokens N [--temperature T --seed S
//                      --top-k K --top-p P] [--format text|json]
// Prints the new token ids: streamed one per line-fragment as text, or one JSON object {"ids": [...]}.
// Expert parallelism: mpirun -np N switchyard generate --model DIR --ep N [--dispatch alltoall|allgather]
// [--comm-timeout S]: each rank loads only its experts; rank 0 prints.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
#include "switchyard/core/error.h"
#include "switchyard/model/generate.h"
#include "switchyard/moe/token_dispatcher.h"
#include "switchyard/parallel/comm.h"

namespace sy::cli {

CommandRunner add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate tokens from a prompt");
  struct Flags {
    std::string model_dir, ids_text, format = "text";
    int64_t max_new_tokens = 16;
    float temperature = 0.f, top_p = 1.f;
    int top_k = 0;
    uint64_t seed = 0;
    int ep = 1;
    std::string dispatch = "alltoall";
    double comm_timeout = 300;
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
  cmd->add_option("--ep", f->ep, "Expert-parallel ranks (run under mpirun -np N)")->capture_default_str();
  cmd->add_option("--dispatch", f->dispatch, "Token dispatch with --ep: alltoall or allgather")
      ->check(CLI::IsMember({"alltoall", "allgather"}))->capture_default_str();
  cmd->add_option("--comm-timeout", f->comm_timeout, "Seconds a collective may wait for a peer before failing")
      ->capture_default_str();
  return [f]() {
    std::vector<int64_t> ids = parse_id_list(f->ids_text, "--prompt-ids");
    if (f->max_new_tokens < 0) throw make_error<InvalidArgument>("cli", "--max-new-tokens must be >= 0");
    GenerateOptions opt;
    opt.max_new_tokens = f->max_new_tokens;
    opt.sampling = {f->temperature, f->top_k, f->top_p, f->seed};
    validate_sampling(opt.sampling);
    std::unique_ptr<Model> model;
    bool quiet = false;  // ranks other than 0 print nothing
    if (f->ep > 1) {
      auto world = parallel::world_comm("auto", {f->comm_timeout});
      if (world->size() != f->ep) {
        throw make_error<InvalidArgument>("cli", "--ep ", f->ep, " needs exactly ", f->ep, " ranks, but ",
                                          world->size(), " were started; run mpirun -np ", f->ep, " switchyard ...");
      }
      LoadOptions load;
      if (!f->model_dir.empty()) {
        const int experts = ModelConfig::from_file(f->model_dir).moe.num_experts;
        auto [first, last] = Model::expert_range(experts, world->size(), world->rank());
        load.load_expert = [first = first, last = last](int64_t e) { return e >= first && e < last; };
      }
      model = f->model_dir.empty() ? load_model_or_builtin("") : Model::load(f->model_dir, load);
      moe::DispatcherOptions dispatch;
      dispatch.strategy = f->dispatch == "allgather" ? moe::DispatchStrategy::kAllGather : moe::DispatchStrategy::kAllToAll;
      model->set_expert_parallel(world, dispatch);
      quiet = world->rank() != 0;
    } else {
      SY_REQUIRE(f->ep == 1, InvalidArgument, "cli", "--ep must be >= 1 (got ", f->ep, ")");
      model = load_model_or_builtin(f->model_dir);
    }
    check_ids_in_vocab(ids, model->config().vocab_size, "--prompt-ids");
    const bool json = f->format == "json";
    bool first = true;
    if (!json && !quiet) {
      opt.on_token = [&](int64_t id) {
        std::printf(first ? "%lld" : " %lld", static_cast<long long>(id));
        std::fflush(stdout);
        first = false;
        return true;
      };
    }
    std::vector<int64_t> out = generate(*model, ids, opt);
    if (quiet) return 0;
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
