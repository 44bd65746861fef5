// TrainableModel: f32 master parameters and their gradients under hub tensor names, with ModelWeights views
// into both (the same architecture loaders map parameters and gradients), and an explicit forward + backward
// over a batch of sequences (no autograd graph), with optional activation recompute. One device (the CPU)
// at this stage.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/io/model_config.h"
#include "switchyard/model/weights.h"

namespace sy::train {

// Which activations the forward pass keeps for backward; the rest are recomputed there from what was kept.
// All three give bit-identical gradients (the recomputation repeats the same kernels on the same inputs).
enum class Recompute {
  kNone,       // keep every activation backward reads
  kSelective,  // drop norm outputs and every (expert) MLP's gate/up/activation/output and permuted copy;
               // recompute them per layer in backward (routing, attention activations kept)
  kFull,       // keep only each layer's input; re-run the whole layer forward in backward
};
Recompute parse_recompute(const std::string& name);  // "none" | "selective" | "full"; InvalidArgument otherwise
const char* recompute_name(Recompute r);

struct StepOptions {
  double aux_loss_coef = 0.0;  // load-balancing loss (Switch/Megatron form), added when > 0
  bool aux_loss_per_sequence = false;  // per-sequence variant instead of per micro-batch
  double z_loss_coef = 0.0;    // router z-loss, added when > 0
  Recompute recompute = Recompute::kNone;
};

struct StepStats {
  double loss = 0.0;      // mean cross-entropy over all targets
  double aux_loss = 0.0;  // sum over MoE layers of the (unscaled by coef) balancing loss, reported
  double z_loss = 0.0;    // sum over MoE layers of the mean squared log-sum-exp, reported
  int64_t num_targets = 0;
  std::vector<std::vector<int64_t>> tokens_per_expert;  // [layer][expert]; empty for dense layers
  // Bytes of activations held for backward when the forward pass ends (what recompute trades away), and the
  // most held at any moment of the step (the held set plus one layer rebuilt during backward).
  int64_t saved_activation_bytes = 0, peak_activation_bytes = 0;
};

class TrainableModel {
 public:
  // Loads config.json + safetensors from DIR into f32 master parameters.
  static std::unique_ptr<TrainableModel> from_dir(const std::string& dir);
  // Random initialisation (normal, std `init_std`; norms at 1) for a config, seeded.
  static std::unique_ptr<TrainableModel> from_config(const ModelConfig& config, uint64_t seed, float init_std = 0.02f);
  TrainableModel(ModelConfig config, std::map<std::string, Tensor> params);

  const ModelConfig& config() const { return config_; }
  // The config.json text this model was made from (written into checkpoints).
  const std::string& config_json() const { return config_json_; }
  void set_config_json(std::string text) { config_json_ = std::move(text); }
  // Parameters and gradients in the training layout: checkpoint names and shapes, except gpt-oss's fused
  // experts, which are held per expert (see param_layout.h). checkpoint_tensors() gives checkpoint layout.
  std::map<std::string, Tensor>& params() { return params_; }
  std::map<std::string, Tensor>& grads() { return grads_; }
  std::map<std::string, Tensor> checkpoint_params() const;
  std::map<std::string, Tensor> checkpoint_grads() const;
  // Copies checkpoint-layout tensors (names and shapes as in model.safetensors) into the parameters;
  // FormatError names a missing or misshapen tensor.
  void load_checkpoint_params(const std::map<std::string, Tensor>& tensors, const std::string& where);
  // Router score biases (DeepSeek-V3 e_score_correction_bias): state, not trained by gradients.
  bool is_buffer(const std::string& name) const;
  void zero_grads();

  // Forward and backward over B sequences: inputs[b] and targets[b] have the same length T_b. Gradients
  // accumulate into grads(); the loss is the mean over all targets (plus weighted auxiliary losses).
  // With doc_starts (per sequence, the indices where a new packed document begins), rope positions restart
  // at each document and attention never crosses a document boundary.
  StepStats forward_backward(const std::vector<std::vector<int64_t>>& inputs,
                             const std::vector<std::vector<int64_t>>& targets, const StepOptions& options,
                             const std::vector<std::vector<int64_t>>* doc_starts = nullptr);
  // Forward only: summed cross-entropy and the number of targets.
  double evaluate(const std::vector<std::vector<int64_t>>& inputs, const std::vector<std::vector<int64_t>>& targets,
                  int64_t* num_targets, const std::vector<std::vector<int64_t>>* doc_starts = nullptr);

 private:
  struct Impl;
  ModelConfig config_;
  std::string config_json_;
  std::map<std::string, Tensor> params_, grads_;
  ModelWeights w_, g_;
};

}  // namespace sy::train
