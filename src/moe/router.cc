// Router: scores, (group-limited) top-k selection and combine weights; see router.h.
#include "switchyard/moe/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "switchyard/core/error.h"

namespace sy::moe {

namespace {

// Indices of the k largest values, descending, ties to the lower index.
std::vector<int> top_indices(const float* values, int n, int k) {
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  idx.resize(k);
  return idx;
}

}  // namespace

Routing route(const Tensor& logits, const Tensor& score_bias, const MoeConfig& o) {
  SY_CHECK(logits.dtype() == DType::kF32 && logits.dim() == 2 && logits.is_contiguous(), "route: logits ",
           logits.describe());
  const int64_t t = logits.size(0);
  const int e = static_cast<int>(logits.size(1));
  SY_CHECK(e == o.num_experts && o.top_k >= 1 && o.top_k <= e, "route: ", e, " experts, top_k ", o.top_k);
  std::vector<float> bias;
  if (o.score_bias && score_bias.defined()) bias = score_bias.to_f32_vector();
  const int group_size = e / std::max(1, o.num_groups);

  Routing r;
  r.num_tokens = t;
  r.top_k = o.top_k;
  r.expert.resize(static_cast<size_t>(t * o.top_k));
  r.weight.resize(static_cast<size_t>(t * o.top_k));
  std::vector<float> scores(e), choice(e);
  for (int64_t i = 0; i < t; ++i) {
    const float* z = logits.f32() + i * e;
    int32_t* out_e = r.expert.data() + i * o.top_k;
    float* out_w = r.weight.data() + i * o.top_k;
    if (o.softmax_over_topk) {
      // gpt-oss: pick the top-k logits, softmax over just those.
      std::vector<int> idx = top_indices(z, e, o.top_k);
      float mx = z[idx[0]], sum = 0.f;
      for (int s = 0; s < o.top_k; ++s) sum += std::exp(z[idx[s]] - mx);
      for (int s = 0; s < o.top_k; ++s) {
        out_e[s] = idx[s];
        out_w[s] = std::exp(z[idx[s]] - mx) / sum;
      }
      continue;
    }
    if (o.score_function == ScoreFunction::kSoftmax) {
      float mx = *std::max_element(z, z + e), sum = 0.f;
      for (int j = 0; j < e; ++j) sum += (scores[j] = std::exp(z[j] - mx));
      for (int j = 0; j < e; ++j) scores[j] /= sum;
    } else {
      for (int j = 0; j < e; ++j) scores[j] = 1.f / (1.f + std::exp(-z[j]));
    }
    for (int j = 0; j < e; ++j) choice[j] = bias.empty() ? scores[j] : scores[j] + bias[j];
    if (o.num_groups > 1 && o.topk_groups < o.num_groups) {
      std::vector<float> group_scores(o.num_groups);
      for (int g = 0; g < o.num_groups; ++g) {
        const float* gs = choice.data() + g * group_size;
        if (o.group_score == GroupScore::kMax) {
          group_scores[g] = *std::max_element(gs, gs + group_size);
        } else {
          std::vector<int> best = top_indices(gs, group_size, std::min(2, group_size));
          float s = 0.f;
          for (int b : best) s += gs[b];
          group_scores[g] = s;
        }
      }
      std::vector<int> keep = top_indices(group_scores.data(), o.num_groups, o.topk_groups);
      std::vector<bool> kept(o.num_groups, false);
      for (int g : keep) kept[g] = true;
      // Experts of dropped groups are masked: to 0 for softmax scores (DeepSeek-V2), to -inf for biased
      // sigmoid scores (DeepSeek-V3), whose biased values may be negative.
      const float masked = o.score_function == ScoreFunction::kSigmoid ? -INFINITY : 0.f;
      for (int j = 0; j < e; ++j) {
        if (!kept[j / group_size]) choice[j] = masked;
      }
    }
    std::vector<int> idx = top_indices(choice.data(), e, o.top_k);
    float sum = 0.f;
    for (int s = 0; s < o.top_k; ++s) {
      out_e[s] = idx[s];
      out_w[s] = scores[idx[s]];
      sum += out_w[s];
    }
    if (o.norm_topk_prob) {
      float denom = o.score_function == ScoreFunction::kSigmoid ? sum + 1e-20f : sum;
      for (int s = 0; s < o.top_k; ++s) out_w[s] /= denom;
    }
    for (int s = 0; s < o.top_k; ++s) out_w[s] *= static_cast<float>(o.routed_scaling_factor);
  }
  return r;
}

}  // namespace sy::moe
