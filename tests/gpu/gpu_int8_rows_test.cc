// cuda::quantize_rows_int8 / dequantize_rows_int8 against ops::quantize_row_int8 / dequantize_row_int8
// (bitwise: the INT8 dispatch must send exactly the CPU dispatcher's bytes), and cuda::gather_rows on the
// packed byte rows, whose size need not be a multiple of 2 or 4.
#include <cstring>

#include "gpu_harness.h"
#include "switchyard/kernels/ops.h"

namespace sy {
namespace {

TEST(GpuInt8Rows, QuantizeAndDequantizeMatchCpuBitwise) {
  SY_SKIP_WITHOUT_GPU();
  for (int64_t hidden : {1, 7, 256, 7168}) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      const int64_t n = 19;
      Tensor x = test::rand_tensor({n, hidden}, 3.f);
      for (int64_t i = 0; i < hidden; ++i) x.f32()[5 * hidden + i] = 0.f;  // an all-zero row: scale 1
      Tensor xd = x.to(dtype);            // what the device sees
      Tensor xf = xd.to(DType::kF32);     // the same values for the CPU reference
      std::vector<uint8_t> want(static_cast<size_t>(n * (hidden + 4)));
      for (int64_t r = 0; r < n; ++r) {
        ops::quantize_row_int8(xf.f32() + r * hidden, hidden, want.data() + r * (hidden + 4));
      }
      Tensor packed = cuda::to_device(Tensor::zeros({n, hidden + 4}, DType::kU8));
      cuda::quantize_rows_int8(cuda::to_device(xd), packed);
      Tensor got = cuda::to_host(packed);
      EXPECT_EQ(std::memcmp(got.raw(), want.data(), want.size()), 0)
          << "hidden " << hidden << " " << dtype_name(dtype) << ": packed bytes differ from the CPU's";
      Tensor y = cuda::to_device(Tensor::empty({n, hidden}, DType::kF32));
      cuda::dequantize_rows_int8(packed, y);
      Tensor yh = cuda::to_host(y);
      std::vector<float> ref(static_cast<size_t>(n * hidden));
      for (int64_t r = 0; r < n; ++r) {
        ops::dequantize_row_int8(want.data() + r * (hidden + 4), hidden, ref.data() + r * hidden);
      }
      EXPECT_EQ(yh.to_f32_vector(), ref) << "hidden " << hidden;
    }
  }
}

TEST(GpuInt8Rows, GatherRowsMovesOddByteRows) {
  SY_SKIP_WITHOUT_GPU();
  for (int64_t width : {7, 10, 36, 48}) {  // byte by byte (7, 10), 4-byte words (36), 16-byte words (48)
    const int64_t n = 9;
    Tensor src = Tensor::empty({n, width}, DType::kU8);
    for (int64_t i = 0; i < n * width; ++i) static_cast<uint8_t*>(src.raw())[i] = static_cast<uint8_t>(i * 7 + 3);
    std::vector<int64_t> order = {8, 0, 3, 3, 1, 7, 2, 6, 5};
    Tensor dst = cuda::to_device(Tensor::zeros({n, width}, DType::kU8));
    cuda::gather_rows(cuda::to_device(src), cuda::to_device(test::i64_tensor(order)), dst);
    Tensor got = cuda::to_host(dst);
    for (int64_t r = 0; r < n; ++r) {
      EXPECT_EQ(std::memcmp(static_cast<uint8_t*>(got.raw()) + r * width,
                            static_cast<uint8_t*>(src.raw()) + order[r] * width, static_cast<size_t>(width)),
                0)
          << "width " << width << " row " << r;
    }
  }
}

TEST(GpuInt8Rows, RejectsMismatchedShapes) {
  SY_SKIP_WITHOUT_GPU();
  Tensor x = cuda::to_device(test::rand_tensor({3, 8}));
  Tensor short_rows = cuda::to_device(Tensor::empty({3, 8}, DType::kU8));
  Tensor f32_rows = cuda::to_device(Tensor::empty({3, 12}, DType::kF32));
  EXPECT_THROW(cuda::quantize_rows_int8(x, short_rows), InvalidArgument);
  EXPECT_THROW(cuda::quantize_rows_int8(x, f32_rows), InvalidArgument);
}

}  // namespace
}  // namespace sy
