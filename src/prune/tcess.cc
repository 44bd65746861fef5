// TCESS marker accumulation and the model runs that feed it; see tcess.h.
#include "switchyard/prune/tcess.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "switchyard/core/error.h"

namespace sy::prune {

void validate_tcess_options(const TcessOptions& o, int num_experts) {
  SY_REQUIRE(o.top_k >= 1 && o.top_k <= num_experts, InvalidArgument, "prune", "--top-k ", o.top_k,
             " must be in [1, ", num_experts, "] (the model's routed experts per MoE layer)");
  SY_REQUIRE(o.threshold >= 0.0 && o.threshold < 1.0, InvalidArgument, "prune", "--threshold ", o.threshold,
             " must be in [0, 1): it is a softmax probability (0 turns it off)");
}

int first_moe_layer(const ModelConfig& config) {
  for (int l = 0; l < config.num_layers; ++l) {
    if (config.layer_is_moe[l]) return l;
  }
  throw make_error<InvalidArgument>("prune", "model_type \"", config.model_type,
                                    "\" has no MoE layer; expert pruning needs a Mixture-of-Experts model");
}

void accumulate_markers(const float* logits, int64_t rows, int num_experts, const TcessOptions& o, double* sum) {
  std::vector<int> idx(num_experts);
  for (int64_t t = 0; t < rows; ++t) {
    const float* z = logits + t * num_experts;
    std::iota(idx.begin(), idx.end(), 0);
    // Top-k by raw logit, descending; ties go to the lower index (as the router does).
    std::partial_sort(idx.begin(), idx.begin() + o.top_k, idx.end(),
                      [&](int a, int b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
    double denom = 0.0;
    if (o.threshold > 0.0) {
      const double mx = z[idx[0]];
      for (int e = 0; e < num_experts; ++e) denom += std::exp(static_cast<double>(z[e]) - mx);
    }
    for (int s = 0; s < o.top_k; ++s) {
      const int e = idx[s];
      if (o.threshold > 0.0 && std::exp(static_cast<double>(z[e]) - z[idx[0]]) / denom <= o.threshold) continue;
      sum[e] += z[e];
    }
  }
}

TcessAccumulator::TcessAccumulator(const ModelConfig& config, const TcessOptions& options)
    : options_(options), num_experts_(config.moe.num_experts) {
  first_moe_layer(config);  // throws for dense models
  validate_tcess_options(options, num_experts_);
  sums_.assign(config.num_layers, {});
  tokens_.assign(config.num_layers, 0);
  for (int l = 0; l < config.num_layers; ++l) {
    if (!config.layer_is_moe[l]) continue;
    moe_layers_.push_back(l);
    sums_[l].assign(num_experts_, 0.0);
  }
}

bool TcessAccumulator::observe(int layer, const Tensor& logits) {
  SY_CHECK(layer >= 0 && layer < static_cast<int>(sums_.size()) && !sums_[layer].empty(), "layer ", layer);
  SY_CHECK(logits.dtype() == DType::kF32 && logits.dim() == 2 && logits.size(1) == num_experts_ &&
               logits.is_contiguous(), logits.describe());
  accumulate_markers(logits.f32(), logits.size(0), num_experts_, options_, sums_[layer].data());
  tokens_[layer] += logits.size(0);
  return true;
}

TaskScores TcessAccumulator::scores() const {
  TaskScores out;
  out.num_tokens = tokens_[moe_layers_.front()];
  SY_REQUIRE(out.num_tokens > 0, InvalidArgument, "prune", "no tokens were observed; give at least one token id");
  for (int l : moe_layers_) {
    SY_CHECK(tokens_[l] == out.num_tokens, "layer ", l, " saw ", tokens_[l], " tokens, expected ", out.num_tokens);
    LayerScores ls{l, sums_[l]};
    for (double& s : ls.scores) s /= static_cast<double>(tokens_[l]);
    out.layers.push_back(std::move(ls));
  }
  return out;
}

namespace {

// Restores the model's observer slot on scope exit, even when forward throws.
struct ObserverGuard {
  Model& model;
  ~ObserverGuard() { model.set_router_observer(nullptr); }
};

}  // namespace

TaskScores compute_tcess(Model& model, const std::vector<std::vector<int64_t>>& sequences,
                         const TcessOptions& options) {
  SY_REQUIRE(!sequences.empty(), InvalidArgument, "prune", "no token sequences given; the data file is empty");
  TcessAccumulator acc(model.config(), options);
  ObserverGuard guard{model};
  model.set_router_observer([&](int layer, const Tensor& logits) { return acc.observe(layer, logits); });
  for (const std::vector<int64_t>& ids : sequences) {
    if (ids.empty()) continue;
    KvCache cache = model.new_cache(static_cast<int64_t>(ids.size()));
    model.forward(ids, cache, false);
  }
  return acc.scores();
}

std::vector<double> first_layer_scores(Model& model, const std::vector<int64_t>& ids, const TcessOptions& options) {
  SY_REQUIRE(!ids.empty(), InvalidArgument, "prune", "the prompt is empty; give at least one token id");
  const ModelConfig& cfg = model.config();
  const int first = first_moe_layer(cfg);
  validate_tcess_options(options, cfg.moe.num_experts);
  std::vector<double> sum(cfg.moe.num_experts, 0.0);
  ObserverGuard guard{model};
  model.set_router_observer([&](int layer, const Tensor& logits) {
    SY_CHECK(layer == first && logits.is_contiguous() && logits.size(1) == cfg.moe.num_experts, "layer ", layer);
    accumulate_markers(logits.f32(), logits.size(0), cfg.moe.num_experts, options, sum.data());
    return false;  // the key needs nothing past this router
  });
  KvCache cache = model.new_cache(static_cast<int64_t>(ids.size()));
  model.forward(ids, cache, false);
  for (double& s : sum) s /= static_cast<double>(ids.size());
  return sum;
}

KeyLayers parse_key_layers(const std::string& text) {
  if (text == "first") return KeyLayers::kFirst;
  if (text == "all") return KeyLayers::kAll;
  throw make_error<InvalidArgument>("prune", "key layers \"", text,
                                    "\" is not one of: first (PreMoe's key, the first MoE layer), all (every MoE layer)");
}

const char* key_layers_name(KeyLayers layers) { return layers == KeyLayers::kFirst ? "first" : "all"; }

std::vector<double> retrieval_key(Model& model, const std::vector<int64_t>& ids, const TcessOptions& options,
                                  KeyLayers layers) {
  if (layers == KeyLayers::kFirst) return first_layer_scores(model, ids, options);
  SY_REQUIRE(!ids.empty(), InvalidArgument, "prune", "the prompt is empty; give at least one token id");
  const ModelConfig& cfg = model.config();
  TcessAccumulator acc(cfg, options);
  int last = -1;
  for (int l = 0; l < cfg.num_layers; ++l) {
    if (cfg.layer_is_moe[l]) last = l;
  }
  ObserverGuard guard{model};
  model.set_router_observer([&](int layer, const Tensor& logits) {
    acc.observe(layer, logits);
    return layer != last;  // nothing past the last router feeds the key
  });
  KvCache cache = model.new_cache(static_cast<int64_t>(ids.size()));
  model.forward(ids, cache, false);
  std::vector<double> key;
  for (const LayerScores& ls : acc.scores().layers) key.insert(key.end(), ls.scores.begin(), ls.scores.end());
  return key;
}

}  // namespace sy::prune
