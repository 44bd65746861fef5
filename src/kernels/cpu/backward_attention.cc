// CPU backward of causal attention (GQA, sliding window, sink logits). Probabilities are recomputed per
// (query, head); work is split by kv head so that dk and dv rows are written by one thread only.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops_backward.h"

namespace sy::ops {

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& positions,
                        int64_t kv_len, const AttentionOptions& options, const Tensor& dout, Tensor& dq, Tensor& dk,
                        Tensor& dv, Tensor* dsinks) {
  const int64_t t = q.size(0), heads = q.size(1), d_k = q.size(2);
  const int64_t kv_heads = k.size(1), d_v = v.size(2), group = heads / kv_heads;
  SY_CHECK(dq.numel() == q.numel() && dk.size(1) == kv_heads && dv.size(2) == d_v, "attention_backward: shapes");
  const int64_t ks = k.strides()[0], vs = v.strides()[0];
  std::vector<float> sinks;
  if (options.sinks) sinks = options.sinks->to_f32_vector();
  parallel_for(kv_heads, [&](int64_t kh0, int64_t kh1) {
    std::vector<float> p, dp;
    for (int64_t kh = kh0; kh < kh1; ++kh) {
      for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
        for (int64_t i = 0; i < t; ++i) {
          const int64_t pos = positions[i];
          int64_t lo = options.window > 0 ? std::max<int64_t>(0, pos - options.window + 1) : 0;
          if (options.key_start) lo = std::max(lo, (*options.key_start)[i]);
          const float* qrow = q.f32() + (i * heads + h) * d_k;
          const float* grow = dout.f32() + (i * heads + h) * d_v;
          const int64_t n = pos - lo + 1;
          p.resize(n);
          dp.resize(n);
          float mx = -INFINITY;
          for (int64_t j = 0; j < n; ++j) {
            p[j] = dot(qrow, k.f32() + (lo + j) * ks + kh * d_k, d_k) * options.scale;
            mx = std::max(mx, p[j]);
          }
          const bool has_sink = !sinks.empty();
          if (has_sink) mx = std::max(mx, sinks[h]);
          double den = 0;
          for (int64_t j = 0; j < n; ++j) den += (p[j] = std::exp(p[j] - mx));
          float p_sink = 0.f;
          if (has_sink) {
            p_sink = std::exp(sinks[h] - mx);
            den += p_sink;
          }
          const float inv = static_cast<float>(1.0 / den);
          double sum_pdp = 0;
          for (int64_t j = 0; j < n; ++j) {
            p[j] *= inv;
            const float* vrow = v.f32() + (lo + j) * vs + kh * d_v;
            dp[j] = dot(grow, vrow, d_v);
            sum_pdp += double(p[j]) * dp[j];
            axpy(dv.f32() + (lo + j) * dv.strides()[0] + kh * d_v, p[j], grow, d_v);
          }
          if (has_sink) dsinks->f32()[h] += static_cast<float>(-p_sink * inv * sum_pdp);
          float* dqrow = dq.f32() + (i * heads + h) * d_k;
          std::fill(dqrow, dqrow + d_k, 0.f);
          for (int64_t j = 0; j < n; ++j) {
            const float ds = p[j] * static_cast<float>(dp[j] - sum_pdp) * options.scale;
            axpy(dqrow, ds, k.f32() + (lo + j) * ks + kh * d_k, d_k);
            axpy(dk.f32() + (lo + j) * dk.strides()[0] + kh * d_k, ds, qrow, d_k);
          }
        }
      }
    }
  });
}

}  // namespace sy::ops
