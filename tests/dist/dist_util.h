// Helpers of the dist suite: the world communicator and deterministic per-rank test data, so that every
// rank can rebuild any other rank's tokens and routing for reference computations.
#pragma once

#include <memory>
#include <random>
#include <vector>

#include "switchyard/core/tensor.h"
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

}  // namespace sy::test
