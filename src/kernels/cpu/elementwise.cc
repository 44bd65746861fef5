// Elementwise CPU ops: SwiGLU variants, row softmax, in-place adds.
#include <algorithm>
#include <cmath>

#include "cpu_common.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"

namespace sy::ops {

void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  cpu::require_f32_contiguous("silu_mul", "gate", gate);
  cpu::require_f32_contiguous("silu_mul", "up", up);
  cpu::require_f32_contiguous("silu_mul", "out", out);
  SY_CHECK(gate.numel() == up.numel() && out.numel() == gate.numel(), "silu_mul: shapes");
  const float* g = gate.f32();
  const float* u = up.f32();
  float* o = out.f32();
  parallel_for(gate.numel(), [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) o[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
  }, 4096);
}

void clamped_swiglu(const Tensor& gate, const Tensor& up, float alpha, float limit, Tensor& out) {
  cpu::require_f32_contiguous("clamped_swiglu", "gate", gate);
  cpu::require_f32_contiguous("clamped_swiglu", "up", up);
  cpu::require_f32_contiguous("clamped_swiglu", "out", out);
  SY_CHECK(gate.numel() == up.numel() && out.numel() == gate.numel(), "clamped_swiglu: shapes");
  const float* g = gate.f32();
  const float* u = up.f32();
  float* o = out.f32();
  for (int64_t i = 0; i < gate.numel(); ++i) {
    float gv = std::min(g[i], limit);
    float uv = std::clamp(u[i], -limit, limit);
    float glu = gv / (1.f + std::exp(-alpha * gv));
    o[i] = (uv + 1.f) * glu;
  }
}

void softmax_rows(Tensor& x) {
  cpu::require_f32_contiguous("softmax", "x", x);
  const int64_t n = x.size(-1), m = x.numel() / std::max<int64_t>(n, 1);
  float* p = x.f32();
  for (int64_t r = 0; r < m; ++r) {
    float* row = p + r * n;
    float mx = *std::max_element(row, row + n);
    float sum = 0.f;
    for (int64_t i = 0; i < n; ++i) {
      row[i] = std::exp(row[i] - mx);
      sum += row[i];
    }
    for (int64_t i = 0; i < n; ++i) row[i] /= sum;
  }
}

void add_inplace(Tensor& y, const Tensor& x) { axpy_inplace(y, 1.f, x); }

void axpy_inplace(Tensor& y, float s, const Tensor& x) {
  cpu::require_f32_contiguous("add", "y", y);
  cpu::require_f32_contiguous("add", "x", x);
  SY_CHECK(y.numel() == x.numel(), "add: y ", y.describe(), " x ", x.describe());
  axpy(y.f32(), s, x.f32(), y.numel());
}

}  // namespace sy::ops
