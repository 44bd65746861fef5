// The local (one-rank) communicator and the token dispatcher on it (EP = 1): collectives are copies,
// send/recv to self pairs by tag, a recv with no send fails instead of hanging, and dispatch + combine over a
// local communicator equals the single-process MoE path bit for bit.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "switchyard/moe/dispatch.h"
#include "switchyard/moe/experts.h"
#include "switchyard/moe/token_dispatcher.h"
#include "switchyard/parallel/comm.h"

namespace sy::parallel {
namespace {

TEST(LocalComm, CollectivesAreCopiesAndRecvWithoutSendFails) {
  auto c = world_comm("local");
  EXPECT_EQ(c->size(), 1);
  EXPECT_STREQ(c->backend(), "local");
  std::vector<float> v{1.f, 2.f};
  c->all_reduce(v);
  EXPECT_EQ(v, (std::vector<float>{1.f, 2.f}));
  EXPECT_EQ(c->all_gather(std::vector<int32_t>{7}), (std::vector<int32_t>{7}));
  std::vector<int64_t> out(2);
  std::vector<int64_t> in{4, 5};
  c->all_to_all_v(in.data(), {2}, out.data(), {2}, DType::kI64);
  EXPECT_EQ(out, in);
  float x = 3.f, y = 0.f;
  c->send(&x, 1, DType::kF32, 0, 9);
  c->recv(&y, 1, DType::kF32, 0, 9);
  EXPECT_EQ(y, 3.f);
  EXPECT_THROW(c->recv(&y, 1, DType::kF32, 0, 9), CommError);
  EXPECT_THROW(c->send(&x, 1, DType::kF32, 1, 0), InvalidArgument);
  EXPECT_TRUE(c->split(0, 0));
  EXPECT_FALSE(c->split(-1, 0));
  EXPECT_THROW(world_comm("nccl-please"), InvalidArgument);
}

TEST(LocalComm, ExchangeCopiesSelfBlocksInOrderAndChecksSizes) {
  auto c = world_comm("local");
  std::vector<float> a{1, 2, 3}, b{4}, x(3), y(1);
  c->exchange({{0, a.data(), 3}, {0, nullptr, 0}, {0, b.data(), 1}}, {{0, x.data(), 3}, {0, y.data(), 1}}, DType::kF32);
  EXPECT_EQ(x, a);
  EXPECT_EQ(y, b);
  EXPECT_THROW(c->exchange({{0, a.data(), 3}}, {{0, y.data(), 1}}, DType::kF32), InvalidArgument);
  EXPECT_THROW(c->exchange({}, {{0, y.data(), 1}}, DType::kF32), InvalidArgument);
  EXPECT_THROW(c->exchange({{1, a.data(), 3}}, {}, DType::kF32), InvalidArgument);
}

TEST(LocalComm, DispatcherAtEp1EqualsSingleProcessPath) {
  const int64_t n = 11, hidden = 8, inter = 4;
  const int experts = 4;
  std::mt19937 g(3);
  std::uniform_real_distribution<float> u(-1, 1);
  auto rnd = [&](Shape s) {
    Tensor t = Tensor::empty(s, DType::kF32);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = u(g);
    return t;
  };
  std::vector<moe::GatedMlpWeights> w(experts);
  for (auto& e : w) e = {rnd({inter, hidden}), rnd({inter, hidden}), rnd({hidden, inter}), {}, {}, {}};
  Tensor x = rnd({n, hidden});
  MoeConfig m;
  m.num_experts = experts;
  m.top_k = 2;
  moe::Routing r = moe::route(rnd({n, experts}), Tensor(), m);
  moe::DispatchLayout l = moe::make_dispatch_layout(r, experts);
  Tensor ref = Tensor::zeros({n, hidden}, DType::kF32);
  moe::combine_tokens(moe::run_experts(moe::permute_tokens(x, l), l, w, {}), l, r, ref);
  auto c = make_local_comm();
  for (auto s : {moe::DispatchStrategy::kAllToAll, moe::DispatchStrategy::kAllGather}) {
    moe::TokenDispatcher d(*c, experts, {s});
    moe::DispatchHandle h = d.plan(r);
    Tensor y = moe::run_expert_blocks(d.dispatch(x, h), h.expert_offsets, w.data(), {});
    Tensor out = d.combine(y, h);
    EXPECT_EQ(std::memcmp(out.f32(), ref.f32(), n * hidden * 4), 0);
  }
}

}  // namespace
}  // namespace sy::parallel
