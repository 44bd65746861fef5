// Router backward: routing-weight gradients to logit gradients, and the probabilities of the
// load-balancing loss with their backward. The selected experts are held fixed.
#include <cmath>

#include "switchyard/core/error.h"
#include "switchyard/moe/router.h"

namespace sy::moe {

namespace {
// Scores as the router computed them: softmax over all experts or sigmoid per expert.
void scores_of(const float* z, int e, ScoreFunction fn, std::vector<float>& p) {
  p.resize(e);
  if (fn == ScoreFunction::kSoftmax) {
    float mx = z[0];
    for (int j = 1; j < e; ++j) mx = std::max(mx, z[j]);
    double sum = 0;
    for (int j = 0; j < e; ++j) sum += (p[j] = std::exp(z[j] - mx));
    for (int j = 0; j < e; ++j) p[j] = static_cast<float>(p[j] / sum);
  } else {
    for (int j = 0; j < e; ++j) p[j] = 1.f / (1.f + std::exp(-z[j]));
  }
}
}  // namespace

Tensor route_backward(const Tensor& logits, const MoeConfig& o, const Routing& r, const std::vector<float>& dweight) {
  const int64_t t = logits.size(0);
  const int e = static_cast<int>(logits.size(1)), k = r.top_k;
  Tensor dz = Tensor::zeros({t, e}, DType::kF32);
  std::vector<float> p, dp(e);
  for (int64_t i = 0; i < t; ++i) {
    const float* z = logits.f32() + i * e;
    const int32_t* sel = r.expert.data() + i * k;
    const float* w = r.weight.data() + i * k;
    const float* g = dweight.data() + i * k;
    float* out = dz.f32() + i * e;
    if (o.softmax_over_topk) {  // w = softmax(z_S)
      double gw = 0;
      for (int s = 0; s < k; ++s) gw += double(g[s]) * w[s];
      for (int s = 0; s < k; ++s) out[sel[s]] += static_cast<float>(w[s] * (g[s] - gw));
      continue;
    }
    scores_of(z, e, o.score_function, p);
    std::fill(dp.begin(), dp.end(), 0.f);
    const double c = o.routed_scaling_factor;
    if (o.norm_topk_prob) {  // w_s = c p_s / P, P = sum_S p (+1e-20 for sigmoid)
      double big_p = 0, gp = 0;
      for (int s = 0; s < k; ++s) {
        big_p += p[sel[s]];
        gp += double(g[s]) * p[sel[s]];
      }
      if (o.score_function == ScoreFunction::kSigmoid) big_p += 1e-20;
      for (int s = 0; s < k; ++s) dp[sel[s]] += static_cast<float>(c * (g[s] / big_p - gp / (big_p * big_p)));
    } else {
      for (int s = 0; s < k; ++s) dp[sel[s]] += static_cast<float>(c * g[s]);
    }
    if (o.score_function == ScoreFunction::kSoftmax) {
      double pdp = 0;
      for (int j = 0; j < e; ++j) pdp += double(p[j]) * dp[j];
      for (int j = 0; j < e; ++j) out[j] += static_cast<float>(p[j] * (dp[j] - pdp));
    } else {
      for (int j = 0; j < e; ++j) out[j] += dp[j] * p[j] * (1.f - p[j]);
    }
  }
  return dz;
}

Tensor balance_probabilities(const Tensor& logits, const MoeConfig& o) {
  const int64_t t = logits.size(0);
  const int e = static_cast<int>(logits.size(1));
  Tensor probs = Tensor::empty({t, e}, DType::kF32);
  std::vector<float> p;
  for (int64_t i = 0; i < t; ++i) {
    scores_of(logits.f32() + i * e, e, o.score_function, p);
    double sum = 0;
    for (float v : p) sum += v;
    for (int j = 0; j < e; ++j) probs.f32()[i * e + j] = o.score_function == ScoreFunction::kSoftmax ? p[j] : static_cast<float>(p[j] / sum);
  }
  return probs;
}

void balance_probabilities_backward(const Tensor& logits, const MoeConfig& o, const Tensor& dprobs, Tensor& dlogits) {
  const int64_t t = logits.size(0);
  const int e = static_cast<int>(logits.size(1));
  std::vector<float> p;
  for (int64_t i = 0; i < t; ++i) {
    scores_of(logits.f32() + i * e, e, o.score_function, p);
    const float* g = dprobs.f32() + i * e;
    float* out = dlogits.f32() + i * e;
    if (o.score_function == ScoreFunction::kSoftmax) {
      double pg = 0;
      for (int j = 0; j < e; ++j) pg += double(p[j]) * g[j];
      for (int j = 0; j < e; ++j) out[j] += static_cast<float>(p[j] * (g[j] - pg));
    } else {  // q = s / S: dL/ds_j = (g_j - sum q g) / S, then the sigmoid derivative
      double sum = 0, qg = 0;
      for (float v : p) sum += v;
      for (int j = 0; j < e; ++j) qg += p[j] / sum * g[j];
      for (int j = 0; j < e; ++j) out[j] += static_cast<float>((g[j] - qg) / sum * p[j] * (1.f - p[j]));
    }
  }
}

}  // namespace sy::moe
