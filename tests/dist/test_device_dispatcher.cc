// The device token dispatcher over NCCL under mpirun, one GPU per rank (skipped unless every rank has its own
// GPU, so CPU-only CI skips it; the multi-GPU machine runs it). The device dispatcher must move exactly what
// the CPU dispatcher moves over MPI for the same tokens and routing: expert inputs equal bit for bit (f32)
// and combined outputs equal within 1e-6; payload rows encode their source rank and token, checked row by row.
#include <gtest/gtest.h>

#include <cmath>

#include "dist_util.h"
#include "switchyard/kernels/device.h"
#include "switchyard/moe/device_dispatcher.h"
#include "switchyard/moe/token_dispatcher.h"
#if SY_HAS_CUDA
#include "switchyard/kernels/cuda_memory.h"
#endif

namespace sy::moe {
namespace {

#if SY_HAS_CUDA
// int8: rows quantised on both sides (the device packs bitwise as the CPU), so the rows still match exactly.
void check_against_mpi_dispatcher(bool int8);

TEST(DeviceDispatcher, MatchesTheMpiDispatcherRowByRow) { check_against_mpi_dispatcher(false); }
TEST(DeviceDispatcher, Int8PayloadMatchesTheMpiDispatcherRowByRow) { check_against_mpi_dispatcher(true); }

void check_against_mpi_dispatcher(bool int8) {
  parallel::Comm& world = *test::dist_world();
  if (!parallel::nccl_available()) GTEST_SKIP() << "built without NCCL";
  const int devices = static_cast<int>(cuda_devices().size());
  int enough = devices >= world.size() ? 1 : 0;  // every rank must agree to run or to skip
  std::vector<int32_t> all = world.all_gather(std::vector<int32_t>{enough});
  for (int32_t v : all) enough &= v;
  if (!enough) GTEST_SKIP() << "needs one GPU per rank (" << devices << " visible, " << world.size() << " ranks)";
  auto nccl = parallel::make_nccl_comm(world, world.rank() % devices);
  const int experts = 4 * world.size(), top_k = 3;
  const int64_t tokens = 37 + 11 * world.rank(), hidden = 24;
  // Row t of rank r: element j = r * 1000 + t + j / 1024 (exact in f32; identifies the source row).
  std::vector<float> xv(static_cast<size_t>(tokens * hidden));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < hidden; ++j) xv[t * hidden + j] = world.rank() * 1000.f + t + j / 1024.f;
  }
  if (int8) {  // signed values with spread (the encoding above would quantise every element alike), and
    // values near half a step, (k + 0.5) * amax / 127, at column 7
    xv = test::seeded_floats(300 + world.rank(), static_cast<size_t>(tokens * hidden), -2.5f, 2.5f);
    for (int64_t t = 0; t < tokens; ++t) {
      xv[t * hidden] = 2.54f;  // amax: scale 0.02
      xv[t * hidden + 7] = (static_cast<float>(t % 9) - 4.f + 0.5f) * (2.54f / 127.f);
    }
  }
  Tensor x = Tensor::from_vector({tokens, hidden}, xv);
  Routing r;
  r.num_tokens = tokens;
  r.top_k = top_k;
  std::vector<float> u = test::seeded_floats(77 + world.rank(), tokens * top_k, 0.f, 1.f);
  for (int64_t a = 0; a < tokens * top_k; ++a) {
    r.expert.push_back(static_cast<int32_t>((a * 7 + world.rank() * 3 + static_cast<int64_t>(u[a] * 5)) % experts));
    r.weight.push_back(0.25f + u[a]);
  }
  DispatcherOptions options;
  options.int8_payload = int8;
  TokenDispatcher cpu(world, experts, options);
  DispatchHandle ch = cpu.plan(r);
  Tensor ref_rows = cpu.dispatch(x, ch);
  // Every received row is a source token: check its encoding (f32 only; int8 rows are compared with the
  // CPU dispatcher's bit for bit below).
  for (int64_t i = 0; i < ref_rows.size(0) && !int8; ++i) {
    const float v = ref_rows.f32()[i * hidden];
    EXPECT_EQ(ref_rows.f32()[i * hidden + 5], v + 5.f / 1024.f) << "row " << i;
  }
  Tensor expert_out = Tensor::from_vector(ref_rows.shape(), test::seeded_floats(900 + world.rank(), ref_rows.numel()));
  Tensor ref_out = cpu.combine(expert_out, ch);

  DeviceTokenDispatcher gpu(*nccl, experts, int8);
  Tensor expert = Tensor::empty({tokens, top_k}, DType::kI32);
  for (size_t i = 0; i < r.expert.size(); ++i) expert.i32()[i] = r.expert[i];
  auto gh = gpu.plan(cuda::to_device(expert), cuda::to_device(Tensor::from_vector({tokens, top_k}, r.weight)));
  EXPECT_EQ(DeviceTokenDispatcher::tokens_per_local_expert(*gh), ch.tokens_per_local_expert());
  Tensor rows = cuda::to_host(gpu.dispatch(cuda::to_device(x), *gh));
  ASSERT_EQ(rows.shape(), ref_rows.shape());
  EXPECT_EQ(rows.to_f32_vector(), ref_rows.to_f32_vector());
  Tensor out = cuda::to_host(gpu.combine(cuda::to_device(expert_out), *gh));
  std::vector<float> a = out.to_f32_vector(), b = ref_out.to_f32_vector();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6 * (1 + std::fabs(b[i]))) << i;
}
#endif

}  // namespace
}  // namespace sy::moe
