// Sampler: the seeded splitmix64 stream of uniform draws and the per-step row settings; see sampling.h.
#include "switchyard/model/sampling.h"

#include <cmath>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops.h"

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

RowSampling Sampler::next_row() {
  RowSampling r{options_.temperature, options_.top_k, options_.top_p, 0.0};
  if (options_.temperature != 0.f) r.uniform = next_uniform();  // greedy draws nothing
  return r;
}

std::vector<int64_t> sample_host_rows(const Tensor& logits, const std::vector<RowSampling>& rows) {
  SY_CHECK(logits.device() == Device::kCpu && logits.dtype() == DType::kF32 && logits.dim() == 2 &&
               logits.size(0) == static_cast<int64_t>(rows.size()),
           "sample_host_rows: logits ", logits.describe(), " for ", rows.size(), " rows");
  const int64_t vocab = logits.size(1);
  std::vector<int64_t> tokens(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const RowSampling& r = rows[i];
    tokens[i] = ops::sample_row(logits.f32() + i * vocab, vocab, r.temperature, r.top_k, r.top_p, r.uniform);
  }
  return tokens;
}

int64_t Sampler::sample(const float* logits, int64_t vocab) {
  const RowSampling r = next_row();
  return ops::sample_row(logits, vocab, r.temperature, r.top_k, r.top_p, r.uniform);
}

}  // namespace sy
