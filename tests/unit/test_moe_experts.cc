// moe::run_expert_blocks: decode-sized groups (every expert <= 8 rows) run all experts' gate and up in one
// parallel loop and all downs in a second; the result must equal gated_mlp expert by expert bit for bit (same
// kernels on the same rows), with expert biases and the clamped activation too, and larger groups (one
// product at a time) must agree with it as well.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "switchyard/core/error.h"
#include "switchyard/moe/experts.h"

namespace sy::moe {
namespace {

Tensor random_tensor(std::mt19937& rng, const Shape& shape, float scale, DType dtype = DType::kF32) {
  std::normal_distribution<float> dist(0.f, scale);
  Tensor t = Tensor::empty(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return dtype == DType::kF32 ? t : t.to(dtype);
}

std::vector<GatedMlpWeights> random_experts(std::mt19937& rng, int experts, int64_t hidden, int64_t inter,
                                            bool biases) {
  std::vector<GatedMlpWeights> w(static_cast<size_t>(experts));
  for (auto& e : w) {
    e.gate = random_tensor(rng, {inter, hidden}, 0.2f, DType::kBF16);
    e.up = random_tensor(rng, {inter, hidden}, 0.2f, DType::kBF16);
    e.down = random_tensor(rng, {hidden, inter}, 0.2f, DType::kBF16);
    if (biases) {
      e.gate_bias = random_tensor(rng, {inter}, 1.f);
      e.up_bias = random_tensor(rng, {inter}, 1.f);
      e.down_bias = random_tensor(rng, {hidden}, 1.f);
    }
  }
  return w;
}

// Expert by expert through gated_mlp: the reference.
Tensor one_by_one(const Tensor& x, const std::vector<int64_t>& offsets, const std::vector<GatedMlpWeights>& w,
                  const ActivationOptions& act) {
  Tensor out = Tensor::zeros({x.size(0), x.size(1)}, DType::kF32);
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    if (offsets[e] == offsets[e + 1]) continue;
    Tensor y = gated_mlp(x.slice(0, offsets[e], offsets[e + 1]).contiguous(), w[e], act);
    std::memcpy(out.f32() + offsets[e] * x.size(1), y.f32(), sizeof(float) * y.numel());
  }
  return out;
}

TEST(RunExpertBlocks, DecodeSizedGroupsEqualExpertByExpert) {
  std::mt19937 rng(11);
  const int64_t hidden = 72, inter = 40;  // hidden not a multiple of 16, several column slices per product
  for (bool clamped : {false, true}) {
    ActivationOptions act;
    if (clamped) {
      act.kind = Activation::kClampedSwiGlu;
      act.limit = 1.5f;
      act.alpha = 1.702f;
    }
    const std::vector<GatedMlpWeights> w = random_experts(rng, 6, hidden, inter, /*biases=*/clamped);
    // Decode sizes (1-8 rows, empty experts), then one expert over 8 rows (one product at a time).
    for (const std::vector<int64_t>& offsets : {std::vector<int64_t>{0, 1, 1, 3, 8, 8, 9},
                                                std::vector<int64_t>{0, 0, 0, 0, 0, 0, 1},
                                                std::vector<int64_t>{0, 2, 2, 14, 15, 15, 16}}) {
      const Tensor x = random_tensor(rng, {offsets.back(), hidden}, 1.f);
      const Tensor got = run_expert_blocks(x, offsets, w.data(), act);
      const Tensor want = one_by_one(x, offsets, w, act);
      ASSERT_EQ(got.shape(), want.shape());
      EXPECT_EQ(0, std::memcmp(got.raw(), want.raw(), got.nbytes()))
          << (clamped ? "clamped with biases" : "SwiGLU") << ", " << offsets.back() << " rows";
    }
  }
}

TEST(RunExpertBlocks, RefusesRowsOnAnExpertWithoutWeights) {
  std::mt19937 rng(3);
  std::vector<GatedMlpWeights> w = random_experts(rng, 2, 16, 8, false);
  w[1] = GatedMlpWeights{};  // not held by this process
  const Tensor x = random_tensor(rng, {2, 16}, 1.f);
  EXPECT_THROW(run_expert_blocks(x, {0, 1, 2}, w.data(), ActivationOptions{}), sy::Error);
  EXPECT_NO_THROW(run_expert_blocks(x.slice(0, 0, 1).contiguous(), {0, 1, 1}, w.data(), ActivationOptions{}));
}

}  // namespace
}  // namespace sy::moe
