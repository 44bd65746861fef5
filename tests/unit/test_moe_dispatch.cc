// Router and DispatchLayout invariants: prefix sums, inverse permutation, empty experts, every token on
// one expert, group-limited selection, and permute -> combine with unit weights returning the input.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>
#include <random>

#include "switchyard/moe/dispatch.h"
#include "switchyard/moe/router.h"

namespace sy::moe {
namespace {

Routing fixed_routing(const std::vector<int32_t>& experts, int top_k) {
  Routing r;
  r.top_k = top_k;
  r.num_tokens = static_cast<int64_t>(experts.size()) / top_k;
  r.expert = experts;
  r.weight.assign(experts.size(), 1.f);
  return r;
}

TEST(DispatchLayout, CountsPrefixSumsAndInversePermutation) {
  Routing r = fixed_routing({2, 0, 2, 3, 0, 2}, 2);  // 3 tokens, top-2; expert 1 receives nothing
  DispatchLayout l = make_dispatch_layout(r, 4);
  EXPECT_EQ(l.tokens_per_expert, (std::vector<int64_t>{2, 0, 3, 1}));
  EXPECT_EQ(l.offsets, (std::vector<int64_t>{0, 2, 2, 5, 6}));
  for (int64_t a = 0; a < 6; ++a) EXPECT_EQ(l.row_assignment[l.assignment_row[a]], a);
  // Rows of one expert keep token order.
  EXPECT_EQ(l.row_assignment[2], 0);  // token 0 slot 0 -> expert 2
  EXPECT_EQ(l.row_assignment[3], 2);  // token 1 slot 0
  EXPECT_EQ(l.row_assignment[4], 5);  // token 2 slot 1
}

TEST(DispatchLayout, AllTokensOnOneExpertAndPermuteCombineRoundTrip) {
  const int64_t tokens = 5, hidden = 3;
  Routing r = fixed_routing(std::vector<int32_t>(tokens, 1), 1);
  DispatchLayout l = make_dispatch_layout(r, 3);
  EXPECT_EQ(l.tokens_per_expert, (std::vector<int64_t>{0, 5, 0}));
  Tensor x = Tensor::empty({tokens, hidden}, DType::kF32);
  std::iota(x.f32(), x.f32() + x.numel(), 0.f);
  Tensor permuted = permute_tokens(x, l);
  Tensor out = Tensor::zeros({tokens, hidden}, DType::kF32);
  combine_tokens(permuted, l, r, out);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(out.f32()[i], x.f32()[i]);
}

TEST(Router, SoftmaxTopKRenormalisedAndScaled) {
  MoeConfig o;
  o.num_experts = 4;
  o.top_k = 2;
  o.norm_topk_prob = true;
  o.routed_scaling_factor = 2.0;
  Tensor logits = Tensor::from_vector({1, 4}, {0.f, 2.f, 1.f, -1.f});
  Routing r = route(logits, Tensor(), o);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(r.weight[0] + r.weight[1], 2.0, 1e-6);
  EXPECT_NEAR(r.weight[0] / r.weight[1], std::exp(1.0), 1e-5);
}

TEST(Router, GroupLimitedSigmoidWithBiasSelectsOnlyInKeptGroups) {
  MoeConfig o;
  o.num_experts = 8;
  o.top_k = 2;
  o.score_function = ScoreFunction::kSigmoid;
  o.score_bias = true;
  o.num_groups = 4;
  o.topk_groups = 1;
  o.group_score = GroupScore::kTop2Sum;
  // Expert 0 alone has the best score, but group 3 (experts 6, 7) has the best top-2 sum.
  Tensor logits = Tensor::from_vector({1, 8}, {3.f, -3.f, 0.f, 0.f, 0.f, 0.f, 1.5f, 1.5f});
  Tensor bias = Tensor::zeros({8}, DType::kF32);
  Routing r = route(logits, bias, o);
  EXPECT_EQ(std::set<int32_t>(r.expert.begin(), r.expert.end()), (std::set<int32_t>{6, 7}));
  // The bias moves selection but not the weights: a large bias on expert 2 pulls its group in.
  bias.f32()[2] = 10.f;
  bias.f32()[3] = 10.f;
  r = route(logits, bias, o);
  EXPECT_EQ(std::set<int32_t>(r.expert.begin(), r.expert.end()), (std::set<int32_t>{2, 3}));
  EXPECT_NEAR(r.weight[0], 0.5, 1e-6);  // sigmoid(0), no bias in the weight
}

TEST(Router, SoftmaxOverTopKOnly) {
  MoeConfig o;
  o.num_experts = 4;
  o.top_k = 2;
  o.softmax_over_topk = true;
  Tensor logits = Tensor::from_vector({1, 4}, {5.f, 1.f, 4.f, -2.f});
  Routing r = route(logits, Tensor(), o);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{0, 2}));
  EXPECT_NEAR(r.weight[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
}

}  // namespace
}  // namespace sy::moe
