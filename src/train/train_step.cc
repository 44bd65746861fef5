// TrainableModel::forward_backward: the whole batch is flattened into N tokens; attention runs per sequence.
// Forward keeps each layer's activations as the recompute mode says, the loss is the mean cross-entropy over all
// targets, auxiliary router losses are added when their coefficients are non-zero, then the layers run
// backward in reverse order.
#include <algorithm>
#include <cmath>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops_backward.h"
#include "switchyard/train/trainable_model.h"
#include "train_blocks.h"

namespace sy::train {

namespace {

BatchLayout make_batch(const std::vector<std::vector<int64_t>>& inputs, const std::vector<std::vector<int64_t>>& targets,
                       const std::vector<std::vector<int64_t>>* doc_starts, std::vector<int64_t>& flat_ids,
                       std::vector<int64_t>& flat_targets, int64_t vocab) {
  SY_REQUIRE(!inputs.empty() && inputs.size() == targets.size(), InvalidArgument, "train",
             "a batch needs at least one sequence and one target list per input");
  BatchLayout batch;
  batch.seq_begin.push_back(0);
  for (size_t b = 0; b < inputs.size(); ++b) {
    SY_REQUIRE(!inputs[b].empty() && inputs[b].size() == targets[b].size(), InvalidArgument, "train", "sequence ", b,
               " has ", inputs[b].size(), " inputs and ", targets[b].size(), " targets");
    // Document starts within this row (sorted); position 0 always starts one.
    std::vector<int64_t> starts = {0};
    if (doc_starts && b < doc_starts->size()) {
      for (int64_t s : (*doc_starts)[b]) {
        if (s > 0 && s < static_cast<int64_t>(inputs[b].size())) starts.push_back(s);
      }
      std::sort(starts.begin(), starts.end());
    }
    size_t doc = 0;
    for (size_t i = 0; i < inputs[b].size(); ++i) {
      SY_REQUIRE(inputs[b][i] >= 0 && inputs[b][i] < vocab, InvalidArgument, "train", "token id ", inputs[b][i],
                 " is outside the vocabulary [0, ", vocab, ")");
      while (doc + 1 < starts.size() && starts[doc + 1] <= static_cast<int64_t>(i)) ++doc;
      flat_ids.push_back(inputs[b][i]);
      flat_targets.push_back(targets[b][i]);
      batch.positions.push_back(static_cast<int64_t>(i) - starts[doc]);
      batch.key_start.push_back(starts[doc]);
    }
    batch.seq_begin.push_back(static_cast<int64_t>(flat_ids.size()));
  }
  return batch;
}

ops::RopeTable rope_for(const ModelConfig& cfg) {
  const AttentionConfig& a = cfg.attention;
  return ops::make_rope_table(cfg.rope, a.mla ? a.qk_rope_head_dim : a.head_dim, cfg.max_position_embeddings);
}

// Auxiliary router losses of one MoE layer: returns their gradient with respect to the router logits and adds
// the unscaled losses to stats.
Tensor aux_loss_gradient(const ModelConfig& cfg, const FfnCache& c, const BatchLayout& batch, const StepOptions& o,
                         StepStats& stats) {
  const MoeConfig& m = cfg.moe;
  const int64_t n = c.logits.size(0), e = m.num_experts, k = m.top_k;
  // Both losses are always reported; they enter the gradient only when their coefficient is non-zero.
  Tensor dlogits = Tensor::zeros({n, e}, DType::kF32);
  // Load balancing: coef * E / (T^2 K) * sum_e (sum_t p_te) * count_e, per micro-batch or per sequence.
  Tensor probs = moe::balance_probabilities(c.logits, m);
  Tensor dprobs = Tensor::zeros({n, e}, DType::kF32);
  const int64_t groups = o.aux_loss_per_sequence ? batch.num_seqs() : 1;
  double aux = 0;
  for (int64_t gidx = 0; gidx < groups; ++gidx) {
    const int64_t t0 = o.aux_loss_per_sequence ? batch.seq_begin[gidx] : 0;
    const int64_t t1 = o.aux_loss_per_sequence ? batch.seq_begin[gidx + 1] : n;
    const double tokens = static_cast<double>(t1 - t0);
    std::vector<double> count(e, 0.0), prob_sum(e, 0.0);
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t s = 0; s < k; ++s) count[c.routing.expert[t * k + s]] += 1;
      for (int64_t j = 0; j < e; ++j) prob_sum[j] += probs.f32()[t * e + j];
    }
    const double scale = static_cast<double>(e) / (tokens * tokens * k) / groups;
    for (int64_t j = 0; j < e; ++j) aux += scale * prob_sum[j] * count[j];
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t j = 0; j < e; ++j) dprobs.f32()[t * e + j] = static_cast<float>(o.aux_loss_coef * scale * count[j]);
    }
  }
  stats.aux_loss += aux;
  if (o.aux_loss_coef > 0) moe::balance_probabilities_backward(c.logits, m, dprobs, dlogits);
  // z-loss: mean over tokens of logsumexp(z)^2.
  double z = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* row = c.logits.f32() + t * e;
    float mx = row[0];
    for (int64_t j = 1; j < e; ++j) mx = std::max(mx, row[j]);
    double sum = 0;
    for (int64_t j = 0; j < e; ++j) sum += std::exp(double(row[j]) - mx);
    const double lse = mx + std::log(sum);
    z += lse * lse / n;
    if (o.z_loss_coef > 0) {
      for (int64_t j = 0; j < e; ++j) {
        dlogits.f32()[t * e + j] += static_cast<float>(o.z_loss_coef * 2 * lse * std::exp(double(row[j]) - lse) / n);
      }
    }
  }
  stats.z_loss += z;
  return o.aux_loss_coef > 0 || o.z_loss_coef > 0 ? dlogits : Tensor();
}

}  // namespace

StepStats TrainableModel::forward_backward(const std::vector<std::vector<int64_t>>& inputs,
                                           const std::vector<std::vector<int64_t>>& targets, const StepOptions& options,
                                           const std::vector<std::vector<int64_t>>* doc_starts) {
  const ModelConfig& cfg = config_;
  std::vector<int64_t> ids, tgt;
  BatchLayout batch = make_batch(inputs, targets, doc_starts, ids, tgt, cfg.vocab_size);
  const int64_t n = batch.num_tokens(), hidden = cfg.hidden_size;
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  const ops::RopeTable rope = rope_for(cfg);
  StepStats stats;
  stats.num_targets = n;
  stats.tokens_per_expert.assign(cfg.num_layers, {});

  // Forward: each layer keeps what the recompute mode says (the rest is rebuilt in backward).
  const Recompute recompute = options.recompute;
  std::vector<LayerCache> caches(cfg.num_layers);
  std::vector<int64_t> held(cfg.num_layers, 0);
  Tensor x = Tensor::empty({n, hidden}, DType::kF32);
  ops::embedding(ids, w_.embed, x);
  for (int l = 0; l < cfg.num_layers; ++l) {
    LayerCache& c = caches[l];
    x = layer_forward(cfg, w_.layers[l], l, x, batch, rope, c);
    if (w_.layers[l].is_moe) stats.tokens_per_expert[l] = c.ffn.layout.tokens_per_expert;
    drop_for_recompute(c, recompute);
    held[l] = cache_bytes(c);
    stats.saved_activation_bytes += held[l];
  }
  Tensor hn = Tensor::empty({n, hidden}, DType::kF32);
  ops::rms_norm(x, w_.final_norm, eps, hn);
  Tensor logits = ops::linear(hn, w_.lm_head);
  Tensor dlogits = Tensor::empty(logits.shape(), DType::kF32);
  stats.loss = ops::cross_entropy(logits, tgt, n, dlogits) / static_cast<double>(n);

  // Backward, releasing each layer's activations once its gradients are done.
  Tensor dhn = Tensor::empty({n, hidden}, DType::kF32);
  ops::linear_backward(hn, w_.lm_head, dlogits, &dhn, &g_.lm_head, nullptr);
  Tensor dx = Tensor::empty({n, hidden}, DType::kF32);
  ops::rms_norm_backward(x, w_.final_norm, eps, dhn, dx, g_.final_norm);
  int64_t still_held = stats.saved_activation_bytes;
  stats.peak_activation_bytes = still_held;
  for (int l = cfg.num_layers - 1; l >= 0; --l) {
    const LayerWeights& lw = w_.layers[l];
    LayerWeights& lg = g_.layers[l];
    LayerCache& c = caches[l];
    restore_for_backward(cfg, lw, l, batch, rope, c, recompute);
    stats.peak_activation_bytes = std::max(stats.peak_activation_bytes, still_held - held[l] + cache_bytes(c));
    // x_out = x_mid + ffn(norm(x_mid)).
    Tensor dh2;
    if (lw.is_moe) {
      Tensor extra = aux_loss_gradient(cfg, c.ffn, batch, options, stats);
      dh2 = moe_backward(cfg, lw.moe, lg.moe, c.h2, c.ffn, dx, extra);
    } else {
      dh2 = mlp_backward(lw.mlp, moe::ActivationOptions{}, lg.mlp, c.h2, c.ffn.gate, c.ffn.up, c.ffn.act, dx);
    }
    Tensor dmid = Tensor::empty({n, hidden}, DType::kF32);
    ops::rms_norm_backward(c.x_mid, lw.post_attention_norm, eps, dh2, dmid, lg.post_attention_norm);
    ops::add_inplace(dmid, dx);
    // x_mid = x_in + attn(norm(x_in)).
    Tensor dh1 = cfg.attention.mla ? mla_backward(cfg, lw.attention, lg.attention, l, c.h1, batch, rope, c.attn, dmid)
                                   : gqa_backward(cfg, lw.attention, lg.attention, l, c.h1, batch, rope, c.attn, dmid);
    Tensor din = Tensor::empty({n, hidden}, DType::kF32);
    ops::rms_norm_backward(c.x_in, lw.input_norm, eps, dh1, din, lg.input_norm);
    ops::add_inplace(din, dmid);
    dx = din;
    c = LayerCache{};
    still_held -= held[l];
  }
  ops::embedding_backward(ids, dx, g_.embed);
  return stats;
}

double TrainableModel::evaluate(const std::vector<std::vector<int64_t>>& inputs,
                                const std::vector<std::vector<int64_t>>& targets, int64_t* num_targets,
                                const std::vector<std::vector<int64_t>>* doc_starts) {
  const ModelConfig& cfg = config_;
  std::vector<int64_t> ids, tgt;
  BatchLayout batch = make_batch(inputs, targets, doc_starts, ids, tgt, cfg.vocab_size);
  const int64_t n = batch.num_tokens(), hidden = cfg.hidden_size;
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  const ops::RopeTable rope = rope_for(cfg);
  Tensor x = Tensor::empty({n, hidden}, DType::kF32);
  ops::embedding(ids, w_.embed, x);
  for (int l = 0; l < cfg.num_layers; ++l) {
    LayerCache c;
    x = layer_forward(cfg, w_.layers[l], l, x, batch, rope, c);
  }
  Tensor hn = Tensor::empty({n, hidden}, DType::kF32);
  ops::rms_norm(x, w_.final_norm, eps, hn);
  Tensor logits = ops::linear(hn, w_.lm_head);
  Tensor scratch = Tensor::empty(logits.shape(), DType::kF32);
  if (num_targets) *num_targets = n;
  return ops::cross_entropy(logits, tgt, n, scratch);
}

}  // namespace sy::train
