// Token generation on one sequence: prefill the prompt, then decode one token per step with a sampler.
// Sampling: greedy at temperature 0; otherwise temperature, then top-k, then top-p (nucleus), seeded.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "switchyard/model/model.h"
#include "switchyard/model/sampling.h"

namespace sy {

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
