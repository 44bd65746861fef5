// INT8 payload rows for the expert dispatch: per-row absmax quantisation to [f32 scale | hidden int8] and
// back, one 256-thread block per row. The same arithmetic as ops::quantize_row_int8 (f32 division by the
// scale, round half to even), so packed rows of finite values are bitwise equal to the CPU's.
#include "block_reduce.cuh"
#include "op_common.cuh"

namespace sy::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) quantize_kernel(const T* x, int64_t hidden, uint8_t* packed) {
  __shared__ float scratch[kThreads / 32];
  const T* row = x + blockIdx.x * hidden;
  uint8_t* dst = packed + blockIdx.x * (hidden + 4);
  float amax = 0.f;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) amax = fmaxf(amax, fabsf(detail::load_f(row, i)));
  amax = detail::block_reduce(amax, scratch, true);
  float scale = amax / 127.f;
  if (!(scale > 0.f)) scale = 1.f;  // an all-zero row (or one so small that the scale underflows)
  if (threadIdx.x == 0) memcpy(dst, &scale, 4);  // the row's bytes are not 4-aligned in general
  int8_t* q = reinterpret_cast<int8_t*>(dst + 4);
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    const float v = fminf(fmaxf(__fdiv_rn(detail::load_f(row, i), scale), -127.f), 127.f);
    q[i] = static_cast<int8_t>(__float2int_rn(v));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(const uint8_t* packed, int64_t hidden, T* y) {
  const uint8_t* src = packed + blockIdx.x * (hidden + 4);
  float scale;
  memcpy(&scale, src, 4);
  const int8_t* q = reinterpret_cast<const int8_t*>(src + 4);
  T* out = y + blockIdx.x * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) detail::store_f(out, i, __fmul_rn(q[i], scale));
}

void check_pair(const char* op, const Tensor& rows, const Tensor& packed) {
  detail::require_device(op, "rows", rows);
  detail::require_device(op, "packed", packed);
  detail::require_dtype(op, "rows", rows, DType::kF32, DType::kBF16);
  detail::require_dtype(op, "packed", packed, DType::kU8, DType::kU8);
  SY_REQUIRE(rows.dim() == 2 && packed.dim() == 2 && packed.size(0) == rows.size(0) &&
                 packed.size(1) == rows.size(1) + 4 && rows.size(0) < (int64_t{1} << 31),
             InvalidArgument, op, "rows ", rows.describe(), " and packed ", packed.describe(),
             " must be (n, hidden) and (n, hidden + 4)");
}

}  // namespace

void quantize_rows_int8(const Tensor& x, Tensor& packed) {
  check_pair("cuda quantize_rows_int8", x, packed);
  const int64_t n = x.size(0), hidden = x.size(1);
  if (n == 0) return;
  uint8_t* dst = static_cast<uint8_t*>(packed.raw());
  if (x.dtype() == DType::kF32) {
    quantize_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(x.f32(), hidden, dst);
  } else {
    quantize_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(
        reinterpret_cast<const __nv_bfloat16*>(x.raw()), hidden, dst);
  }
  SY_CUDA_CHECK_LAUNCH();
}

void dequantize_rows_int8(const Tensor& packed, Tensor& y) {
  check_pair("cuda dequantize_rows_int8", y, packed);
  const int64_t n = y.size(0), hidden = y.size(1);
  if (n == 0) return;
  const uint8_t* src = static_cast<const uint8_t*>(packed.raw());
  if (y.dtype() == DType::kF32) {
    dequantize_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(src, hidden, y.f32());
  } else {
    dequantize_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(
        src, hidden, reinterpret_cast<__nv_bfloat16*>(y.raw()));
  }
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
