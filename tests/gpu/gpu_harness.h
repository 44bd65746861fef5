// Shared harness of the gpu suite: random inputs, device copies, and one comparison of a CUDA op's output
// against its CPU reference with a stated tolerance. Not here: timing (bench/ measures speed).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "switchyard/core/error.h"
#include "switchyard/core/tensor.h"
#include "switchyard/kernels/cuda_ops.h"
#include "switchyard/kernels/device.h"
#include "switchyard/moe/router.h"
#include "test_util.h"

namespace sy::test {

// Tolerances, as max |gpu - cpu| / max |cpu| (relative_error):
// - f32 elementwise and reductions: 1e-5 (only summation order differs);
// - f32 attention: 1e-4 (online softmax in another order, f32 exp);
// - anything through bf16 operands (linear): 2e-2, the bf16 tolerance of the design guide.
constexpr double kF32Tol = 1e-5;
constexpr double kAttentionTol = 1e-4;
constexpr double kBf16Tol = 2e-2;

#define SY_SKIP_WITHOUT_GPU()                                             \
  do {                                                                    \
    if (::sy::cuda_devices().empty()) GTEST_SKIP() << "no CUDA device";   \
  } while (0)

inline std::mt19937& rng() {
  static std::mt19937 g(20260518u);
  return g;
}
inline int64_t rand_int(int64_t lo, int64_t hi) {  // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng());
}
// f32 tensor with entries uniform in [-scale, scale] (never zeros: they hide unwritten outputs).
inline Tensor rand_tensor(const Shape& shape, float scale = 1.f) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = d(rng());
  return Tensor::from_vector(shape, v);
}
// A device tensor filled with NaN (poison), so that an element the op fails to write fails the comparison.
inline Tensor poisoned_device(const Shape& shape, DType dtype = DType::kF32) {
  Tensor h = Tensor::full(shape, NAN, dtype);
  return cuda::to_device(h);
}
inline Tensor i64_tensor(const std::vector<int64_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::kI64);
  for (size_t i = 0; i < v.size(); ++i) t.i64()[i] = v[i];
  return t;
}

// Compares a CUDA result with the CPU reference; `what` names the op and the case in the failure message.
inline void expect_close(const std::string& what, const Tensor& gpu, const Tensor& cpu, double tol) {
  Tensor g = gpu.device() == Device::kCuda ? cuda::to_host(gpu) : gpu;
  ASSERT_EQ(g.shape(), cpu.shape()) << what;
  std::vector<float> a = g.to_f32_vector(), b = cpu.to_f32_vector();
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(std::isfinite(a[i])) << what << ": element " << i << " is " << a[i] << " (unwritten or NaN)";
  }
  const double err = relative_error(a, b);
  EXPECT_LE(err, tol) << what << ": relative error " << err << " over tolerance " << tol;
}

// Routing with every token's experts drawn from `pick` (e.g. all on one expert, or some experts never used).
inline moe::Routing make_routing(int64_t t, int top_k, int experts, const std::function<int(int64_t, int)>& pick) {
  moe::Routing r;
  r.num_tokens = t;
  r.top_k = top_k;
  std::uniform_real_distribution<float> d(0.1f, 1.f);
  for (int64_t i = 0; i < t; ++i) {
    for (int s = 0; s < top_k; ++s) {
      r.expert.push_back(pick(i, s) % experts);
      r.weight.push_back(d(rng()));
    }
  }
  return r;
}

}  // namespace sy::test
