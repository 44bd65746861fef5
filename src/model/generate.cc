// Sampler (greedy / temperature / top-k / top-p with a splitmix64 generator) and the generate loop.
#include "switchyard/model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "switchyard/core/error.h"

namespace sy {

void validate_sampling(const SamplingOptions& o) {
  SY_REQUIRE(std::isfinite(o.temperature) && o.temperature >= 0.f, InvalidArgument, "sampling",
             "--temperature must be >= 0, got ", o.temperature);
  SY_REQUIRE(o.top_k >= 0, InvalidArgument, "sampling", "--top-k must be >= 0, got ", o.top_k);
  SY_REQUIRE(o.top_p > 0.f && o.top_p <= 1.f, InvalidArgument, "sampling", "--top-p must be in (0, 1], got ", o.top_p);
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), state_(options.seed ^ 0x9e3779b97f4a7c15ull) {
  validate_sampling(options);
}

double Sampler::next_uniform() {
  // splitmix64
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int64_t Sampler::sample(const float* logits, int64_t vocab) {
  SY_CHECK(vocab > 0, "sample: empty vocabulary");
  if (options_.temperature == 0.f) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return best;
  }
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = options_.top_k > 0 ? std::min<int64_t>(options_.top_k, vocab) : vocab;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](int64_t a, int64_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  order.resize(keep);
  std::vector<double> probs(keep);
  const double mx = logits[order[0]] / options_.temperature;
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += (probs[i] = std::exp(logits[order[i]] / options_.temperature - mx));
  for (double& p : probs) p /= sum;
  if (options_.top_p < 1.f) {
    double cum = 0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      cum += probs[i];
      if (cum >= options_.top_p) {
        cut = i + 1;
        break;
      }
    }
    probs.resize(cut);
    order.resize(cut);
    double s = std::accumulate(probs.begin(), probs.end(), 0.0);
    for (double& p : probs) p /= s;
  }
  double u = next_uniform(), cum = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    cum += probs[i];
    if (u < cum) return order[i];
  }
  return order.back();
}

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
  auto run = [&](const std::vector<int64_t>& ids) {
    if (cache) return model.forward(ids, *cache, false);
    seq.ids = ids;
    Tensor logits = model.forward_batch({seq}, *pool);
    seq.start += static_cast<int64_t>(ids.size());
    return logits;
  };
  Tensor logits = run(prompt);
  const auto& eos = model.config().eos_token_ids;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    int64_t next = sampler.sample(logits.f32(), vocab);
    out.push_back(next);
    if (options.on_token && !options.on_token(next)) break;
    if (options.stop_at_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    if (step + 1 < options.max_new_tokens) logits = run({next});
  }
  return out;
}

}  // namespace sy
