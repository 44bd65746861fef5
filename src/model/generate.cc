// The generate loop: prefill, then one sampled token per step (sampling.h).
#include "switchyard/model/generate.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops.h"

namespace sy {

std::vector<int64_t> generate(Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& options) {
  SY_REQUIRE(!prompt.empty(), InvalidArgument, "generate", "the prompt is empty; give at least one token");
  SY_REQUIRE(options.max_new_tokens >= 0, InvalidArgument, "generate", "--max-new-tokens must be >= 0");
  const int64_t vocab = model.config().vocab_size;
  for (int64_t id : prompt) {
    SY_REQUIRE(id >= 0 && id < vocab, InvalidArgument, "generate", "prompt id ", id,
               " is outside the vocabulary [0, ", vocab, ")");
  }
  Sampler sampler(options.sampling);
  std::vector<int64_t> out;
  if (options.max_new_tokens == 0) return out;
  // One sequence: a contiguous KvCache on the CPU, a one-sequence paged pool on the GPU.
  const int64_t total = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  std::optional<KvCache> cache;
  std::optional<PagedKvPool> pool;
  BatchSequence seq;
  if (model.device() == Device::kCpu) {
    cache.emplace(model.new_cache(total));
  } else {
    const int64_t block = 16, blocks = (total + block - 1) / block;
    pool.emplace(model.new_pool(blocks, block));
    for (int64_t b = 0; b < blocks; ++b) seq.block_table.push_back(static_cast<int32_t>(b));
  }
  // One pass over `ids`, then the next token: sampled from host logits on the CPU, on the device on the GPU
  // (only the token comes back).
  auto step = [&](const std::vector<int64_t>& ids) -> int64_t {
    if (cache) {
      Tensor logits = model.forward(ids, *cache, false);
      return sampler.sample(logits.f32(), vocab);
    }
    seq.ids = ids;
    const int64_t token = model.forward_batch_sample({seq}, *pool, {sampler.next_row()}).front();
    seq.start += static_cast<int64_t>(ids.size());
    return token;
  };
  int64_t next = step(prompt);
  const auto& eos = model.config().eos_token_ids;
  for (int64_t step_index = 0; step_index < options.max_new_tokens; ++step_index) {
    out.push_back(next);
    if (options.on_token && !options.on_token(next)) break;
    if (options.stop_at_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    if (step_index + 1 < options.max_new_tokens) next = step({next});
  }
  return out;
}

}  // namespace sy
