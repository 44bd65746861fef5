// Token dispatcher under mpirun. Every rank can rebuild every rank's tokens and routing from seeds, so:
//   - rows that arrive at an expert encode (source rank, token) and are checked one by one;
//   - dropless all-to-all output equals the single-rank MoE block over all ranks' tokens bit for bit (fp32);
//   - capacity dropping keeps exactly the assignments a direct reference keeps (probability and position);
//   - all-to-all and all-gather give identical expert inputs and outputs equal within 1e-6 (the all-gather
//     combine sums partial outputs across ranks, a different rounding order);
//   - int8 payloads stay within the quantisation error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "dist_util.h"
#include "switchyard/moe/dispatch.h"
#include "switchyard/moe/experts.h"
#include "switchyard/moe/token_dispatcher.h"

namespace sy::moe {
namespace {

constexpr int kExperts = 8, kTopK = 2;
constexpr int64_t kHidden = 16, kInter = 8;

parallel::Comm& world() { return *test::dist_world(); }

// tokens on rank r in case c; rank 1 has none in case 1 (an idle rank must still take part).
int64_t tokens_of(int r, int c) { return c == 1 && r == 1 ? 0 : 5 + 3 * r + 4 * c; }

struct RankData {
  Tensor x;        // (tokens, hidden)
  Routing routing;
};

RankData rank_data(int r, int c) {
  RankData d;
  const int64_t n = tokens_of(r, c);
  d.x = Tensor::from_vector({n, kHidden}, test::seeded_floats(1000 + 17 * r + c, n * kHidden));
  MoeConfig m;
  m.num_experts = kExperts;
  m.top_k = kTopK;
  m.norm_topk_prob = true;
  Tensor logits = Tensor::from_vector({n, kExperts}, test::seeded_floats(5000 + 31 * r + c, n * kExperts, -2.f, 2.f));
  if (n == 0) {
    d.routing.top_k = kTopK;
    return d;
  }
  d.routing = route(logits, Tensor(), m);
  return d;
}

std::vector<GatedMlpWeights> expert_weights() {
  std::vector<GatedMlpWeights> w(kExperts);
  for (int e = 0; e < kExperts; ++e) {
    w[e].gate = Tensor::from_vector({kInter, kHidden}, test::seeded_floats(90 + 3 * e, kInter * kHidden));
    w[e].up = Tensor::from_vector({kInter, kHidden}, test::seeded_floats(91 + 3 * e, kInter * kHidden));
    w[e].down = Tensor::from_vector({kHidden, kInter}, test::seeded_floats(92 + 3 * e, kInter * kHidden));
  }
  return w;
}

// The distributed MoE block: plan, dispatch, this rank's experts, combine.
Tensor ep_moe(const TokenDispatcher& d, const RankData& data, const std::vector<GatedMlpWeights>& w,
              Tensor* expert_input = nullptr) {
  DispatchHandle h = d.plan(data.routing);
  Tensor in = d.dispatch(data.x, h);
  if (expert_input) *expert_input = in;
  Tensor y = run_expert_blocks(in, h.expert_offsets, w.data() + d.first_local_expert(), ActivationOptions{});
  return d.combine(y, h);
}

// Single-rank reference over every rank's tokens, concatenated in rank order; returns rank r's rows.
Tensor single_rank_reference(int c, int r) {
  const int p = world().size();
  std::vector<float> xs, ws;
  std::vector<int32_t> es;
  int64_t n = 0, first = 0;
  for (int s = 0; s < p; ++s) {
    RankData d = rank_data(s, c);
    if (s == r) first = n;
    n += d.x.size(0);
    xs.insert(xs.end(), d.x.f32(), d.x.f32() + d.x.numel());
    es.insert(es.end(), d.routing.expert.begin(), d.routing.expert.end());
    ws.insert(ws.end(), d.routing.weight.begin(), d.routing.weight.end());
  }
  Routing all{n, kTopK, es, ws};
  Tensor x = Tensor::from_vector({n, kHidden}, xs);
  DispatchLayout l = make_dispatch_layout(all, kExperts);
  Tensor y = run_experts(permute_tokens(x, l), l, expert_weights(), ActivationOptions{});
  Tensor out = Tensor::zeros({n, kHidden}, DType::kF32);
  combine_tokens(y, l, all, out);
  return out.slice(0, first, first + tokens_of(r, c)).contiguous();
}

double max_rel_diff(const Tensor& a, const Tensor& b) {
  double num = 0, den = 1e-30;
  for (int64_t i = 0; i < a.numel(); ++i) {
    num = std::max(num, std::fabs(double(a.f32()[i]) - b.f32()[i]));
    den = std::max(den, std::fabs(double(b.f32()[i])));
  }
  return num / den;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.f32(), b.f32(), a.numel() * 4) == 0;
}

TEST(TokenDispatcher, RowsArriveAtTheirExpertsTaggedBySourceAndToken) {
  const int p = world().size(), r = world().rank();
  for (auto strategy : {DispatchStrategy::kAllToAll, DispatchStrategy::kAllGather}) {
    TokenDispatcher d(world(), kExperts, {strategy});
    RankData data = rank_data(r, 0);
    for (int64_t t = 0; t < data.x.size(0); ++t) {  // row = (source rank, token, 0, ...)
      std::fill(data.x.f32() + t * kHidden, data.x.f32() + (t + 1) * kHidden, 0.f);
      data.x.f32()[t * kHidden] = float(r), data.x.f32()[t * kHidden + 1] = float(t);
    }
    DispatchHandle h = d.plan(data.routing);
    Tensor in = d.dispatch(data.x, h);
    // Expected rows of local expert l: for each source s in order, its tokens routed to l in token order.
    int64_t row = 0;
    for (int l = 0; l < d.num_local_experts(); ++l) {
      const int e = d.first_local_expert() + l;
      for (int s = 0; s < p; ++s) {
        RankData sd = rank_data(s, 0);
        for (int64_t t = 0; t < sd.routing.num_tokens; ++t) {
          for (int k = 0; k < kTopK; ++k) {
            if (sd.routing.expert[t * kTopK + k] != e) continue;
            ASSERT_LT(row, in.size(0));
            EXPECT_EQ(in.f32()[row * kHidden], float(s)) << "expert " << e << " row " << row;
            EXPECT_EQ(in.f32()[row * kHidden + 1], float(t)) << "expert " << e << " row " << row;
            ++row;
          }
        }
      }
      EXPECT_EQ(row, h.expert_offsets[l + 1]);
    }
    EXPECT_EQ(row, in.size(0));
    // Combine with "expert output = (e + 1) * input" returns sum_k w_k (e_k + 1) x.
    Tensor y = in.contiguous();
    for (int l = 0; l < d.num_local_experts(); ++l) {
      for (int64_t i = h.expert_offsets[l] * kHidden; i < h.expert_offsets[l + 1] * kHidden; ++i) {
        y.f32()[i] *= float(d.first_local_expert() + l + 1);
      }
    }
    Tensor out = d.combine(y, h);
    for (int64_t t = 0; t < data.x.size(0); ++t) {
      float scale = 0;
      for (int k = 0; k < kTopK; ++k) scale += data.routing.weight[t * kTopK + k] * (data.routing.expert[t * kTopK + k] + 1);
      EXPECT_NEAR(out.f32()[t * kHidden + 1], scale * float(t), 1e-4f * (1 + t));
    }
  }
}

TEST(TokenDispatcher, DroplessAllToAllEqualsSingleRankBitForBit) {
  const int r = world().rank();
  const auto w = expert_weights();
  for (int c = 0; c < 2; ++c) {
    TokenDispatcher d(world(), kExperts, {DispatchStrategy::kAllToAll});
    Tensor ours = ep_moe(d, rank_data(r, c), w);
    Tensor ref = single_rank_reference(c, r);
    EXPECT_TRUE(bitwise_equal(ours, ref)) << "case " << c << " max rel diff " << max_rel_diff(ours, ref);
  }
}

TEST(TokenDispatcher, AllGatherAgreesWithAllToAll) {
  const int r = world().rank();
  const auto w = expert_weights();
  for (double factor : {0.0, 1.0}) {
    for (int c = 0; c < 2; ++c) {
      DispatcherOptions o;
      o.capacity_factor = factor;
      TokenDispatcher a2a(world(), kExperts, o);
      o.strategy = DispatchStrategy::kAllGather;
      TokenDispatcher ag(world(), kExperts, o);
      Tensor in_a, in_g;
      Tensor out_a = ep_moe(a2a, rank_data(r, c), w, &in_a);
      Tensor out_g = ep_moe(ag, rank_data(r, c), w, &in_g);
      EXPECT_TRUE(bitwise_equal(in_a, in_g)) << "expert inputs differ, case " << c << " factor " << factor;
      EXPECT_LE(max_rel_diff(out_g, out_a), 1e-6) << "case " << c << " factor " << factor;
    }
  }
}

// Direct reference of capacity dropping for one rank: per expert, keep the `capacity` assignments with the
// highest weight (ties: earlier token) or the first `capacity` in token order.
std::vector<bool> reference_keep(const Routing& routing, double factor, DropPolicy policy) {
  const int64_t n = routing.num_tokens;
  const int64_t cap = static_cast<int64_t>(std::ceil(double(n) * kTopK / kExperts * factor));
  std::vector<bool> keep(n * kTopK, false);
  for (int e = 0; e < kExperts; ++e) {
    std::vector<int64_t> mine;
    for (int64_t a = 0; a < n * kTopK; ++a) {
      if (routing.expert[a] == e) mine.push_back(a);
    }
    if (policy == DropPolicy::kProbability) {
      std::sort(mine.begin(), mine.end(), [&](int64_t a, int64_t b) {
        return routing.weight[a] != routing.weight[b] ? routing.weight[a] > routing.weight[b] : a < b;
      });
    }
    for (size_t i = 0; i < mine.size() && int64_t(i) < cap; ++i) keep[mine[i]] = true;
  }
  return keep;
}

TEST(TokenDispatcher, CapacityDropsExactlyWhatThePolicySays) {
  const int r = world().rank();
  const auto w = expert_weights();
  for (auto policy : {DropPolicy::kProbability, DropPolicy::kPosition}) {
    for (bool pad : {false, true}) {
      for (double factor : {0.5, 1.0}) {
        DispatcherOptions o;
        o.capacity_factor = factor;
        o.drop_policy = policy;
        o.pad_to_capacity = pad;
        TokenDispatcher d(world(), kExperts, o);
        RankData data = rank_data(r, 0);
        DispatchHandle h = d.plan(data.routing);
        std::vector<bool> keep = reference_keep(data.routing, factor, policy);
        int64_t dropped = 0;
        for (size_t a = 0; a < keep.size(); ++a) {
          EXPECT_EQ(h.send.assignment_row[a] >= 0, bool(keep[a])) << "assignment " << a;
          dropped += !keep[a];
        }
        if (factor == 0.5) EXPECT_GT(dropped, 0);
        const int64_t cap = expert_capacity(data.routing.num_tokens, kTopK, kExperts, factor);
        if (pad) {
          for (int64_t n : h.tokens_per_local_expert()) {
            // every source pads to its own capacity
            int64_t expect = 0;
            for (int s = 0; s < world().size(); ++s) expect += expert_capacity(tokens_of(s, 0), kTopK, kExperts, factor);
            EXPECT_EQ(n, expect);
          }
        }
        (void)cap;
        // Output: each kept slot's expert applied to the token alone, weighted; dropped slots add nothing.
        Tensor out = ep_moe(d, data, w);
        Tensor ref = Tensor::zeros({data.routing.num_tokens, kHidden}, DType::kF32);
        for (int64_t t = 0; t < data.routing.num_tokens; ++t) {
          for (int k = 0; k < kTopK; ++k) {
            if (!keep[t * kTopK + k]) continue;
            Tensor y = gated_mlp(data.x.slice(0, t, t + 1).contiguous(), w[data.routing.expert[t * kTopK + k]], {});
            for (int64_t i = 0; i < kHidden; ++i) ref.f32()[t * kHidden + i] += data.routing.weight[t * kTopK + k] * y.f32()[i];
          }
        }
        EXPECT_LE(max_rel_diff(out, ref), 1e-5) << "policy " << int(policy) << " pad " << pad << " factor " << factor;
      }
    }
  }
}

TEST(TokenDispatcher, Int8PayloadWithinQuantisationError) {
  const int r = world().rank();
  const auto w = expert_weights();
  for (auto strategy : {DispatchStrategy::kAllToAll, DispatchStrategy::kAllGather}) {
    DispatcherOptions o;
    o.strategy = strategy;
    o.int8_payload = true;
    TokenDispatcher d(world(), kExperts, o);
    Tensor ours = ep_moe(d, rank_data(r, 0), w);
    Tensor ref = single_rank_reference(0, r);
    const double rel = max_rel_diff(ours, ref);
    EXPECT_LE(rel, 2e-2);
    EXPECT_GT(rel, 0.0);  // it really was quantised
  }
}

TEST(TokenDispatcher, RejectsExpertCountsThatDoNotSplit) {
  if (world().size() < 3) GTEST_SKIP() << "every expert count here splits over " << world().size() << " ranks";
  EXPECT_THROW(TokenDispatcher(world(), world().size() + 1), InvalidArgument);
}

}  // namespace
}  // namespace sy::moe
