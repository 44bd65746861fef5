// Token generation on one sequence: prefill the prompt, then decode one token per step with a sampler.
// Sampling: greedy at temperature 0; otherwise temperature, then top-k, then top-p (nucleus), seeded.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "switchyard/model/model.h"

namespace sy {

struct SamplingOptions {
  float temperature = 0.f;  // 0: greedy (argmax, ties to the lower id)
  int top_k = 0;            // 0: off
  float top_p = 1.f;        // 1: off
  uint64_t seed = 0;
};

// Validates ranges; throws InvalidArgument with the flag name.
void validate_sampling(const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // Picks a token from logits (vocab,) f32.
  int64_t sample(const float* logits, int64_t vocab);

 private:
  SamplingOptions options_;
  uint64_t state_;
  double next_uniform();  // [0, 1)
};

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  SamplingOptions sampling;
  bool stop_at_eos = true;
  // Called with each new token as it is produced; return false to stop early.
  std::function<bool(int64_t)> on_token;
};

// Returns the new token ids (prompt excluded). Throws InvalidArgument for empty prompts or ids outside the vocab.
std::vector<int64_t> generate(Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& options);

}  // namespace sy
