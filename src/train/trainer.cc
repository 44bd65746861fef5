// Trainer: the loop (batch, forward/backward, clip, AdamW, score-bias update, log) and checkpoints.
#include "switchyard/train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/io/npy.h"
#include "switchyard/io/safetensors.h"

namespace sy::train {

namespace fs = std::filesystem;

std::unique_ptr<FlatIdSource> FlatIdSource::from_npy(const std::string& path, int64_t eos_id) {
  Tensor t = read_npy(path);
  SY_REQUIRE(t.dtype() == DType::kI32 || t.dtype() == DType::kI64, FormatError, "train", path,
             " must hold int32 or int64 token ids, got ", dtype_name(t.dtype()));
  std::vector<int64_t> ids(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) ids[i] = t.dtype() == DType::kI32 ? t.i32()[i] : t.i64()[i];
  return std::make_unique<FlatIdSource>(std::move(ids), eos_id);
}

std::vector<std::vector<int64_t>> FlatIdSource::doc_starts(const std::vector<std::vector<int64_t>>& inputs) const {
  std::vector<std::vector<int64_t>> out(inputs.size());
  if (eos_id_ < 0) return out;
  for (size_t b = 0; b < inputs.size(); ++b) {
    for (size_t i = 1; i < inputs[b].size(); ++i) {
      if (inputs[b][i - 1] == eos_id_) out[b].push_back(static_cast<int64_t>(i));
    }
  }
  return out;
}

void FlatIdSource::batch(int64_t step, int64_t batch_size, int64_t seq_len, std::vector<std::vector<int64_t>>& inputs,
                         std::vector<std::vector<int64_t>>& targets) {
  const int64_t row = seq_len + 1;
  const int64_t need = (step + 1) * batch_size * row;
  SY_REQUIRE(need <= static_cast<int64_t>(ids_.size()), InvalidArgument, "train", "step ", step + 1, " needs ", need,
             " ids but the data holds ", ids_.size(), "; use fewer --steps or more data");
  inputs.assign(batch_size, {});
  targets.assign(batch_size, {});
  for (int64_t i = 0; i < batch_size; ++i) {
    const int64_t* p = ids_.data() + (step * batch_size + i) * row;
    inputs[i].assign(p, p + seq_len);
    targets[i].assign(p + 1, p + row);
  }
}

Trainer::Trainer(std::unique_ptr<TrainableModel> model, const TrainerOptions& options)
    : model_(std::move(model)), options_(options), optimizer_(options.adamw) {
  SY_REQUIRE(options.steps >= 0 && options.batch_size >= 1 && options.seq_len >= 1, InvalidArgument, "train",
             "--steps must be >= 0 and --batch-size, --seq-len >= 1");
}

void Trainer::run(BatchSource& data, const std::function<void(const StepLog&)>& on_step) {
  // Gradients the optimizer sees: every parameter except buffers (router score biases).
  std::map<std::string, Tensor> grads;
  for (auto& [name, g] : model_->grads()) {
    if (!model_->is_buffer(name)) grads[name] = g;
  }
  std::vector<std::vector<int64_t>> inputs, targets;
  while (step_ < options_.steps) {
    const auto start = std::chrono::steady_clock::now();
    data.batch(step_, options_.batch_size, options_.seq_len, inputs, targets);
    model_->zero_grads();
    const std::vector<std::vector<int64_t>> docs = data.doc_starts(inputs);
    StepStats stats = model_->forward_backward(inputs, targets, options_.step_options, docs.empty() ? nullptr : &docs);
    StepLog log;
    log.grad_norm = clip_grad_norm(grads, options_.grad_clip);
    log.lr = learning_rate(options_.lr, step_);
    optimizer_.step(model_->params(), grads, log.lr);
    if (options_.bias_update_rate > 0) {
      // Aux-loss-free balancing (DeepSeek-V3): raise the bias of under-loaded experts, lower the others.
      const ModelConfig& cfg = model_->config();
      for (int l = 0; l < cfg.num_layers; ++l) {
        if (stats.tokens_per_expert[l].empty()) continue;
        auto it = model_->params().find("model.layers." + std::to_string(l) + ".mlp.gate.e_score_correction_bias");
        if (it == model_->params().end()) continue;
        const auto& load = stats.tokens_per_expert[l];
        double mean = 0;
        for (int64_t c : load) mean += static_cast<double>(c) / load.size();
        for (size_t e = 0; e < load.size(); ++e) {
          const double diff = mean - static_cast<double>(load[e]);
          it->second.f32()[e] += static_cast<float>(options_.bias_update_rate * ((diff > 0) - (diff < 0)));
        }
      }
    }
    ++step_;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log.step = step_;
    log.loss = stats.loss;
    log.aux_loss = stats.aux_loss;
    log.z_loss = stats.z_loss;
    log.tokens_per_s = static_cast<double>(stats.num_targets) / std::max(seconds, 1e-9);
    log.tokens_per_expert = std::move(stats.tokens_per_expert);
    log.saved_activation_bytes = stats.saved_activation_bytes;
    log.peak_activation_bytes = stats.peak_activation_bytes;
    if (on_step) on_step(log);
    if (!options_.save_dir.empty() && options_.save_every > 0 && step_ % options_.save_every == 0) save(options_.save_dir);
  }
  if (!options_.save_dir.empty() && (options_.save_every == 0 || step_ % options_.save_every != 0)) save(options_.save_dir);
}

namespace {
void write_text_atomic(const fs::path& path, const std::string& text) {
  fs::path tmp = path.string() + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw make_error<IoError>("train", "cannot write ", tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw make_error<IoError>("train", "cannot rename ", tmp.string(), " to ", path.string(), ": ", ec.message());
}
}  // namespace

std::string Trainer::save(const std::string& save_dir) {
  fs::create_directories(save_dir);
  const std::string name = "step-" + std::to_string(step_);
  const fs::path final_dir = fs::path(save_dir) / name;
  const fs::path tmp_dir = fs::path(save_dir) / (".tmp-" + name + "-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir);
  const std::map<std::string, Tensor> checkpoint = model_->checkpoint_params();
  std::vector<std::pair<std::string, Tensor>> params(checkpoint.begin(), checkpoint.end());
  write_safetensors((tmp_dir / "model.safetensors").string(), params, {{"format", "pt"}});
  std::map<std::string, Tensor> state = optimizer_.state();
  write_safetensors((tmp_dir / "optimizer.safetensors").string(), {state.begin(), state.end()});
  write_text_atomic(tmp_dir / "config.json", model_->config_json());
  nlohmann::json ts = {{"step", step_}, {"optimizer_steps", optimizer_.steps()}};
  write_text_atomic(tmp_dir / "trainer_state.json", ts.dump(2) + "\n");
  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) throw make_error<IoError>("train", "cannot rename ", tmp_dir.string(), " to ", final_dir.string(), ": ", ec.message());
  write_text_atomic(fs::path(save_dir) / "latest", name + "\n");
  return final_dir.string();
}

void Trainer::resume(const std::string& dir) {
  fs::path step_dir = dir;
  if (fs::exists(fs::path(dir) / "latest")) {
    std::ifstream in(fs::path(dir) / "latest");
    std::string name;
    in >> name;
    step_dir = fs::path(dir) / name;
  }
  SY_REQUIRE(fs::exists(step_dir / "trainer_state.json"), IoError, "train", "no checkpoint in ", dir,
             " (expected DIR/latest or DIR/trainer_state.json)");
  nlohmann::json ts;
  try {
    std::ifstream in(step_dir / "trainer_state.json");
    ts = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw make_error<FormatError>("train", (step_dir / "trainer_state.json").string(), " is not valid JSON: ", e.what());
  }
  SafetensorsFile weights((step_dir / "model.safetensors").string());
  std::map<std::string, Tensor> tensors;
  for (const std::string& name : weights.names()) tensors[name] = weights.tensor(name);
  model_->load_checkpoint_params(tensors, step_dir.string());
  SafetensorsFile opt((step_dir / "optimizer.safetensors").string());
  std::map<std::string, Tensor> state;
  for (const std::string& name : opt.names()) state[name] = opt.tensor(name);
  optimizer_.load_state(state, ts.value("optimizer_steps", int64_t{0}));
  step_ = ts.value("step", int64_t{0});
}

}  // namespace sy::train
