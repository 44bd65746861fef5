// The NCCL communicator and the device token dispatcher on one GPU (a one-rank NCCL communicator bootstrapped
// from the local one): every collective on device memory, the block exchange with several blocks to self, and
// the device dispatcher at EP = 1 against the CPU dispatcher (same row order, same combine). Multi-rank runs
// are in the dist suite, which needs one GPU per rank. Skips without a device or without NCCL.
#include "gpu_harness.h"
#include "switchyard/kernels/cuda_memory.h"
#include "switchyard/moe/device_dispatcher.h"
#include "switchyard/moe/token_dispatcher.h"
#include "switchyard/parallel/comm.h"

namespace sy::test {
namespace {

#define SY_SKIP_WITHOUT_NCCL()                                                  \
  do {                                                                          \
    SY_SKIP_WITHOUT_GPU();                                                      \
    if (!parallel::nccl_available()) GTEST_SKIP() << "built without NCCL";      \
  } while (0)

std::vector<float> host_floats(const Tensor& device) { return cuda::to_host(device).to_f32_vector(); }

TEST(GpuNccl, OneRankCollectivesAndExchangeOnDeviceMemory) {
  SY_SKIP_WITHOUT_NCCL();
  auto local = parallel::make_local_comm();
  auto nccl = parallel::make_nccl_comm(*local, 0);
  EXPECT_STREQ(nccl->backend(), "nccl");
  EXPECT_TRUE(nccl->device_memory());
  EXPECT_EQ(nccl->size(), 1);
  Tensor a = cuda::to_device(Tensor::from_vector({4}, std::vector<float>{1, -2, 3, 4}));
  nccl->all_reduce(a.raw(), 4, DType::kF32, parallel::ReduceOp::kMax);
  EXPECT_EQ(host_floats(a), (std::vector<float>{1, -2, 3, 4}));
  Tensor g = Tensor::empty({4}, DType::kF32, Device::kCuda);
  nccl->all_gather_v(a.raw(), 4, g.raw(), {4}, DType::kF32);
  EXPECT_EQ(host_floats(g), host_floats(a));
  Tensor t = Tensor::empty({4}, DType::kF32, Device::kCuda);
  nccl->all_to_all_v(a.raw(), {4}, t.raw(), {4}, DType::kF32);
  EXPECT_EQ(host_floats(t), host_floats(a));
  // Three blocks to self, one empty: pair in order.
  Tensor src = cuda::to_device(Tensor::from_vector({6}, std::vector<float>{10, 11, 12, 13, 14, 15}));
  Tensor dst = poisoned_device({6});
  float* s = src.f32();
  float* d = dst.f32();
  nccl->exchange({{0, s, 2}, {0, s + 2, 0}, {0, s + 2, 4}}, {{0, d + 4, 2}, {0, d, 4}}, DType::kF32);
  EXPECT_EQ(host_floats(dst), (std::vector<float>{12, 13, 14, 15, 10, 11}));
  nccl->barrier();
  auto sub = nccl->split(0, 0);
  ASSERT_TRUE(sub);
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(nccl->split(-1, 0), nullptr);
  EXPECT_THROW(nccl->exchange({{1, s, 1}}, {}, DType::kF32), InvalidArgument);
  EXPECT_THROW(parallel::make_nccl_comm(*local, 99), InvalidArgument);
}

TEST(GpuNccl, DeviceDispatcherAtEp1MatchesTheCpuDispatcher) {
  SY_SKIP_WITHOUT_NCCL();
  auto local = parallel::make_local_comm();
  auto nccl = parallel::make_nccl_comm(*local, 0);
  struct Case { const char* name; int64_t t; int top_k, experts; std::function<int(int64_t, int)> pick; };
  const Case cases[] = {
      {"random", 300, 8, 64, [](int64_t, int) { return static_cast<int>(rand_int(0, 63)); }},
      {"one token", 1, 4, 16, [](int64_t, int s) { return 3 * s + 1; }},
      {"every slot on one expert", 40, 1, 8, [](int64_t, int) { return 7; }},
      {"empty experts", 129, 3, 32, [](int64_t i, int s) { return static_cast<int>(2 * ((i + 5 * s) % 16)); }},
  };
  for (const Case& c : cases) {
    moe::Routing r = make_routing(c.t, c.top_k, c.experts, c.pick);
    Tensor expert = Tensor::empty({c.t, c.top_k}, DType::kI32);
    for (size_t i = 0; i < r.expert.size(); ++i) expert.i32()[i] = r.expert[i];
    Tensor weight = Tensor::from_vector({c.t, c.top_k}, r.weight);
    const int64_t hidden = 64;
    Tensor x = rand_tensor({c.t, hidden});
    moe::TokenDispatcher cpu(*local, c.experts);
    moe::DispatchHandle ch = cpu.plan(r);
    Tensor ref_rows = cpu.dispatch(x, ch);
    Tensor expert_out = rand_tensor(ref_rows.shape());
    Tensor ref_out = cpu.combine(expert_out, ch);

    moe::DeviceTokenDispatcher gpu(*nccl, c.experts);
    auto gh = gpu.plan(cuda::to_device(expert), cuda::to_device(weight));
    EXPECT_EQ(moe::DeviceTokenDispatcher::tokens_per_local_expert(*gh), ch.tokens_per_local_expert()) << c.name;
    Tensor rows = gpu.dispatch(cuda::to_device(x), *gh);
    expect_close(std::string(c.name) + " dispatch f32", rows, ref_rows, 0.0);
    Tensor rows_bf16 = gpu.dispatch(cuda::to_device(x.to(DType::kBF16)), *gh);
    expect_close(std::string(c.name) + " dispatch bf16", rows_bf16, ref_rows, kBf16Tol);
    Tensor out = gpu.combine(cuda::to_device(expert_out), *gh);
    expect_close(std::string(c.name) + " combine", out, ref_out, kF32Tol);
  }
}

}  // namespace
}  // namespace sy::test
