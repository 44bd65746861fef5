// ops::quantize_row_int8 / dequantize_row_int8, the INT8 dispatch payload (reference of the CUDA ops), on
// hand-computed rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "switchyard/kernels/ops.h"

namespace sy {
namespace {

struct Packed {
  float scale;
  std::vector<int8_t> q;
};

Packed pack(const std::vector<float>& x) {
  std::vector<uint8_t> bytes(x.size() + 4);
  ops::quantize_row_int8(x.data(), static_cast<int64_t>(x.size()), bytes.data());
  Packed p;
  std::memcpy(&p.scale, bytes.data(), 4);
  const int8_t* q = reinterpret_cast<const int8_t*>(bytes.data() + 4);
  p.q.assign(q, q + x.size());
  return p;
}

TEST(Int8Rows, ScaleIsAbsMaxOver127AndRoundingHalfToEven) {
  // amax 2.54 -> scale 2.54 / 127; the extremes map to +-127, the rest to the nearest step.
  Packed p = pack({2.54f, -1.27f, 0.01f, 0.03f, -2.54f});
  EXPECT_FLOAT_EQ(p.scale, 2.54f / 127.f);
  ASSERT_EQ(p.q.size(), 5u);
  EXPECT_EQ(p.q[0], 127);
  EXPECT_EQ(p.q[4], -127);
  EXPECT_EQ(p.q[1], static_cast<int8_t>(std::nearbyint(-1.27f / (2.54f / 127.f))));
  EXPECT_EQ(p.q[2], static_cast<int8_t>(std::nearbyint(0.01f / (2.54f / 127.f))));
  Packed half = pack({127.f, 0.5f, 1.5f, 2.5f, -0.5f});  // scale exactly 1: halves round to even
  EXPECT_EQ(half.scale, 1.f);
  EXPECT_EQ(half.q, (std::vector<int8_t>{127, 0, 2, 2, 0}));
}

TEST(Int8Rows, ZeroRowsKeepScaleOneAndRoundTrip) {
  Packed z = pack({0.f, 0.f, -0.f});
  EXPECT_EQ(z.scale, 1.f);
  EXPECT_EQ(z.q, (std::vector<int8_t>{0, 0, 0}));
  const std::vector<float> x = {0.3f, -1.7f, 4.0f, 0.f, -4.0f, 2.2f, 1e-3f};
  std::vector<uint8_t> bytes(x.size() + 4);
  ops::quantize_row_int8(x.data(), 7, bytes.data());
  std::vector<float> y(7);
  ops::dequantize_row_int8(bytes.data(), 7, y.data());
  const float scale = 4.f / 127.f;
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], scale / 2 + 1e-7) << i;  // half a step at most
  EXPECT_EQ(y[2], 4.f);
  EXPECT_EQ(y[4], -4.f);
}

}  // namespace
}  // namespace sy
