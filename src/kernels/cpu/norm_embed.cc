// RMSNorm and embedding lookup on the CPU.
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"

namespace sy::ops {

void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  cpu::require_cpu("rms_norm", x);
  cpu::require_f32_contiguous("rms_norm", "x", x);
  cpu::require_f32_contiguous("rms_norm", "y", y);
  const int64_t d = x.size(-1), m = x.numel() / std::max<int64_t>(d, 1);
  SY_CHECK(w.numel() == d && y.numel() == x.numel(), "rms_norm: x ", x.describe(), " w ", w.describe());
  std::vector<float> weight(static_cast<size_t>(d));
  cpu::convert_row_to_f32(w.raw(), w.dtype(), weight.data(), d);
  const float* xp = x.f32();
  float* yp = y.f32();
  parallel_for(m, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = xp + r * d;
      float* out = yp + r * d;
      float ss = dot(row, row, d);
      float inv = 1.f / std::sqrt(ss / static_cast<float>(d) + eps);
      for (int64_t i = 0; i < d; ++i) out[i] = weight[i] * (row[i] * inv);
    }
  }, 16);
}

void embedding(const std::vector<int64_t>& ids, const Tensor& table, Tensor& out) {
  cpu::require_cpu("embedding", table);
  cpu::require_f32_contiguous("embedding", "out", out);
  const int64_t vocab = table.size(0), d = table.size(1);
  SY_CHECK(out.size(0) == static_cast<int64_t>(ids.size()) && out.size(1) == d, "embedding: out ", out.describe());
  const size_t row_bytes = static_cast<size_t>(d) * dtype_size(table.dtype());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      throw make_error<InvalidArgument>("model", "token id ", ids[i], " is outside the vocabulary [0, ", vocab, ")");
    }
    const char* src = static_cast<const char*>(table.raw()) + static_cast<size_t>(ids[i]) * row_bytes;
    cpu::convert_row_to_f32(src, table.dtype(), out.f32() + static_cast<int64_t>(i) * d, d);
  }
}

}  // namespace sy::ops
