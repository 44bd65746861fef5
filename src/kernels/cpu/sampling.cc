// ops::sample_row: greedy / temperature / top-k / top-p token choice for one row of logits, given the
// uniform draw. The CPU reference of cuda::sample_rows; the generate loop and the server sample through it.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops.h"

namespace sy::ops {

int64_t sample_row(const float* logits, int64_t vocab, float temperature, int top_k, float top_p, double u) {
  SY_CHECK(vocab > 0, "sample_row: empty vocabulary");
  if (temperature == 0.f) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return best;
  }
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  const int64_t keep = top_k > 0 ? std::min<int64_t>(top_k, vocab) : vocab;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](int64_t a, int64_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  order.resize(keep);
  std::vector<double> probs(keep);
  const double mx = logits[order[0]] / temperature;
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += (probs[i] = std::exp(logits[order[i]] / temperature - mx));
  for (double& p : probs) p /= sum;
  if (top_p < 1.f) {
    double cum = 0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      cum += probs[i];
      if (cum >= top_p) {
        cut = i + 1;
        break;
      }
    }
    probs.resize(cut);
    order.resize(cut);
    const double s = std::accumulate(probs.begin(), probs.end(), 0.0);
    for (double& p : probs) p /= s;
  }
  double cum = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    cum += probs[i];
    if (u < cum) return order[i];
  }
  return order.back();
}

}  // namespace sy::ops
