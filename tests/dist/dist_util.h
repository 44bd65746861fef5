// Helpers of the dist suite: the world communicator and deterministic per-rank test data, so that every
// rank can rebuild any other rank's tokens and routing for reference computations.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "switchyard/core/tensor.h"
#include "switchyard/model/model.h"
#include "switchyard/moe/router.h"
#include "switchyard/parallel/comm.h"

namespace sy::test {

std::shared_ptr<parallel::Comm>& dist_world();

// Uniform floats in [lo, hi) from a seed: the same values on every rank.
inline std::vector<float> seeded_floats(uint64_t seed, size_t n, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(g);
  return v;
}

// Directories of the golden fixtures (those with a golden.json), sorted.
inline std::vector<std::string> golden_fixture_dirs(const std::string& fixtures_root) {
  std::vector<std::string> out;
  const auto root = std::filesystem::path(fixtures_root) / "golden";
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    if (std::filesystem::exists(e.path() / "golden.json")) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// max |a - b| over max |b| (f32 tensors of one shape).
inline double max_relative_difference(const Tensor& a, const Tensor& b) {
  double num = 0, den = 1e-30;
  for (int64_t i = 0; i < a.numel(); ++i) {
    num = std::max(num, std::fabs(double(a.f32()[i]) - b.f32()[i]));
    den = std::max(den, std::fabs(double(b.f32()[i])));
  }
  return num / den;
}

// The parallel model's logits against the single process: the prompt, then three one-token decode steps,
// each within 1e-5 relative (issue 6's bound for parallel inference). `what` names the case in failures.
inline void expect_same_logits(Model& single, Model& parallel, const std::vector<int64_t>& prompt,
                               const std::string& what) {
  KvCache c1 = single.new_cache(64), c2 = parallel.new_cache(64);
  Tensor ref = single.forward(prompt, c1, true);
  Tensor ours = parallel.forward(prompt, c2, true);
  EXPECT_LE(max_relative_difference(ours, ref), 1e-5) << what << " prefill";
  for (int64_t id : {3, 1, 4}) {
    Tensor r = single.forward({id}, c1, false), o = parallel.forward({id}, c2, false);
    EXPECT_LE(max_relative_difference(o, r), 1e-5) << what << " decode";
  }
}

}  // namespace sy::test
