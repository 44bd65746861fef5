// TCESS (PreMoe, 2025): task-conditioned expected selection scores, computed from raw router logits.
// For token t at MoE layer l with raw logits z_t (router output before softmax/sigmoid, no score bias):
//   m_t[e] = z_t[e] if e is among the top_k largest logits of t (and, when threshold r > 0, softmax(z_t)[e] > r)
//   m_t[e] = 0      otherwise;              s_l[e] = mean over the task's tokens of m_t[e].
// It only observes the model (through Model::set_router_observer); it never changes routing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/io/model_config.h"
#include "switchyard/model/model.h"

namespace sy::prune {

struct TcessOptions {
  int top_k = 1;           // experts marked per token (by raw logit); PreMoe uses 1
  double threshold = 0.0;  // r: also require softmax over all of the token's logits > r (0 = off)
};

// Throws InvalidArgument when top_k is outside [1, num_experts] or threshold outside [0, 1).
void validate_tcess_options(const TcessOptions& options, int num_experts);

// Scores of one MoE layer: scores[e] = s_l[e].
struct LayerScores {
  int layer = 0;
  std::vector<double> scores;
};

// One entry per MoE layer, in layer order.
struct TaskScores {
  std::vector<LayerScores> layers;
  int64_t num_tokens = 0;
};

// Adds token markers to sum[e] for each row of logits (rows, num_experts), row-major f32.
void accumulate_markers(const float* logits, int64_t rows, int num_experts, const TcessOptions& options,
                        double* sum);

// Sums markers per MoE layer across forward passes; `observe` has RouterObserver's shape.
class TcessAccumulator {
 public:
  TcessAccumulator(const ModelConfig& config, const TcessOptions& options);
  bool observe(int layer, const Tensor& logits);
  TaskScores scores() const;  // means; throws InvalidArgument if no token was observed

 private:
  TcessOptions options_;
  int num_experts_;
  std::vector<int> moe_layers_;
  std::vector<std::vector<double>> sums_;  // [layer][expert]; empty for dense layers
  std::vector<int64_t> tokens_;            // [layer] tokens observed
};

// Runs every sequence through `model` (each from an empty cache) and returns its TCESS. The model's router
// observer is replaced for the duration. Throws InvalidArgument for an empty input or a dense model.
TaskScores compute_tcess(Model& model, const std::vector<std::vector<int64_t>>& sequences,
                         const TcessOptions& options);

// s at the first MoE layer only (the TAER key); the forward pass stops at that layer's router.
std::vector<double> first_layer_scores(Model& model, const std::vector<int64_t>& ids, const TcessOptions& options);

// Which MoE layers a TAER retrieval key is made of. kFirst is PreMoe's key (s at the first MoE layer); kAll
// concatenates s_l of every MoE layer in layer order (num_moe_layers * num_experts numbers), an extension
// measured in docs/premoe.md: deeper routers separate similar tasks that route alike in the first layer.
enum class KeyLayers { kFirst, kAll };
// "first" or "all"; throws InvalidArgument otherwise.
KeyLayers parse_key_layers(const std::string& text);
const char* key_layers_name(KeyLayers layers);

// The retrieval key of `ids`: first_layer_scores for kFirst; for kAll every MoE layer's s, concatenated,
// with the forward pass stopped at the last MoE layer's router.
std::vector<double> retrieval_key(Model& model, const std::vector<int64_t>& ids, const TcessOptions& options,
                                  KeyLayers layers);

// Index of the first MoE layer; throws InvalidArgument for a dense model.
int first_moe_layer(const ModelConfig& config);

}  // namespace sy::prune
