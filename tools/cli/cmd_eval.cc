// switchyard eval --model DIR (--data-ids FILE.npy | --data FILE.npy [--eos-id N]) --seq-len T
//                  [--batch-size B] [--max-batches N] [--format text|json]
// Mean cross-entropy (and perplexity) of a model on consecutive windows of T+1 ids, as the trainer reads them.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "switchyard/core/error.h"
#include "switchyard/train/trainer.h"

namespace sy::cli {

CommandRunner add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Validation loss of a model on token ids");
  struct Flags {
    std::string model_dir, data_ids, data, format = "text";
    int64_t seq_len = 128, batch_size = 8, max_batches = 0, eos_id = -1;
  };
  auto f = std::make_shared<Flags>();
  cmd->add_option("--model", f->model_dir, "Hugging Face model directory")->required();
  auto* ids_opt = cmd->add_option("--data-ids", f->data_ids, "Flat token ids (.npy)");
  auto* data_opt = cmd->add_option("--data", f->data, "Packed documents (.npy); boundaries after --eos-id");
  ids_opt->excludes(data_opt);
  cmd->add_option("--eos-id", f->eos_id, "End-of-document id for --data (default: the config's eos_token_id)");
  cmd->add_option("--seq-len", f->seq_len, "Tokens per window")->capture_default_str();
  cmd->add_option("--batch-size", f->batch_size, "Windows per forward pass")->capture_default_str();
  cmd->add_option("--max-batches", f->max_batches, "Stop after N batches (0 = all)")->capture_default_str();
  cmd->add_option("--format", f->format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  return [f, ids_opt, data_opt]() {
    if (!ids_opt->count() && !data_opt->count()) throw make_error<InvalidArgument>("cli", "give --data-ids or --data");
    SY_REQUIRE(f->seq_len >= 1 && f->batch_size >= 1, InvalidArgument, "cli", "--seq-len and --batch-size must be >= 1");
    auto model = train::TrainableModel::from_dir(f->model_dir);
    int64_t eos = -1;
    if (data_opt->count()) {
      const auto& e = model->config().eos_token_ids;
      eos = f->eos_id >= 0 ? f->eos_id : e.empty() ? -1 : e[0];
      SY_REQUIRE(eos >= 0, InvalidArgument, "cli", "--data needs --eos-id or eos_token_id in config.json");
    }
    auto data = train::FlatIdSource::from_npy(ids_opt->count() ? f->data_ids : f->data, eos);
    const int64_t per_batch = f->batch_size * (f->seq_len + 1);
    int64_t batches = data->size() / per_batch;
    if (f->max_batches > 0) batches = std::min(batches, f->max_batches);
    SY_REQUIRE(batches > 0, InvalidArgument, "cli", "the data holds ", data->size(), " ids, fewer than one batch of ",
               per_batch);
    double total = 0;
    int64_t count = 0;
    std::vector<std::vector<int64_t>> inputs, targets;
    for (int64_t b = 0; b < batches; ++b) {
      data->batch(b, f->batch_size, f->seq_len, inputs, targets);
      const auto docs = data->doc_starts(inputs);
      int64_t n = 0;
      total += model->evaluate(inputs, targets, &n, docs.empty() ? nullptr : &docs);
      count += n;
    }
    const double loss = total / static_cast<double>(count);
    if (f->format == "json") {
      std::printf("%s\n", nlohmann::json({{"loss", loss}, {"perplexity", std::exp(loss)}, {"tokens", count}}).dump().c_str());
    } else {
      std::printf("loss %.5f  perplexity %.3f  tokens %lld\n", loss, std::exp(loss), static_cast<long long>(count));
    }
    return 0;
  };
}

}  // namespace sy::cli
