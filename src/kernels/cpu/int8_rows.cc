// Per-row INT8 quantisation of dispatched token rows (CloudMatrix-style INT8 dispatch): the CPU reference of
// cuda::quantize_rows_int8 / dequantize_rows_int8 and the CPU dispatcher's packing.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "switchyard/kernels/ops.h"

namespace sy::ops {

void quantize_row_int8(const float* x, int64_t hidden, uint8_t* dst) {
  float amax = 0.f;
  for (int64_t i = 0; i < hidden; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float scale = amax > 0 ? amax / 127.f : 1.f;
  std::memcpy(dst, &scale, 4);
  int8_t* q = reinterpret_cast<int8_t*>(dst + 4);
  // Round half to even (nearbyint in the default rounding mode, as lrint): written so that it vectorises.
  for (int64_t i = 0; i < hidden; ++i) {
    q[i] = static_cast<int8_t>(std::nearbyint(std::clamp(x[i] / scale, -127.f, 127.f)));
  }
}

void dequantize_row_int8(const uint8_t* src, int64_t hidden, float* y) {
  float scale;
  std::memcpy(&scale, src, 4);
  const int8_t* q = reinterpret_cast<const int8_t*>(src + 4);
  for (int64_t i = 0; i < hidden; ++i) y[i] = static_cast<float>(q[i]) * scale;
}

}  // namespace sy::ops
