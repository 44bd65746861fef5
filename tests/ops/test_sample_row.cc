// ops::sample_row (the CPU reference of cuda::sample_rows) on hand-computed cases, and the Sampler's draws.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops.h"
#include "switchyard/model/sampling.h"

namespace sy {
namespace {

int64_t pick(const std::vector<float>& z, float temperature, int top_k, float top_p, double u) {
  return ops::sample_row(z.data(), static_cast<int64_t>(z.size()), temperature, top_k, top_p, u);
}

TEST(SampleRow, GreedyTakesTheFirstLargestAndIgnoresTheDraw) {
  const std::vector<float> z = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(pick(z, 0.f, 0, 1.f, 0.0), 1);
  EXPECT_EQ(pick(z, 0.f, 0, 1.f, 0.99), 1);
  EXPECT_EQ(pick(z, 0.f, 1, 0.1f, 0.5), 1);
}

TEST(SampleRow, DrawWalksTheCumulativeProbabilityInRankOrder) {
  // p = 0.2, 0.5, 0.3 for ids 0, 1, 2: rank order 1 (0.5), 2 (0.3), 0 (0.2).
  const std::vector<float> z = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  EXPECT_EQ(pick(z, 1.f, 0, 1.f, 0.0), 1);
  EXPECT_EQ(pick(z, 1.f, 0, 1.f, 0.49), 1);
  EXPECT_EQ(pick(z, 1.f, 0, 1.f, 0.51), 2);
  EXPECT_EQ(pick(z, 1.f, 0, 1.f, 0.79), 2);
  EXPECT_EQ(pick(z, 1.f, 0, 1.f, 0.81), 0);
  EXPECT_EQ(pick(z, 1.f, 0, 1.f, 0.999999), 0);
}

TEST(SampleRow, TopKRenormalisesOverTheKept) {
  // top-2 keeps ids 1 and 2: p = 0.625, 0.375.
  const std::vector<float> z = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  EXPECT_EQ(pick(z, 1.f, 2, 1.f, 0.6), 1);
  EXPECT_EQ(pick(z, 1.f, 2, 1.f, 0.64), 2);
  EXPECT_EQ(pick(z, 1.f, 2, 1.f, 0.999), 2);
  EXPECT_EQ(pick(z, 1.f, 1, 1.f, 0.999), 1);   // top-1 is greedy
  EXPECT_EQ(pick(z, 1.f, 50, 1.f, 0.81), 0);  // top-k above the vocabulary keeps all
}

TEST(SampleRow, TopPCutsAfterTheRankThatReachesIt) {
  const std::vector<float> z = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  EXPECT_EQ(pick(z, 1.f, 0, 0.45f, 0.99), 1);  // 0.5 >= 0.45: only id 1
  EXPECT_EQ(pick(z, 1.f, 0, 0.7f, 0.64), 2);   // 0.5 + 0.3 >= 0.7: ids 1, 2 renormalised (0.625, 0.375)
  EXPECT_EQ(pick(z, 1.f, 0, 0.7f, 0.6), 1);
  EXPECT_EQ(pick(z, 1.f, 0, 0.85f, 0.9), 0);   // needs all three
  EXPECT_EQ(pick(z, 1.f, 2, 0.85f, 0.9), 2);   // top-k first: ids 1, 2 only
}

TEST(SampleRow, EqualLogitsRankTheLowerIdFirst) {
  const std::vector<float> z = {1.f, 1.f, 1.f, 1.f};
  EXPECT_EQ(pick(z, 1.f, 2, 1.f, 0.3), 0);
  EXPECT_EQ(pick(z, 1.f, 2, 1.f, 0.7), 1);
  EXPECT_EQ(pick(z, 1.f, 0, 1.f, 0.8), 3);
}

TEST(SampleRow, TemperatureSharpensOrFlattens) {
  // Logits 0 and ln 3: p = 0.25, 0.75 at T = 1; at T = 2, p = 1 / (1 + sqrt 3) = 0.366 and 0.634.
  const std::vector<float> z = {0.f, std::log(3.f)};
  EXPECT_EQ(pick(z, 1.f, 0, 1.f, 0.74), 1);
  EXPECT_EQ(pick(z, 1.f, 0, 1.f, 0.76), 0);
  EXPECT_EQ(pick(z, 2.f, 0, 1.f, 0.62), 1);
  EXPECT_EQ(pick(z, 2.f, 0, 1.f, 0.65), 0);
  EXPECT_EQ(pick(z, 0.25f, 0, 1.f, 0.98), 1);  // p(1) = 81 / 82 = 0.9878
  EXPECT_EQ(pick(z, 0.25f, 0, 1.f, 0.99), 0);
}

TEST(Sampler, DrawsOneUniformPerSampledStepAndNoneWhenGreedy) {
  Sampler a({1.f, 0, 1.f, 7}), b({1.f, 0, 1.f, 7}), c({1.f, 0, 1.f, 8});
  std::vector<double> draws;
  for (int i = 0; i < 64; ++i) {
    const RowSampling r = a.next_row();
    EXPECT_EQ(r.uniform, b.next_row().uniform);
    EXPECT_GE(r.uniform, 0.0);
    EXPECT_LT(r.uniform, 1.0);
    EXPECT_EQ(r.temperature, 1.f);
    draws.push_back(r.uniform);
  }
  EXPECT_NE(draws.front(), c.next_row().uniform);  // another seed, another stream
  Sampler greedy({0.f, 0, 1.f, 7});
  EXPECT_EQ(greedy.next_row().uniform, 0.0);
  // sample() draws exactly like next_row(): the same stream drives the CPU and the GPU path.
  Sampler d({1.f, 0, 1.f, 7});
  const std::vector<float> z = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  for (int i = 0; i < 64; ++i) EXPECT_EQ(d.sample(z.data(), 3), pick(z, 1.f, 0, 1.f, draws[i])) << i;
}

TEST(Sampler, SettingsAreValidated) {
  EXPECT_THROW(Sampler({-1.f, 0, 1.f, 0}), InvalidArgument);
  EXPECT_THROW(Sampler({NAN, 0, 1.f, 0}), InvalidArgument);
  EXPECT_THROW(Sampler({1.f, -1, 1.f, 0}), InvalidArgument);
  EXPECT_THROW(Sampler({1.f, 0, 0.f, 0}), InvalidArgument);
  EXPECT_THROW(Sampler({1.f, 0, 1.5f, 0}), InvalidArgument);
}

}  // namespace
}  // namespace sy
