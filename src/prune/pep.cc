// PEP ranking and top-M selection; see pep.h.
#include "switchyard/prune/pep.h"

#include <algorithm>
#include <numeric>

#include "switchyard/core/error.h"

namespace sy::prune {

std::vector<int> rank_experts(const std::vector<double>& scores) {
  std::vector<int> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return scores[a] > scores[b]; });
  return idx;
}

int ExpertPattern::keep() const {
  for (const std::vector<int>& k : kept) {
    if (!k.empty()) return static_cast<int>(k.size());
  }
  return 0;
}

void check_keep(const ModelConfig& config, int keep, int experts_per_token) {
  const int e = config.moe.num_experts, k = experts_per_token > 0 ? experts_per_token : config.moe.top_k;
  SY_REQUIRE(e > 0, InvalidArgument, "prune", "model_type \"", config.model_type,
             "\" has no routed experts; expert pruning needs a Mixture-of-Experts model");
  SY_REQUIRE(experts_per_token >= 0 && k <= config.moe.top_k, InvalidArgument, "prune", "experts per token ",
             experts_per_token, " must be in [1, ", config.moe.top_k, "] (the model's top-k), or 0 to keep it");
  SY_REQUIRE(keep <= e, InvalidArgument, "prune", "--keep ", keep, " is larger than the model's ", e,
             " experts per layer; pass --keep between ", k, " and ", e);
  SY_REQUIRE(keep >= k, InvalidArgument, "prune", "--keep ", keep, " is smaller than the ", k,
             " experts each token uses (top-k); pass --keep >= ", k, " or ask for fewer experts per token");
}

ExpertPattern select_experts(const ModelConfig& config, const std::vector<std::vector<int>>& rankings, int keep,
                             int experts_per_token) {
  check_keep(config, keep, experts_per_token);
  ExpertPattern p;
  p.kept.assign(config.num_layers, {});
  size_t i = 0;
  for (int l = 0; l < config.num_layers; ++l) {
    if (!config.layer_is_moe[l]) continue;
    SY_CHECK(i < rankings.size() && static_cast<int>(rankings[i].size()) == config.moe.num_experts, "ranking ", i);
    std::vector<int> kept(rankings[i].begin(), rankings[i].begin() + keep);
    std::sort(kept.begin(), kept.end());
    p.kept[l] = std::move(kept);
    ++i;
  }
  SY_CHECK(i == rankings.size(), rankings.size(), " rankings for ", i, " MoE layers");
  return p;
}

}  // namespace sy::prune
