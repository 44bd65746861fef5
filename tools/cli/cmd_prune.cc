// switchyard prune: PreMoe expert pruning (docs/premoe.md).
//   prune scores  --model DIR --prompt-ids 1,2,3 [--top-k 1] [--threshold R] [--format json|text]
//   prune profile --model DIR --task NAME --data FILE [--top-k 1] [--threshold R] --store DIR
//   prune build   --model DIR --store DIR --task NAME --keep M [--experts-per-token K] --output OUT
//   prune match   --model DIR --store DIR --prompt-ids 1,2,3 [--key-layers first|all] [--format json|text]
// Flags map onto the public prune API; no logic lives here.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
#include "prune_cli.h"
#include "switchyard/core/error.h"
#include "switchyard/prune/fingerprint.h"
#include "switchyard/prune/pruned_checkpoint.h"
#include "switchyard/prune/store.h"
#include "switchyard/prune/taer.h"
#include "switchyard/prune/tcess.h"
#include "switchyard/prune/token_file.h"

namespace sy::cli {

namespace {

void add_tcess_flags(CLI::App* cmd, prune::TcessOptions& o) {
  cmd->add_option("--top-k", o.top_k, "Experts marked per token, by raw router logit (PreMoe: 1)")->capture_default_str();
  cmd->add_option("--threshold", o.threshold, "Also require softmax probability > R (0 = off)")->capture_default_str();
}

void check_all_ids(const std::vector<std::vector<int64_t>>& seqs, int64_t vocab, const std::string& what) {
  for (const auto& s : seqs) check_ids_in_vocab(s, vocab, what.c_str());
}

}  // namespace

std::unique_ptr<Model> load_premoe_model(const std::string& model_dir, const std::string& store_dir, int keep,
                                         int experts_per_token, const std::vector<int64_t>& prompt,
                                         prune::KeyLayers key_layers) {
  SY_REQUIRE(!model_dir.empty(), InvalidArgument, "prune", "--premoe-store needs --model DIR (the profiled model)");
  SY_REQUIRE(keep > 0, InvalidArgument, "prune", "--premoe-store needs --keep M, the experts to keep per layer");
  auto start = std::chrono::steady_clock::now();
  prune::PrunedModel p = prune::load_pruned_for_prompt(model_dir, store_dir, keep, experts_per_token, prompt, key_layers);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr,
               "[prune] matched task \"%s\" (L2 distance %.6g, %s-layer key); keeping %d experts per MoE layer "
               "(%.1f ms)\n",
               p.match.task.c_str(), p.match.distance, prune::key_layers_name(key_layers), keep, ms);
  return std::move(p.model);
}

CommandRunner add_prune_command(CLI::App& app) {
  auto* prune = app.add_subcommand("prune", "PreMoe: score, profile, store and prune experts per task");
  prune->require_subcommand(1);
  struct Flags {
    std::string model_dir, ids_text, format = "json", task, data, store, output, key_layers = "first";
    prune::TcessOptions tcess;
    int keep = 0, experts_per_token = 0;
  };
  auto f = std::make_shared<Flags>();

  auto* scores = prune->add_subcommand("scores", "Print TCESS per MoE layer for the given tokens");
  scores->add_option("--model", f->model_dir, "Hugging Face model directory")->required();
  scores->add_option("--prompt-ids", f->ids_text, "Comma-separated token ids, e.g. 1,2,3")->required();
  add_tcess_flags(scores, f->tcess);
  scores->add_option("--format", f->format, "json or text")->check(CLI::IsMember({"json", "text"}))->capture_default_str();

  auto* profile = prune->add_subcommand("profile", "Add or replace a task's scores and expert ranking in a store");
  profile->add_option("--model", f->model_dir, "Hugging Face model directory")->required();
  profile->add_option("--task", f->task, "Task name")->required();
  profile->add_option("--data", f->data, "Calibration token ids: text (one sequence per line) or .npy")->required();
  add_tcess_flags(profile, f->tcess);
  profile->add_option("--store", f->store, "Pattern store directory (created if missing)")->required();

  auto* build = prune->add_subcommand("build", "Write a checkpoint with only a task's top-M experts per layer");
  build->add_option("--model", f->model_dir, "Hugging Face model directory")->required();
  build->add_option("--store", f->store, "Pattern store directory")->required();
  build->add_option("--task", f->task, "Task name in the store")->required();
  build->add_option("--keep", f->keep, "Experts kept per MoE layer (M)")->required();
  build->add_option("--experts-per-token", f->experts_per_token, "Routed experts per token (default: the model's)");
  build->add_option("--output", f->output, "New output directory")->required();

  auto* match = prune->add_subcommand("match", "Retrieve the stored task nearest to a prompt (TAER)");
  match->add_option("--model", f->model_dir, "Hugging Face model directory")->required();
  match->add_option("--store", f->store, "Pattern store directory")->required();
  match->add_option("--prompt-ids", f->ids_text, "Comma-separated token ids, e.g. 1,2,3")->required();
  match->add_option("--key-layers", f->key_layers, "Retrieval key: first MoE layer (PreMoe) or all MoE layers")
      ->capture_default_str();
  match->add_option("--format", f->format, "json or text")->check(CLI::IsMember({"json", "text"}))->capture_default_str();

  return [=]() {
    if (scores->parsed()) {
      std::vector<int64_t> ids = parse_id_list(f->ids_text, "--prompt-ids");
      auto model = Model::load(f->model_dir);
      check_ids_in_vocab(ids, model->config().vocab_size, "--prompt-ids");
      prune::TaskScores s = prune::compute_tcess(*model, {ids}, f->tcess);
      nlohmann::json layers = nlohmann::json::array();
      for (const prune::LayerScores& ls : s.layers) layers.push_back({{"layer", ls.layer}, {"scores", ls.scores}});
      if (f->format == "json") {
        nlohmann::json j = {{"layers", layers}, {"num_tokens", s.num_tokens}, {"top_k", f->tcess.top_k},
                            {"threshold", f->tcess.threshold}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        for (const prune::LayerScores& ls : s.layers) {
          std::printf("layer %d:", ls.layer);
          for (double v : ls.scores) std::printf(" %.6g", v);
          std::printf("\n");
        }
      }
      return 0;
    }
    if (profile->parsed()) {
      std::vector<std::vector<int64_t>> seqs = prune::read_token_file(f->data);
      ModelConfig config = ModelConfig::from_file(f->model_dir);
      prune::TaskStore store =
          prune::TaskStore::open_or_create(f->store, prune::describe_model(f->model_dir, config), f->tcess);
      auto model = Model::load(f->model_dir);
      check_all_ids(seqs, model->config().vocab_size, "--data " + f->data);
      prune::TaskScores s = prune::compute_tcess(*model, seqs, f->tcess);
      store.put(prune::make_task(f->task, s, f->data));
      store.save();
      std::printf("profiled task \"%s\": %lld tokens in %zu sequences, %zu MoE layers; store %s holds %zu tasks\n",
                  f->task.c_str(), static_cast<long long>(s.num_tokens), seqs.size(), s.layers.size(),
                  f->store.c_str(), store.tasks().size());
      return 0;
    }
    if (build->parsed()) {
      ModelConfig config = ModelConfig::from_file(f->model_dir);
      prune::check_keep(config, f->keep, f->experts_per_token);
      prune::TaskStore store = prune::TaskStore::load(f->store);
      prune::StoreModel described = prune::describe_model(f->model_dir, config);
      store.check_model(described);
      prune::ExpertPattern pattern =
          prune::select_experts(config, store.task(f->task).rankings, f->keep, f->experts_per_token);
      prune::PrunedCheckpointOptions opt{f->experts_per_token, f->task, described.fingerprint};
      prune::write_pruned_checkpoint(f->model_dir, config, pattern, opt, f->output);
      auto check = Model::load(f->output);  // shapes and names of the result, no weight bytes read
      std::printf("wrote %s: task \"%s\", %d of %d experts per MoE layer, top-%d\n", f->output.c_str(),
                  f->task.c_str(), f->keep, config.moe.num_experts, check->config().moe.top_k);
      return 0;
    }
    std::vector<int64_t> ids = parse_id_list(f->ids_text, "--prompt-ids");
    ModelConfig config = ModelConfig::from_file(f->model_dir);
    prune::TaskStore store = prune::TaskStore::load(f->store);
    store.check_model(prune::describe_model(f->model_dir, config));
    auto model = Model::load(f->model_dir);
    check_ids_in_vocab(ids, config.vocab_size, "--prompt-ids");
    const prune::KeyLayers key_layers = prune::parse_key_layers(f->key_layers);
    const auto start = std::chrono::steady_clock::now();
    prune::RetrievalResult r = prune::retrieve_task(*model, store, ids, key_layers);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (f->format == "json") {
      // retrieval_ms: the prompt's key (the probe forward pass) plus the nearest-key search, in this process.
      nlohmann::json j = {{"task", r.task}, {"distance", r.distance}, {"key_layers", f->key_layers},
                          {"retrieval_ms", ms}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%s %.6g (%.2f ms)\n", r.task.c_str(), r.distance, ms);
    }
    return 0;
  };
}

}  // namespace sy::cli
