// switchyard train (--model DIR | --config config.json) (--data-ids FILE.npy | --data FILE.npy) --steps N
//   --batch-size B --seq-len T --lr LR [--optimizer adamw --beta1 --beta2 --eps --weight-decay --grad-clip
//   --warmup W --schedule constant|cosine|wsd --min-lr] [--aux-loss-coef --aux-loss-per-sequence --z-loss-coef
//   --bias-update-rate] [--save DIR --save-every K] [--resume DIR] [--seed S] [--log-format text|json]
// Prints one log line per step (JSON lines with --log-format json) and a progress bar on a terminal.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "switchyard/core/error.h"
#include "switchyard/io/model_config.h"
#include "switchyard/train/trainer.h"

namespace sy::cli {

CommandRunner add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a (MoE) model on token ids");
  struct Flags {
    std::string model_dir, config, data_ids, data, save, resume, optimizer = "adamw", schedule = "constant";
    std::string log_format = "text", recompute = "none";
    int64_t steps = 1, batch_size = 1, seq_len = 16, warmup = 0, save_every = 0;
    uint64_t seed = 0;
    int64_t eos_id = -1;
    double lr = 1e-3, min_lr = 0, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, grad_clip = 1.0;
    double aux = 0, z = 0, bias_rate = 0;
    bool aux_per_seq = false;
  };
  auto f = std::make_shared<Flags>();
  auto* model_opt = cmd->add_option("--model", f->model_dir, "Start from this Hugging Face model directory");
  auto* config_opt = cmd->add_option("--config", f->config, "Start from a fresh initialisation of this config.json");
  model_opt->excludes(config_opt);
  auto* ids_opt = cmd->add_option("--data-ids", f->data_ids, "Flat token-id array (.npy int32/int64), read in order");
  auto* data_opt = cmd->add_option("--data", f->data,
                                   "Packed documents (.npy of ids from `switchyard data prepare`): a document ends at "
                                   "each end-of-document id; attention and positions respect the boundaries");
  cmd->add_option("--eos-id", f->eos_id, "End-of-document id for --data (default: the config's eos_token_id)");
  ids_opt->excludes(data_opt);
  cmd->add_option("--steps", f->steps, "Optimizer steps")->capture_default_str();
  cmd->add_option("--batch-size", f->batch_size, "Sequences per step")->capture_default_str();
  cmd->add_option("--seq-len", f->seq_len, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--lr", f->lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr", f->min_lr, "Final learning rate of cosine/wsd schedules")->capture_default_str();
  cmd->add_option("--schedule", f->schedule, "constant, cosine or wsd")
      ->check(CLI::IsMember({"constant", "cosine", "wsd"}))->capture_default_str();
  cmd->add_option("--warmup", f->warmup, "Linear warmup steps")->capture_default_str();
  cmd->add_option("--optimizer", f->optimizer, "adamw")->check(CLI::IsMember({"adamw"}))->capture_default_str();
  cmd->add_option("--beta1", f->beta1)->capture_default_str();
  cmd->add_option("--beta2", f->beta2)->capture_default_str();
  cmd->add_option("--eps", f->eps)->capture_default_str();
  cmd->add_option("--weight-decay", f->weight_decay)->capture_default_str();
  cmd->add_option("--grad-clip", f->grad_clip, "Global gradient-norm clip (0 = off)")->capture_default_str();
  cmd->add_option("--aux-loss-coef", f->aux, "Load-balancing loss coefficient")->capture_default_str();
  cmd->add_flag("--aux-loss-per-sequence", f->aux_per_seq, "Balance per sequence instead of per micro-batch");
  cmd->add_option("--z-loss-coef", f->z, "Router z-loss coefficient")->capture_default_str();
  cmd->add_option("--bias-update-rate", f->bias_rate, "Aux-loss-free score-bias update rate")->capture_default_str();
  cmd->add_option("--recompute", f->recompute,
                  "Activations to recompute in backward instead of keeping: none, selective (norms and expert "
                  "activations) or full (whole layers); gradients are identical")
      ->check(CLI::IsMember({"none", "selective", "full"}))->capture_default_str();
  cmd->add_option("--save", f->save, "Checkpoint directory");
  cmd->add_option("--save-every", f->save_every, "Checkpoint every K steps (0 = at the end)")->capture_default_str();
  cmd->add_option("--resume", f->resume, "Resume from a checkpoint directory");
  cmd->add_option("--seed", f->seed, "Initialisation seed for --config")->capture_default_str();
  cmd->add_option("--log-format", f->log_format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  return [f, model_opt, config_opt, ids_opt, data_opt]() {
    if (!model_opt->count() && !config_opt->count()) {
      throw make_error<InvalidArgument>("cli", "give --model DIR or --config config.json");
    }
    if (!ids_opt->count() && !data_opt->count()) throw make_error<InvalidArgument>("cli", "give --data-ids or --data");
    std::unique_ptr<train::TrainableModel> model;
    if (model_opt->count()) {
      model = train::TrainableModel::from_dir(f->model_dir);
    } else {
      ModelConfig cfg = ModelConfig::from_file(f->config);
      model = train::TrainableModel::from_config(cfg, f->seed);
      std::ifstream in(f->config);
      std::stringstream text;
      text << in.rdbuf();
      model->set_config_json(text.str());
    }
    train::TrainerOptions o;
    o.steps = f->steps;
    o.batch_size = f->batch_size;
    o.seq_len = f->seq_len;
    o.adamw = {f->lr, f->beta1, f->beta2, f->eps, f->weight_decay};
    o.lr.lr = f->lr;
    o.lr.min_lr = f->min_lr;
    o.lr.warmup = f->warmup;
    o.lr.total_steps = f->steps;
    o.lr.schedule = f->schedule == "cosine" ? train::LrSchedule::kCosine
                    : f->schedule == "wsd"  ? train::LrSchedule::kWsd
                                            : train::LrSchedule::kConstant;
    o.grad_clip = f->grad_clip;
    o.step_options = {f->aux, f->aux_per_seq, f->z, train::parse_recompute(f->recompute)};
    o.bias_update_rate = f->bias_rate;
    o.save_dir = f->save;
    o.save_every = f->save_every;
    SY_REQUIRE(f->lr > 0 && f->beta1 >= 0 && f->beta1 < 1 && f->beta2 >= 0 && f->beta2 < 1 && f->eps > 0 &&
                   f->weight_decay >= 0 && f->grad_clip >= 0 && f->warmup >= 0 && f->aux >= 0 && f->z >= 0 &&
                   f->bias_rate >= 0,
               InvalidArgument, "cli", "optimizer flags out of range (need lr > 0, 0 <= beta < 1, eps > 0, others >= 0)");
    train::Trainer trainer(std::move(model), o);
    if (!f->resume.empty()) trainer.resume(f->resume);
    int64_t eos = -1;
    if (data_opt->count()) {
      eos = f->eos_id >= 0 ? f->eos_id
            : trainer.model().config().eos_token_ids.empty() ? -1 : trainer.model().config().eos_token_ids[0];
      SY_REQUIRE(eos >= 0, InvalidArgument, "cli", "--data needs an end-of-document id: pass --eos-id or set "
                                                   "eos_token_id in config.json");
    }
    auto data = train::FlatIdSource::from_npy(ids_opt->count() ? f->data_ids : f->data, eos);
    const bool json = f->log_format == "json";
    const bool tty = ::isatty(STDERR_FILENO);
    trainer.run(*data, [&](const train::StepLog& log) {
      double worst = 0;
      nlohmann::json load = nlohmann::json::array();
      for (size_t l = 0; l < log.tokens_per_expert.size(); ++l) {
        const auto& t = log.tokens_per_expert[l];
        if (t.empty()) continue;
        double mean = 0, mx = 0;
        for (int64_t c : t) {
          mean += static_cast<double>(c) / t.size();
          mx = std::max(mx, static_cast<double>(c));
        }
        double ratio = mean > 0 ? mx / mean : 0;
        worst = std::max(worst, ratio);
        load.push_back({{"layer", l}, {"tokens", t}, {"max_over_mean", ratio}});
      }
      if (json) {
        nlohmann::json j = {{"step", log.step}, {"loss", log.loss}, {"aux_loss", log.aux_loss}, {"z_loss", log.z_loss},
                            {"grad_norm", log.grad_norm}, {"lr", log.lr}, {"tokens_per_s", log.tokens_per_s},
                            {"saved_activation_bytes", log.saved_activation_bytes},
                            {"peak_activation_bytes", log.peak_activation_bytes}, {"expert_load", load}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("step %lld  loss %.5f  aux %.4f  grad_norm %.4f  lr %.3g  tok/s %.0f  max/mean load %.2f  "
                    "activations %.1f MiB\n",
                    static_cast<long long>(log.step), log.loss, log.aux_loss, log.grad_norm, log.lr, log.tokens_per_s, worst,
                    static_cast<double>(log.peak_activation_bytes) / (1 << 20));
      }
      std::fflush(stdout);
      if (tty) {
        const int width = 30, done = static_cast<int>(width * log.step / std::max<int64_t>(1, f->steps));
        std::fprintf(stderr, "\r[%s%s] %lld/%lld", std::string(done, '#').c_str(), std::string(width - done, ' ').c_str(),
                     static_cast<long long>(log.step), static_cast<long long>(f->steps));
        if (log.step == f->steps) std::fprintf(stderr, "\n");
      }
    });
    return 0;
  };
}

}  // namespace sy::cli
