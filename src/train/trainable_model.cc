// TrainableModel construction: f32 copies of the checkpoint, zero gradients, and ModelWeights views of both.
#include "switchyard/train/trainable_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"
#include "switchyard/model/model.h"
#include "switchyard/model/tensor_source.h"
#include "param_layout.h"

namespace sy::train {

namespace {

std::map<std::string, Tensor> zeros_like(const std::map<std::string, Tensor>& params) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : params) out[name] = Tensor::zeros(t.shape(), DType::kF32);
  return out;
}

}  // namespace

TrainableModel::TrainableModel(ModelConfig config, std::map<std::string, Tensor> params)
    : config_(std::move(config)), params_(std::move(params)) {
  for (auto& [name, t] : params_) {
    if (t.dtype() != DType::kF32 || !t.is_contiguous() || !t.storage()->owned()) t = t.to(DType::kF32);
  }
  params_ = to_training_layout(config_, std::move(params_));
  grads_ = zeros_like(params_);
  w_ = load_model_weights(config_, MapSource(params_));
  g_ = load_model_weights(config_, MapSource(grads_));
}

std::unique_ptr<TrainableModel> TrainableModel::from_dir(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) {
    throw make_error<IoError>("train", "model directory \"", dir, "\" does not exist or is not a directory");
  }
  ModelConfig cfg = ModelConfig::from_file(dir);
  SafetensorsCheckpoint ck(dir);
  std::map<std::string, Tensor> params;
  for (const std::string& name : ck.names()) params[name] = ck.tensor(name).to(DType::kF32);
  auto model = std::make_unique<TrainableModel>(std::move(cfg), std::move(params));
  std::ifstream in(std::filesystem::path(dir) / "config.json");
  std::stringstream text;
  text << in.rdbuf();
  model->set_config_json(text.str());
  return model;
}

bool TrainableModel::is_buffer(const std::string& name) const {
  return name.find("e_score_correction_bias") != std::string::npos;
}

std::map<std::string, Tensor> TrainableModel::checkpoint_params() const {
  return to_checkpoint_layout(config_, params_);
}

std::map<std::string, Tensor> TrainableModel::checkpoint_grads() const {
  return to_checkpoint_layout(config_, grads_);
}

void TrainableModel::load_checkpoint_params(const std::map<std::string, Tensor>& tensors, const std::string& where) {
  std::map<std::string, Tensor> f32;
  for (const auto& [name, t] : tensors) {
    auto it = params_.find(name);
    if (it != params_.end()) {
      SY_REQUIRE(t.shape() == it->second.shape(), FormatError, "train", "checkpoint tensor \"", name, "\" in ", where,
                 " has shape ", shape_str(t.shape()), ", the model ", shape_str(it->second.shape()));
    }
    f32[name] = t.to(DType::kF32);
  }
  f32 = to_training_layout(config_, std::move(f32));
  for (auto& [name, p] : params_) {
    auto it = f32.find(name);
    SY_REQUIRE(it != f32.end(), FormatError, "train", "checkpoint ", where, " lacks \"", name, "\"");
    SY_REQUIRE(it->second.shape() == p.shape(), FormatError, "train", "checkpoint tensor \"", name, "\" in ", where,
               " has shape ", shape_str(it->second.shape()), ", the model ", shape_str(p.shape()));
    std::copy(it->second.f32(), it->second.f32() + p.numel(), p.f32());
  }
}

void TrainableModel::zero_grads() {
  for (auto& [name, g] : grads_) std::fill(g.f32(), g.f32() + g.numel(), 0.f);
}

}  // namespace sy::train

namespace sy::train {

std::unique_ptr<TrainableModel> TrainableModel::from_config(const ModelConfig& config, uint64_t seed, float init_std) {
  CreatingSource source;
  load_model_weights(config, source);
  // Deterministic normal values from a splitmix64 stream (Box-Muller), in name order.
  uint64_t state = seed ^ 0x5eedull;
  auto uniform = [&state]() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (static_cast<double>((z ^ (z >> 31)) >> 11) + 0.5) * 0x1.0p-53;
  };
  for (auto& [name, t] : source.tensors()) {
    const bool is_norm = name.find("norm.weight") != std::string::npos || name.find("layernorm") != std::string::npos;
    const bool is_zero = name.find(".bias") != std::string::npos || name.find("e_score_correction_bias") != std::string::npos;
    float* p = t.f32();
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (is_norm) p[i] = 1.f;
      else if (is_zero) p[i] = 0.f;
      else p[i] = static_cast<float>(init_std * std::sqrt(-2.0 * std::log(uniform())) * std::cos(2 * M_PI * uniform()));
    }
  }
  return std::make_unique<TrainableModel>(config, source.tensors());
}

}  // namespace sy::train
