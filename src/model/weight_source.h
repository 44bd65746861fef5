// WeightSource: fetches named tensors from a checkpoint and checks each one's shape against what the config
// implies, so that a wrong checkpoint fails at load with the tensor's name, never mid-forward.
// Internal to src/model.
#pragma once

#include <functional>
#include <set>
#include <string>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"
#include "switchyard/model/tensor_source.h"
#include "switchyard/moe/experts.h"

namespace sy::model_detail {

class WeightSource {
 public:
  explicit WeightSource(const TensorSource& source) : checkpoint_(source) {}
  // A source that creates missing tensors (see CreatingSource) is written through this pointer.
  explicit WeightSource(TensorSource& source) : checkpoint_(source), creator_(source.creates_missing() ? &source : nullptr) {}
  bool has(const std::string& name) const { return checkpoint_.contains(name); }
  // Required tensor with this exact shape (float dtype). Throws FormatError naming tensor and directory.
  Tensor get(const std::string& name, const Shape& shape);
  // Like get, but returns an undefined tensor when absent.
  Tensor optional(const std::string& name, const Shape& shape);
  // Names in the checkpoint that no loader asked for.
  std::vector<std::string> unused() const;
  // Expert filter (expert parallelism): routed experts it rejects are not loaded, and their tensors are
  // marked as deliberately skipped (no "unused" warning).
  void set_expert_filter(std::function<bool(int64_t)> keep) { keep_expert_ = std::move(keep); }
  bool wants_expert(int64_t e) const { return !keep_expert_ || keep_expert_(e); }
  void skip(const std::string& name) { if (has(name)) used_.insert(name); }

 private:
  const TensorSource& checkpoint_;
  TensorSource* creator_ = nullptr;
  std::set<std::string> used_;
  std::function<bool(int64_t)> keep_expert_;
};

// Names of one gated MLP's projections, e.g. {"gate_proj", "up_proj", "down_proj"} or Mixtral's {"w1","w3","w2"}.
struct MlpNames {
  std::string gate = "gate_proj", up = "up_proj", down = "down_proj";
};

Tensor load_norm(WeightSource& src, const std::string& name, int64_t dim);
moe::GatedMlpWeights load_gated_mlp(WeightSource& src, const std::string& prefix, int64_t hidden, int64_t inter,
                                    const MlpNames& names = {}, bool bias = false);
// Routed experts under `prefix` (e.g. "model.layers.3.mlp.experts"): hub per-expert tensors
// (prefix.E.gate_proj.weight ...) or the fused transformers layout (prefix.gate_up_proj (E, 2I, H) with gate
// rows first, prefix.down_proj (E, H, I)).
std::vector<moe::GatedMlpWeights> load_experts(WeightSource& src, const std::string& prefix, const ModelConfig& cfg,
                                               const MlpNames& names = {});
}  // namespace sy::model_detail
