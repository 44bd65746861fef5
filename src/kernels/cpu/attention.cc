// Causal (optionally sliding-window) attention with GQA and optional sink logits, over a contiguous KV cache
// of one sequence. One (query, head) pair per work item: scores, a numerically safe softmax, weighted V sum.
// This is the CPU reference; it is not flash-tiled.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"

namespace sy::ops {

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& positions,
               int64_t kv_len, const AttentionOptions& options, Tensor& out) {
  cpu::require_cpu("attention", q);
  cpu::require_f32_contiguous("attention", "q", q);
  cpu::require_f32_contiguous("attention", "out", out);
  SY_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && out.dim() == 3, "attention: rank-3 tensors expected");
  const int64_t t = q.size(0), heads = q.size(1), dk = q.size(2);
  const int64_t kv_heads = k.size(1), dv = v.size(2);
  SY_CHECK(k.size(2) == dk && v.size(1) == kv_heads && heads % kv_heads == 0, "attention: q ", q.describe(), " k ",
           k.describe(), " v ", v.describe());
  SY_CHECK(k.size(0) >= kv_len && v.size(0) >= kv_len && k.strides()[2] == 1 && v.strides()[2] == 1,
           "attention: cache shorter than kv_len ", kv_len);
  SY_CHECK(out.size(0) == t && out.size(1) == heads && out.size(2) == dv, "attention: out ", out.describe());
  SY_CHECK(static_cast<int64_t>(positions.size()) == t, "attention: positions");
  std::vector<float> sinks;
  if (options.sinks) {
    SY_CHECK(options.sinks->numel() == heads, "attention: sinks ", options.sinks->describe());
    sinks.resize(heads);
    cpu::convert_row_to_f32(options.sinks->raw(), options.sinks->dtype(), sinks.data(), heads);
  }
  const int64_t group = heads / kv_heads;
  const float* kp = k.f32();
  const float* vp = v.f32();
  const int64_t ks = k.strides()[0], khs = k.strides()[1];
  const int64_t vs = v.strides()[0], vhs = v.strides()[1];
  const float* qp = q.f32();
  float* op = out.f32();
  parallel_for(t * heads, [&](int64_t a, int64_t b) {
    std::vector<float> scores;
    for (int64_t item = a; item < b; ++item) {
      const int64_t i = item / heads, h = item % heads, kh = h / group;
      const int64_t pos = positions[i];
      SY_CHECK(pos >= 0 && pos < kv_len, "attention: position ", pos, " outside cache of ", kv_len);
      int64_t lo = options.window > 0 ? std::max<int64_t>(0, pos - options.window + 1) : 0;
      if (options.key_start) lo = std::max(lo, (*options.key_start)[i]);
      const int64_t hi = pos;  // inclusive
      const float* qrow = qp + (i * heads + h) * dk;
      scores.resize(static_cast<size_t>(hi - lo + 1));
      float max_score = -INFINITY;
      for (int64_t j = lo; j <= hi; ++j) {
        float s = dot(qrow, kp + j * ks + kh * khs, dk) * options.scale;
        scores[j - lo] = s;
        max_score = std::max(max_score, s);
      }
      float sink = 0.f;
      if (!sinks.empty()) {
        sink = sinks[h];
        max_score = std::max(max_score, sink);
      }
      float denom = 0.f;
      for (float& s : scores) {
        s = std::exp(s - max_score);
        denom += s;
      }
      if (!sinks.empty()) denom += std::exp(sink - max_score);
      float* orow = op + (i * heads + h) * dv;
      std::fill(orow, orow + dv, 0.f);
      const float inv = 1.f / denom;
      for (int64_t j = lo; j <= hi; ++j) axpy(orow, scores[j - lo] * inv, vp + j * vs + kh * vhs, dv);
    }
  });
}

}  // namespace sy::ops
