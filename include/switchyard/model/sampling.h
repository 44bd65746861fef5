// Sampling settings and the seeded sampler of one sequence. The token choice itself is ops::sample_row
// (CPU) or cuda::sample_rows (GPU, many rows at once); the sampler only draws the uniform number each
// non-greedy step needs, so both devices consume the same random stream.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/core/tensor.h"

namespace sy {

struct SamplingOptions {
  float temperature = 0.f;  // 0: greedy (argmax, ties to the lower id)
  int top_k = 0;            // 0: off
  float top_p = 1.f;        // 1: off
  uint64_t seed = 0;
};

// Validates ranges; throws InvalidArgument with the flag name.
void validate_sampling(const SamplingOptions& options);

// One row's sampling step: the settings and the uniform draw in [0, 1) (unused, 0, when greedy).
struct RowSampling {
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  double uniform = 0.0;
};

// One token per row of host logits (rows, vocab) f32, row i drawn with rows[i] by ops::sample_row.
std::vector<int64_t> sample_host_rows(const Tensor& logits, const std::vector<RowSampling>& rows);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // Picks a token from logits (vocab,) f32: ops::sample_row with next_row().
  int64_t sample(const float* logits, int64_t vocab);
  // The next step's settings and draw (advances the generator unless greedy), for sampling elsewhere.
  RowSampling next_row();

 private:
  SamplingOptions options_;
  uint64_t state_;
  double next_uniform();  // [0, 1)
};

}  // namespace sy
