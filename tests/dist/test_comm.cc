// Comm collectives under mpirun: payloads encode the sender's rank (and position), so every received
// element is checked against where it must have come from.
#include <gtest/gtest.h>

#include <numeric>

#include "dist_util.h"
#include "switchyard/parallel/layout.h"

namespace sy::parallel {
namespace {

Comm& world() { return *test::dist_world(); }

TEST(Comm, AllReduceSumMaxMin) {
  const int p = world().size(), r = world().rank();
  std::vector<float> v{float(r), float(r + 1), -float(r)};
  world().all_reduce(v, ReduceOp::kSum);
  EXPECT_EQ(v[0], p * (p - 1) / 2.f);
  EXPECT_EQ(v[1], p * (p + 1) / 2.f);
  std::vector<int64_t> m{r, -r};
  world().all_reduce(m, ReduceOp::kMax);
  EXPECT_EQ(m, (std::vector<int64_t>{p - 1, 0}));
  std::vector<int32_t> n{r};
  world().all_reduce(n, ReduceOp::kMin);
  EXPECT_EQ(n[0], 0);
}

// exchange(): every rank sends each peer (itself included) blocks of sizes that depend on both ranks, some
// empty, straight into the receiver's scattered destinations; each element encodes sender, receiver,
// block and position.
TEST(Comm, ExchangeBlocksPairInOrderIncludingSelfAndEmpty) {
  const int p = world().size(), r = world().rank();
  auto value = [](int from, int to, int block, int i) { return 1e6f * from + 1e4f * to + 100.f * block + i; };
  auto count = [](int from, int to, int block) { return (from + 2 * to + block) % 4; };  // 0..3, some empty
  std::vector<std::vector<float>> out_data, in_data;
  std::vector<SendBlock> sends;
  std::vector<RecvBlock> recvs;
  for (int peer = p - 1; peer >= 0; --peer) {  // any order of peers; order within a pair is what pairs blocks
    for (int b = 0; b < 3; ++b) {
      std::vector<float> d(count(r, peer, b));
      for (int i = 0; i < static_cast<int>(d.size()); ++i) d[i] = value(r, peer, b, i);
      out_data.push_back(std::move(d));
      in_data.emplace_back(count(peer, r, b), -1.f);
    }
  }
  size_t i = 0;
  for (int peer = p - 1; peer >= 0; --peer) {
    for (int b = 0; b < 3; ++b, ++i) {
      sends.push_back({peer, out_data[i].data(), static_cast<int64_t>(out_data[i].size())});
      recvs.push_back({peer, in_data[i].data(), static_cast<int64_t>(in_data[i].size())});
    }
  }
  world().exchange(sends, recvs, DType::kF32);
  i = 0;
  for (int peer = p - 1; peer >= 0; --peer) {
    for (int b = 0; b < 3; ++b, ++i) {
      for (int j = 0; j < static_cast<int>(in_data[i].size()); ++j) {
        EXPECT_EQ(in_data[i][j], value(peer, r, b, j)) << "from " << peer << " block " << b << " element " << j;
      }
    }
  }
  EXPECT_THROW(world().exchange({{p, nullptr, 1}}, {}, DType::kF32), InvalidArgument);
}

TEST(Comm, ReduceScatterAllGatherEqualAndVariable) {
  const int p = world().size(), r = world().rank();
  // send[i] = 1000 * r + i, so block b summed over ranks is sum_r (1000 r) + i.
  std::vector<float> send(p * 3);
  for (int i = 0; i < p * 3; ++i) send[i] = 1000.f * r + i;
  std::vector<float> recv(3);
  world().reduce_scatter(send.data(), recv.data(), 3, DType::kF32, ReduceOp::kSum);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(recv[i], 1000.f * p * (p - 1) / 2 + p * (r * 3 + i));
  std::vector<int32_t> mine{r, 10 * r};
  auto all = world().all_gather(mine);
  for (int s = 0; s < p; ++s) EXPECT_EQ(all[2 * s + 1], 10 * s);
  // Variable: rank s contributes s + 1 elements of value 100 s + i.
  std::vector<int64_t> counts(p);
  for (int s = 0; s < p; ++s) counts[s] = s + 1;
  std::vector<int64_t> v(r + 1);
  for (int i = 0; i <= r; ++i) v[i] = 100 * r + i;
  std::vector<int64_t> got(std::accumulate(counts.begin(), counts.end(), int64_t{0}));
  world().all_gather_v(v.data(), r + 1, got.data(), counts, DType::kI64);
  size_t k = 0;
  for (int s = 0; s < p; ++s) {
    for (int i = 0; i <= s; ++i) EXPECT_EQ(got[k++], 100 * s + i);
  }
}

TEST(Comm, AllToAllVRowsTraceTheirSender) {
  const int p = world().size(), r = world().rank();
  // Rank r sends (r + d) % 3 elements to rank d, each = 10000 r + 100 d + i.
  std::vector<int64_t> sc(p), rc(p);
  for (int d = 0; d < p; ++d) sc[d] = (r + d) % 3, rc[d] = (d + r) % 3;
  std::vector<int32_t> send, recv(std::accumulate(rc.begin(), rc.end(), int64_t{0}));
  for (int d = 0; d < p; ++d) {
    for (int i = 0; i < sc[d]; ++i) send.push_back(10000 * r + 100 * d + i);
  }
  world().all_to_all_v(send.data(), sc, recv.data(), rc, DType::kI32);
  size_t k = 0;
  for (int s = 0; s < p; ++s) {
    for (int i = 0; i < rc[s]; ++i) EXPECT_EQ(recv[k++], 10000 * s + 100 * r + i);
  }
}

TEST(Comm, SendRecvRingAndBarrier) {
  const int p = world().size(), r = world().rank();
  if (p == 1) GTEST_SKIP() << "needs 2 ranks";
  std::vector<float> out{float(r), 7.f}, in(2);
  if (r % 2 == 0) {
    world().send(out.data(), 2, DType::kF32, (r + 1) % p, 5);
    world().recv(in.data(), 2, DType::kF32, (r + p - 1) % p, 5);
  } else {
    world().recv(in.data(), 2, DType::kF32, (r + p - 1) % p, 5);
    world().send(out.data(), 2, DType::kF32, (r + 1) % p, 5);
  }
  EXPECT_EQ(in[0], float((r + p - 1) % p));
  world().barrier();
}

TEST(Comm, SplitAndLayoutGroups) {
  const int p = world().size(), r = world().rank();
  auto half = world().split(r % 2, r);
  ASSERT_TRUE(half);
  EXPECT_EQ(half->size(), (p + 1 - r % 2) / 2);
  EXPECT_EQ(half->rank(), r / 2);
  std::vector<int32_t> v{r};
  half->all_reduce(v, ReduceOp::kMax);
  EXPECT_EQ(v[0] % 2, r % 2);
  // EP groups of a folded layout: TP = 2 on attention, EP = world on MoE.
  if (p % 2 == 0) {
    ParallelLayout layout({p, 2, 1, 1, 1, p, "tp-cp-ep-dp-pp"});
    auto ep = world().split_groups(layout.expert_groups("ep"));
    auto tp = world().split_groups(layout.attention_groups("tp"));
    EXPECT_EQ(ep->size(), p);
    EXPECT_EQ(tp->size(), 2);
    std::vector<int32_t> w{r};
    tp->all_reduce(w, ReduceOp::kSum);
    EXPECT_EQ(w[0], (r / 2) * 4 + 1);
  }
  auto none = world().split(r == 0 ? -1 : 1, 0);
  EXPECT_EQ(none == nullptr, r == 0);
}

}  // namespace
}  // namespace sy::parallel
