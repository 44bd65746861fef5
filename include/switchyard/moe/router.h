// Router: turns router logits into each token's top-k experts and their combine weights.
// Handles softmax or sigmoid scores, softmax over the selected logits only (gpt-oss), a per-expert score bias
// used for selection only (DeepSeek-V3), group-limited top-k (DeepSeek-V2/V3), renormalisation and scaling.
// Separate from dispatch: it decides, it moves no data.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"

namespace sy::moe {

struct Routing {
  int64_t num_tokens = 0;
  int top_k = 0;
  std::vector<int32_t> expert;  // (num_tokens, top_k): [t, s] = expert chosen by token t in slot s
  std::vector<float> weight;    // (num_tokens, top_k): its combine weight
};

// logits: (tokens, experts) f32 raw router outputs (bias already added); score_bias: (experts,) or undefined.
// Slots are ordered by decreasing selection score; ties go to the lower expert index.
Routing route(const Tensor& logits, const Tensor& score_bias, const MoeConfig& options);

}  // namespace sy::moe

namespace sy::moe {

// Gradient of the routing weights with respect to the router logits: dweight (tokens, top_k) -> dlogits
// (tokens, experts). Selection is treated as fixed (no gradient through the choice of experts).
Tensor route_backward(const Tensor& logits, const MoeConfig& options, const Routing& routing,
                      const std::vector<float>& dweight);

// Router probabilities used by the load-balancing loss: softmax over all experts, or for sigmoid scores the
// scores normalised to sum to one per token.  logits (tokens, experts) -> (tokens, experts).
Tensor balance_probabilities(const Tensor& logits, const MoeConfig& options);
// Backward of balance_probabilities: dprobs (tokens, experts) -> added into dlogits.
void balance_probabilities_backward(const Tensor& logits, const MoeConfig& options, const Tensor& dprobs,
                                    Tensor& dlogits);

}  // namespace sy::moe
