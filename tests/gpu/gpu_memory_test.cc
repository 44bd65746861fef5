// The device memory layer: caching allocator reuse, device storage lifetime, host <-> device round trips.
#include "gpu_harness.h"

namespace sy::test {
namespace {

TEST(GpuMemory, RoundTripKeepsBytesForEveryDtype) {
  SY_SKIP_WITHOUT_GPU();
  Tensor a = rand_tensor({37, 5});
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Tensor h = a.to(dt);
    Tensor d = cuda::to_device(h);
    EXPECT_EQ(d.device(), Device::kCuda);
    Tensor back = cuda::to_host(d);
    EXPECT_EQ(back.device(), Device::kCpu);
    ASSERT_EQ(back.nbytes(), h.nbytes());
    EXPECT_EQ(std::memcmp(back.raw(), h.raw(), h.nbytes()), 0);
  }
  Tensor empty = cuda::to_host(cuda::to_device(Tensor::empty({0, 4}, DType::kF32)));
  EXPECT_EQ(empty.numel(), 0);
}

TEST(GpuMemory, FreedBlocksAreReusedFromTheCache) {
  SY_SKIP_WITHOUT_GPU();
  EXPECT_EQ(cuda::bucket_size(1), 512u);
  EXPECT_EQ(cuda::bucket_size(513), 1024u);
  EXPECT_EQ(cuda::bucket_size((1u << 20) + 1), (1u << 20) + (256u << 10));
  void* first = nullptr;
  {
    Tensor t = Tensor::empty({1000, 1000}, DType::kF32, Device::kCuda);  // 4 MB
    first = t.raw();
  }
  cuda::AllocatorStats before = cuda::allocator_stats();
  Tensor again = Tensor::empty({999, 1001}, DType::kF32, Device::kCuda);  // same 4 MiB bucket
  cuda::AllocatorStats after = cuda::allocator_stats();
  EXPECT_EQ(again.raw(), first);
  EXPECT_EQ(after.num_cuda_mallocs, before.num_cuda_mallocs);
  EXPECT_EQ(after.num_reuses, before.num_reuses + 1);
  Tensor z = Tensor::zeros({3, 3}, DType::kF32, Device::kCuda);
  for (float x : cuda::to_host(z).to_f32_vector()) EXPECT_EQ(x, 0.f);
}

TEST(GpuMemory, BadArgumentsThrowInsteadOfAborting) {
  SY_SKIP_WITHOUT_GPU();
  Tensor host = rand_tensor({2, 2});
  EXPECT_THROW(cuda::to_host(host), InvalidArgument);
  EXPECT_THROW(cuda::to_device(cuda::to_device(host)), InvalidArgument);
  Tensor d = cuda::to_device(host), y = cuda::to_device(host);
  EXPECT_THROW(cuda::rms_norm(host, d, 1e-6f, y), InvalidArgument);  // x on the host
}

}  // namespace
}  // namespace sy::test
