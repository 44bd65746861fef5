// cuda::sample_rows against ops::sample_row on random rows (greedy, temperature, top-k, top-p, ties, vocab
// sizes from 1 to Qwen's 151936), its determinism, its argument checks, and generation with the draw on the
// device against the draw on the host.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "gpu_harness.h"
#include "switchyard/kernels/ops.h"
#include "switchyard/model/generate.h"
#include "switchyard/model/model.h"

namespace sy {
namespace {

using test::rand_int;
using test::rng;

struct Settings {
  float temperature;
  int top_k;
  float top_p;
};

// Token a ranks before token b in the CPU's order (larger logit, then lower id).
bool ranks_before(const float* z, int64_t a, int64_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); }

// Whether the GPU's token g is the CPU's choice for a draw within eps of u (and a top-p within eps of it):
// the float and fixed-point arithmetic of the GPU may put a boundary that close to u on the other side.
// The tokens a draw in [u - eps, u + eps] can pick are those ranked from the pick at u - eps to the pick at
// u + eps.
bool acceptable(const float* z, int64_t vocab, const Settings& s, float u, int64_t g) {
  constexpr double eps = 2e-5;
  for (double dp : {0.0, -eps, eps}) {
    const float p = s.top_p < 1.f ? std::min(1.f, std::max(1e-6f, static_cast<float>(s.top_p + dp))) : 1.f;
    const int64_t lo = ops::sample_row(z, vocab, s.temperature, s.top_k, p, std::max(u - eps, 0.0));
    const int64_t hi = ops::sample_row(z, vocab, s.temperature, s.top_k, p, std::min(u + eps, 1.0 - 1e-12));
    if (g == lo || g == hi || (ranks_before(z, lo, g) && ranks_before(z, g, hi))) return true;
  }
  return false;
}

TEST(GpuSampling, SampleRowsMatchesCpuReference) {
  SY_SKIP_WITHOUT_GPU();
  const Settings settings[] = {{0.f, 0, 1.f},   {1.f, 0, 1.f},    {0.7f, 50, 1.f}, {1.f, 0, 0.9f},
                               {1.5f, 5, 0.8f}, {0.6f, 1, 1.f},   {1.f, 0, 0.3f},  {2.f, 1000, 0.95f},
                               {1.f, 200000, 1.f}};
  int64_t rows_checked = 0, exact = 0;
  for (int64_t vocab : {1, 7, 1000, 151936}) {
    for (bool ties : {false, true}) {
      const int64_t rows = 3 * static_cast<int64_t>(std::size(settings));
      Tensor logits = test::rand_tensor({rows, vocab}, 6.f);
      if (ties) {  // few distinct values (both signed zeros among them): many equal logits, ranked by id
        for (int64_t i = 0; i < logits.numel(); ++i) logits.f32()[i] = std::round(logits.f32()[i]);
      }
      // Every fourth row masked like a constrained decoder's: every other token at -inf.
      for (int64_t r = 3; r < rows; r += 4) {
        for (int64_t i = 1; i < vocab; i += 2) logits.f32()[r * vocab + i] = -INFINITY;
      }
      Tensor params = Tensor::empty({rows, 4}, DType::kF32);
      std::uniform_real_distribution<float> uni(0.f, 1.f);
      for (int64_t r = 0; r < rows; ++r) {
        const Settings& s = settings[r % std::size(settings)];
        float* p = params.f32() + r * 4;
        p[0] = s.temperature, p[1] = static_cast<float>(s.top_k), p[2] = s.top_p;
        p[3] = r < 3 ? 0.f : (r < 6 ? std::nextafter(1.f, 0.f) : uni(rng()));  // both ends of [0, 1) too
      }
      Tensor dev_tokens = cuda::to_device(Tensor::empty({rows}, DType::kI32));
      Tensor dev_logits = cuda::to_device(logits), dev_params = cuda::to_device(params);
      cuda::sample_rows(dev_logits, dev_params, dev_tokens);
      Tensor got = cuda::to_host(dev_tokens);
      cuda::sample_rows(dev_logits, dev_params, dev_tokens);
      Tensor again = cuda::to_host(dev_tokens);
      for (int64_t r = 0; r < rows; ++r) {
        const Settings& s = settings[r % std::size(settings)];
        const float* z = logits.f32() + r * vocab;
        const float u = params.f32()[r * 4 + 3];
        const int64_t want = ops::sample_row(z, vocab, s.temperature, s.top_k, s.top_p, u);
        const int64_t g = got.i32()[r];
        EXPECT_EQ(g, again.i32()[r]) << "not deterministic: vocab " << vocab << " row " << r;
        ++rows_checked;
        if (g == want) {
          ++exact;
          continue;
        }
        EXPECT_TRUE(acceptable(z, vocab, s, u, g))
            << "vocab " << vocab << (ties ? " (ties)" : "") << " row " << r << ": gpu " << g << ", cpu " << want
            << " (T " << s.temperature << ", top-k " << s.top_k << ", top-p " << s.top_p << ", u " << u << ")";
        if (s.temperature == 0.f) {
          EXPECT_EQ(g, want) << "greedy must be exact";
        }
      }
    }
  }
  // A draw within ~1e-7 of a boundary is a few rows in a hundred at most for the 151936-token rows.
  EXPECT_GE(exact * 100, rows_checked * 97) << exact << " of " << rows_checked << " exact";
}

TEST(GpuSampling, DrawsOnAGridPartitionItAsTheCpuDoes) {
  SY_SKIP_WITHOUT_GPU();
  // One row repeated with draws on a uniform grid of [0, 1): the tokens split the grid as the CPU's do, so
  // each token is drawn with the CPU's probability (to the grid's resolution).
  const int64_t vocab = 32000, rows = 512;
  Tensor one = test::rand_tensor({1, vocab}, 3.f);
  Tensor logits = Tensor::empty({rows, vocab}, DType::kF32), params = Tensor::empty({rows, 4}, DType::kF32);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(one.f32(), one.f32() + vocab, logits.f32() + r * vocab);
    float* p = params.f32() + r * 4;
    p[0] = 0.8f, p[1] = 0.f, p[2] = 0.95f, p[3] = (static_cast<float>(r) + 0.5f) / rows;
  }
  Tensor tokens = cuda::to_device(Tensor::empty({rows}, DType::kI32));
  cuda::sample_rows(cuda::to_device(logits), cuda::to_device(params), tokens);
  Tensor got = cuda::to_host(tokens);
  int64_t same = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float u = params.f32()[r * 4 + 3];
    const int64_t g = got.i32()[r];
    same += g == ops::sample_row(one.f32(), vocab, 0.8f, 0, 0.95f, u);
    EXPECT_TRUE(acceptable(one.f32(), vocab, {0.8f, 0, 0.95f}, u, g)) << "row " << r << " u " << u;
  }
  EXPECT_GE(same * 100, rows * 97) << same << " of " << rows << " exact";
}

TEST(GpuSampling, RejectsBadArguments) {
  SY_SKIP_WITHOUT_GPU();
  Tensor logits = cuda::to_device(test::rand_tensor({2, 10}));
  Tensor params = cuda::to_device(Tensor::zeros({2, 4}, DType::kF32));
  Tensor tokens = cuda::to_device(Tensor::empty({2}, DType::kI32));
  Tensor short_params = cuda::to_device(Tensor::zeros({1, 4}, DType::kF32));
  Tensor i64_tokens = cuda::to_device(Tensor::empty({2}, DType::kI64));
  EXPECT_THROW(cuda::sample_rows(logits, short_params, tokens), InvalidArgument);
  EXPECT_THROW(cuda::sample_rows(logits, params, i64_tokens), InvalidArgument);
  EXPECT_THROW(cuda::sample_rows(test::rand_tensor({2, 10}), params, tokens), InvalidArgument);  // host logits
  EXPECT_NO_THROW(cuda::sample_rows(logits, params, tokens));
}

// Generation with the draw on the device equals generation with the same logits copied to the host and drawn
// there (SY_GPU_SAMPLING=0 at upload), for a sampled and a greedy run.
TEST(GpuSampling, GenerateDrawsOnTheDeviceLikeTheHost) {
  SY_SKIP_WITHOUT_GPU();
  const std::string dir = (std::filesystem::path(test::fixtures_dir()) / "golden" / "qwen3_moe").string();
  auto device_draw = Model::load(dir), host_draw = Model::load(dir);
  device_draw->to_device(Device::kCuda);
  setenv("SY_GPU_SAMPLING", "0", 1);
  host_draw->to_device(Device::kCuda);
  unsetenv("SY_GPU_SAMPLING");
  for (float temperature : {0.f, 0.9f}) {
    GenerateOptions o;
    o.max_new_tokens = 24;
    o.stop_at_eos = false;
    o.sampling = {temperature, 40, 0.95f, 11};
    const std::vector<int64_t> prompt = {1, 5, 9, 2, 7};
    EXPECT_EQ(generate(*device_draw, prompt, o), generate(*host_draw, prompt, o)) << "temperature " << temperature;
  }
}

}  // namespace
}  // namespace sy
