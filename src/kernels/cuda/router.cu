// CUDA fused router: scores, group-limited top-k, combine weights, one block per token with a thread per
// expert (rounded up to whole warps; thread j owns expert j); argmax and reductions by warp shuffles.
// Mirrors sy::moe::route decision for decision. Not here: several tokens per block for small expert counts.
#include <cmath>

#include "block_reduce.cuh"
#include "op_common.cuh"

namespace sy::cuda {

namespace {

using detail::beats;
using detail::block_argmax;
using detail::block_reduce;

constexpr int kMaxExperts = 256;

struct RouterParams {
  int num_experts, top_k, num_groups, topk_groups;
  bool sigmoid, softmax_over_topk, norm_topk_prob, group_top2_sum, has_bias;
  float scale;
};

__global__ void __launch_bounds__(kMaxExperts) router_kernel(const float* logits, const float* bias,
                                                            RouterParams p, int32_t* out_expert,
                                                            float* out_weight) {
  __shared__ float sval[kMaxExperts];
  __shared__ int sidx[kMaxExperts];
  __shared__ float choice[kMaxExperts];
  __shared__ float group_score[kMaxExperts];
  __shared__ bool group_kept[kMaxExperts];
  __shared__ int picked[kMaxExperts];
  const int64_t t = blockIdx.x;
  const int e = p.num_experts, j = threadIdx.x;
  const bool mine = j < e;
  const float z = mine ? logits[t * e + j] : -INFINITY;
  int32_t* oe = out_expert + t * p.top_k;
  float* ow = out_weight + t * p.top_k;

  if (p.softmax_over_topk) {  // gpt-oss: top-k of the raw logits, softmax over those k
    bool taken = false;
    for (int s = 0; s < p.top_k; ++s) {
      const int w = block_argmax(z, mine && !taken ? j : -1, sval, sidx);
      if (j == w) taken = true;
      if (j == 0) picked[s] = w;
    }
    __syncthreads();
    if (j == 0) {
      const float mx = logits[t * e + picked[0]];
      float sum = 0.f;
      for (int s = 0; s < p.top_k; ++s) sum += expf(logits[t * e + picked[s]] - mx);
      for (int s = 0; s < p.top_k; ++s) {
        oe[s] = picked[s];
        ow[s] = expf(logits[t * e + picked[s]] - mx) / sum;
      }
    }
    return;
  }

  float score;
  if (!p.sigmoid) {
    const float mx = block_reduce(z, sval, true);
    const float ex = mine ? expf(z - mx) : 0.f;
    const float sum = block_reduce(ex, sval, false);
    score = ex / sum;
  } else {
    score = 1.f / (1.f + expf(-z));
  }
  float c = mine ? (p.has_bias ? score + bias[j] : score) : -INFINITY;
  if (p.num_groups > 1 && p.topk_groups < p.num_groups) {
    const int group_size = e / p.num_groups;
    if (mine) choice[j] = c;
    __syncthreads();
    if (j < p.num_groups) {  // thread g scores group g serially (max, or sum of its top 2)
      const float* gs = choice + j * group_size;
      float best = -INFINITY, second = -INFINITY;
      int best_i = -1;
      for (int i = 0; i < group_size; ++i) {
        if (best_i < 0 || gs[i] > best) {
          best = gs[i];
          best_i = i;
        }
      }
      if (p.group_top2_sum && group_size >= 2) {
        int second_i = -1;
        for (int i = 0; i < group_size; ++i) {
          if (i != best_i && (second_i < 0 || gs[i] > second)) {
            second = gs[i];
            second_i = i;
          }
        }
        group_score[j] = best + second;
      } else {
        group_score[j] = best;
      }
      group_kept[j] = false;
    }
    __syncthreads();
    for (int s = 0; s < p.topk_groups; ++s) {
      const bool candidate = j < p.num_groups && !group_kept[j];
      const int w = block_argmax(candidate ? group_score[j] : 0.f, candidate ? j : -1, sval, sidx);
      if (j == w) group_kept[j] = true;
      __syncthreads();
    }
    // Experts of dropped groups are masked as the CPU reference does: 0 for softmax, -inf for sigmoid.
    if (mine && !group_kept[j / group_size]) c = p.sigmoid ? -INFINITY : 0.f;
  }
  bool taken = false;
  for (int s = 0; s < p.top_k; ++s) {
    const int w = block_argmax(c, mine && !taken ? j : -1, sval, sidx);
    if (j == w) {
      taken = true;
      picked[s] = w;
      choice[s] = score;
    }
    __syncthreads();
  }
  if (j == 0) {
    float sum = 0.f;
    for (int s = 0; s < p.top_k; ++s) sum += choice[s];
    const float denom = p.norm_topk_prob ? (p.sigmoid ? sum + 1e-20f : sum) : 1.f;
    for (int s = 0; s < p.top_k; ++s) {
      oe[s] = picked[s];
      ow[s] = (p.norm_topk_prob ? choice[s] / denom : choice[s]) * p.scale;
    }
  }
}

}  // namespace

void route(const Tensor& logits, const Tensor& score_bias, const MoeConfig& o, Tensor& expert, Tensor& weight) {
  detail::require_device("cuda route", "logits", logits);
  detail::require_device("cuda route", "expert", expert);
  detail::require_device("cuda route", "weight", weight);
  detail::require_dtype("cuda route", "logits", logits, DType::kF32);
  detail::require_dtype("cuda route", "expert", expert, DType::kI32, DType::kI32);
  detail::require_dtype("cuda route", "weight", weight, DType::kF32);
  SY_REQUIRE(logits.dim() == 2, InvalidArgument, "cuda route", "logits ", logits.describe());
  const int64_t t = logits.size(0);
  const int e = static_cast<int>(logits.size(1));
  SY_REQUIRE(e == o.num_experts && e >= 1 && e <= kMaxExperts && o.top_k >= 1 && o.top_k <= e, InvalidArgument,
             "cuda route", e, " experts (at most ", kMaxExperts, "), top_k ", o.top_k);
  SY_REQUIRE(expert.numel() == t * o.top_k && weight.numel() == t * o.top_k, InvalidArgument, "cuda route",
             "expert ", expert.describe(), " weight ", weight.describe(), " for ", t, " tokens, top ", o.top_k);
  const int groups = std::max(1, o.num_groups);
  SY_REQUIRE(e % groups == 0 && o.topk_groups >= 1 && o.topk_groups <= groups, InvalidArgument, "cuda route",
             e, " experts in ", groups, " groups, top ", o.topk_groups, " groups");
  const bool has_bias = o.score_bias && score_bias.defined();
  if (has_bias) {
    detail::require_device("cuda route", "score_bias", score_bias);
    detail::require_dtype("cuda route", "score_bias", score_bias, DType::kF32);
    SY_REQUIRE(score_bias.numel() == e, InvalidArgument, "cuda route", "score_bias ", score_bias.describe());
  }
  if (t == 0) return;
  RouterParams p{e,
                 o.top_k,
                 groups,
                 o.topk_groups,
                 o.score_function == ScoreFunction::kSigmoid,
                 o.softmax_over_topk,
                 o.norm_topk_prob,
                 o.group_score == GroupScore::kTop2Sum,
                 has_bias,
                 static_cast<float>(o.routed_scaling_factor)};
  SY_REQUIRE(t <= 0x7fffffff, InvalidArgument, "cuda route", t, " tokens in one call");
  // One thread per expert, whole warps: the block-wide argmax of each top-k round scans one entry per warp
  // (Qwen3's 128 experts: 4 warps, not 8).
  const int threads = (e + 31) / 32 * 32;
  router_kernel<<<static_cast<unsigned>(t), threads, 0, stream()>>>(
      logits.f32(), has_bias ? score_bias.f32() : nullptr, p, expert.i32(), weight.f32());
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
