// CPU backward of the dense ops: linear (sgemm), RMSNorm, rope, SwiGLU variants, embedding, cross-entropy.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "cpu_common.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops_backward.h"

namespace sy::ops {

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* db) {
  cpu::require_f32_contiguous("linear_backward", "x", x);
  cpu::require_f32_contiguous("linear_backward", "w", w);
  cpu::require_f32_contiguous("linear_backward", "dy", dy);
  const int m = static_cast<int>(x.size(0)), k = static_cast<int>(x.size(1)), n = static_cast<int>(w.size(0));
  SY_CHECK(w.size(1) == k && dy.size(0) == m && dy.size(1) == n, "linear_backward: x ", x.describe(), " w ",
           w.describe(), " dy ", dy.describe());
  if (m == 0) return;
  // Split over output columns (dx) and weight rows (dW) on the thread pool; OpenBLAS runs one thread each.
  if (dx) {  // dx = dy W: (m, n) x (n, k)
    SY_CHECK(dx->numel() == int64_t{m} * k, "linear_backward: dx ", dx->describe());
    float* dxp = dx->f32();
    parallel_for(k, [&](int64_t k0, int64_t k1) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, static_cast<int>(k1 - k0), n, 1.f, dy.f32(), n,
                  w.f32() + k0, k, 0.f, dxp + k0, k);
    }, 64);
  }
  if (dw) {  // dW += dy^T x: (n, m) x (m, k)
    SY_CHECK(dw->numel() == int64_t{n} * k, "linear_backward: dw ", dw->describe());
    float* dwp = dw->f32();
    parallel_for(n, [&](int64_t n0, int64_t n1) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(n1 - n0), k, m, 1.f, dy.f32() + n0, n,
                  x.f32(), k, 1.f, dwp + n0 * k, k);
    }, 16);
  }
  if (db) {
    for (int i = 0; i < m; ++i) axpy(db->f32(), 1.f, dy.f32() + int64_t{i} * n, n);
  }
}

void rms_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor& dw) {
  const int64_t d = x.size(-1), m = x.numel() / d;
  const float* wp = w.f32();
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x.f32() + r * d;
    const float* g = dy.f32() + r * d;
    float* out = dx.f32() + r * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / d + eps);
    double dot_gwx = 0;
    for (int64_t i = 0; i < d; ++i) dot_gwx += double(g[i]) * wp[i] * xr[i];
    const double c = dot_gwx * inv * inv * inv / d;
    for (int64_t i = 0; i < d; ++i) {
      out[i] = static_cast<float>(inv * g[i] * wp[i] - c * xr[i]);
      dw.f32()[i] += static_cast<float>(g[i] * xr[i] * inv);
    }
  }
}

void apply_rope_backward(Tensor& dx, const std::vector<int64_t>& positions, const RopeTable& table) {
  RopeTable inverse = table;
  // Rotation by -angle: negate the frequencies (cos is even, sin is odd).
  for (float& f : inverse.inv_freq) f = -f;
  apply_rope(dx, positions, inverse);
}

void silu_mul_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) {
  const float* g = gate.f32();
  const float* u = up.f32();
  const float* d = dout.f32();
  for (int64_t i = 0; i < gate.numel(); ++i) {
    float s = 1.f / (1.f + std::exp(-g[i]));
    float silu = g[i] * s;
    dup.f32()[i] = d[i] * silu;
    dgate.f32()[i] = d[i] * u[i] * s * (1.f + g[i] * (1.f - s));
  }
}

void clamped_swiglu_backward(const Tensor& gate, const Tensor& up, float alpha, float limit, const Tensor& dout,
                             Tensor& dgate, Tensor& dup) {
  const float* g = gate.f32();
  const float* u = up.f32();
  const float* d = dout.f32();
  for (int64_t i = 0; i < gate.numel(); ++i) {
    const bool g_clamped = g[i] > limit;
    const bool u_clamped = u[i] > limit || u[i] < -limit;
    float gv = std::min(g[i], limit), uv = std::clamp(u[i], -limit, limit);
    float s = 1.f / (1.f + std::exp(-alpha * gv));
    float glu = gv * s;
    dup.f32()[i] = u_clamped ? 0.f : d[i] * glu;
    dgate.f32()[i] = g_clamped ? 0.f : d[i] * (uv + 1.f) * (s + gv * alpha * s * (1.f - s));
  }
}

void embedding_backward(const std::vector<int64_t>& ids, const Tensor& dout, Tensor& dtable) {
  const int64_t d = dtable.size(1);
  for (size_t i = 0; i < ids.size(); ++i) axpy(dtable.f32() + ids[i] * d, 1.f, dout.f32() + static_cast<int64_t>(i) * d, d);
}

double cross_entropy(const Tensor& logits, const std::vector<int64_t>& targets, int64_t total, Tensor& dlogits) {
  const int64_t n = logits.size(0), v = logits.size(1);
  SY_CHECK(static_cast<int64_t>(targets.size()) == n, "cross_entropy: targets");
  double loss = 0;
  const float scale = 1.f / static_cast<float>(total);
  for (int64_t i = 0; i < n; ++i) {
    const float* z = logits.f32() + i * v;
    float* g = dlogits.f32() + i * v;
    SY_REQUIRE(targets[i] >= 0 && targets[i] < v, InvalidArgument, "train", "target id ", targets[i],
               " is outside the vocabulary [0, ", v, ")");
    float mx = *std::max_element(z, z + v);
    double sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(double(z[j]) - mx);
    const double lse = mx + std::log(sum);
    loss += lse - z[targets[i]];
    for (int64_t j = 0; j < v; ++j) g[j] = static_cast<float>(std::exp(double(z[j]) - lse)) * scale;
    g[targets[i]] -= scale;
  }
  return loss;
}

}  // namespace sy::ops
