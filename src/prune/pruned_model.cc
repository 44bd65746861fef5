// In-memory expert pruning of a loaded model; see pruned_model.h.
#include "switchyard/prune/pruned_model.h"

#include <cstring>

#include "switchyard/core/error.h"

namespace sy::prune {

Tensor gather_rows(const Tensor& t, const std::vector<int>& rows) {
  SY_CHECK(t.defined() && t.dim() >= 1, "gather_rows of ", t.describe());
  Shape shape = t.shape();
  shape[0] = static_cast<int64_t>(rows.size());
  Tensor out = Tensor::empty(shape, t.dtype());
  const size_t row_bytes = out.numel() == 0 ? 0 : out.nbytes() / rows.size();
  char* dst = static_cast<char*>(out.raw());
  for (size_t i = 0; i < rows.size(); ++i) {
    SY_CHECK(rows[i] >= 0 && rows[i] < t.size(0), "row ", rows[i], " of ", t.describe());
    Tensor row = t.select(rows[i]).contiguous();
    std::memcpy(dst + i * row_bytes, row.raw(), row_bytes);
  }
  return out;
}

ModelConfig pruned_config(const ModelConfig& config, int keep, int experts_per_token) {
  check_keep(config, keep, experts_per_token);
  ModelConfig c = config;
  c.moe.num_experts = keep;
  if (experts_per_token > 0) c.moe.top_k = experts_per_token;
  c.moe.num_groups = c.moe.topk_groups = 1;
  return c;
}

ModelWeights prune_weights(const ModelWeights& weights, const ModelConfig& config, const ExpertPattern& pattern) {
  SY_CHECK(pattern.kept.size() == weights.layers.size(), pattern.kept.size(), " pattern layers for ",
           weights.layers.size());
  ModelWeights w = weights;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    LayerWeights& lw = w.layers[l];
    const std::vector<int>& kept = pattern.kept[l];
    if (!lw.is_moe) {
      SY_CHECK(kept.empty(), "dense layer ", l, " has a pattern");
      continue;
    }
    SY_CHECK(!kept.empty() && static_cast<int>(lw.moe.experts.size()) == config.moe.num_experts, "layer ", l);
    MoeWeights& m = lw.moe;
    m.router = gather_rows(m.router, kept);
    if (m.router_bias.defined()) m.router_bias = gather_rows(m.router_bias, kept);
    if (m.score_bias.defined()) m.score_bias = gather_rows(m.score_bias, kept);
    std::vector<moe::GatedMlpWeights> experts;
    experts.reserve(kept.size());
    for (int e : kept) experts.push_back(m.experts[e]);  // views: no bytes read
    m.experts = std::move(experts);
  }
  return w;
}

std::unique_ptr<Model> make_pruned_model(const Model& full, const ExpertPattern& pattern, int experts_per_token) {
  ModelConfig cfg = pruned_config(full.config(), pattern.keep(), experts_per_token);
  // Weight views keep their memory map alive by themselves, so the full model need not outlive the result.
  return std::make_unique<Model>(std::move(cfg), prune_weights(full.weights(), full.config(), pattern));
}

}  // namespace sy::prune
