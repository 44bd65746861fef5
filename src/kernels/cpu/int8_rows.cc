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
  float scale = amax / 127.f;
  if (!(scale > 0.f)) scale = 1.f;  // an all-zero row (or one so small that the scale underflows)
  std::memcpy(dst, &scale, 4);
  int8_t* q = reinterpret_cast<int8_t*>(dst + 4);
  // Round half to even (nearbyint in the default rounding mode, as lrint): written so that it vectorises.
  for (int64_t i = 0; i < hidden; ++i) {
    // min/max in this order send NaN to -127 as the device's fminf/fmaxf do (std::clamp would keep it).
    q[i] = static_cast<int8_t>(std::nearbyint(std::min(127.f, std::max(-127.f, x[i] / scale))));
  }
}

void dequantize_row_int8(const uint8_t* src, int64_t hidden, float* y) {
  float scale;
  std::memcpy(&scale, src, 4);
  const int8_t* q = reinterpret_cast<const int8_t*>(src + 4);
  for (int64_t i = 0; i < hidden; ++i) y[i] = static_cast<float>(q[i]) * scale;
}

}  // namespace sy::ops
