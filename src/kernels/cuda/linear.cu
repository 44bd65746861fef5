// CUDA linear: y = x W^T + b with bf16 weights through cuBLAS (cublasGemmEx, f32 accumulation on the bf16
// tensor cores) or, for one or two rows, our weight-streaming GEMV (gemv.cu), and its per-head batched form
// over strided views (cublasGemmStridedBatchedEx, MLA's absorbed attention). Not here: cuBLASLt epilogue
// fusion (bias, activation), fp8/int8, grouped expert GEMMs.
#include <cublas_v2.h>

#include "gemv.cuh"
#include "op_common.cuh"

namespace sy::cuda {

// out[i] = bf16(in[i]). Where both are 16-byte aligned, eight elements per thread (two 16-byte loads, one
// store; one element per thread reached 1.8 TB/s on an H100), the last n % 8 one by one.
__global__ void f32_to_bf16_kernel(const float* in, __nv_bfloat16* out, int64_t n) {
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x, stride = int64_t{gridDim.x} * blockDim.x;
  const bool vec = reinterpret_cast<uintptr_t>(in) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t groups = vec ? n / 8 : 0;
  for (int64_t g = first; g < groups; g += stride) {
    const float4 a = __ldcs(reinterpret_cast<const float4*>(in) + 2 * g);
    const float4 b = __ldcs(reinterpret_cast<const float4*>(in) + 2 * g + 1);
    __nv_bfloat162 packed[4] = {__floats2bfloat162_rn(a.x, a.y), __floats2bfloat162_rn(a.z, a.w),
                                __floats2bfloat162_rn(b.x, b.y), __floats2bfloat162_rn(b.z, b.w)};
    reinterpret_cast<uint4*>(out)[g] = *reinterpret_cast<const uint4*>(packed);
  }
  for (int64_t i = 8 * groups + first; i < n; i += stride) out[i] = __float2bfloat16(in[i]);
}

namespace detail {

inline unsigned f32_to_bf16_blocks(int64_t n) { return blocks_for((n + 7) / 8, 256); }

cublasHandle_t cublas_handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t created = nullptr;
    SY_CUBLAS_CHECK(cublas().create(&created));
    SY_CUBLAS_CHECK(cublas().set_stream(created, stream()));
    return created;
  }();
  return h;
}

void to_bf16(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  f32_to_bf16_kernel<<<f32_to_bf16_blocks(n), 256, 0, stream()>>>(x.f32(), reinterpret_cast<__nv_bfloat16*>(out.raw()), n);
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace detail

namespace {

cublasHandle_t handle() { return detail::cublas_handle(); }

template <typename Y, typename B>
__global__ void add_bias_kernel(Y* y, const B* bias, int64_t m, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * n; i += int64_t{gridDim.x} * blockDim.x) {
    detail::store_f(y, i, detail::load_f(y, i) + detail::load_f(bias, i % n));
  }
}

template <typename Y>
void add_bias(Tensor& y, const Tensor& bias, int64_t m, int64_t n) {
  Y* yp = reinterpret_cast<Y*>(y.raw());
  if (bias.dtype() == DType::kF32) {
    add_bias_kernel<<<detail::blocks_for(m * n, 256), 256, 0, stream()>>>(yp, bias.f32(), m, n);
  } else {
    add_bias_kernel<<<detail::blocks_for(m * n, 256), 256, 0, stream()>>>(
        yp, reinterpret_cast<const __nv_bfloat16*>(bias.raw()), m, n);
  }
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace

namespace {

void check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
  detail::require_device(op, "x", x);
  detail::require_device(op, "w", w);
  detail::require_device(op, "y", y);
  detail::require_dtype(op, "x", x, DType::kF32, DType::kBF16);
  detail::require_dtype(op, "w", w, DType::kBF16, DType::kBF16);
  detail::require_dtype(op, "y", y, DType::kF32, DType::kBF16);
  SY_REQUIRE(x.dim() == 2 && w.dim() == 2 && y.dim() == 2 && x.size(1) == w.size(1) && y.size(0) == x.size(0) &&
                 y.size(1) == w.size(0),
             InvalidArgument, op, "shapes x ", x.describe(), " w ", w.describe(), " y ", y.describe());
  if (bias.defined()) {
    detail::require_device(op, "bias", bias);
    detail::require_dtype(op, "bias", bias, DType::kF32, DType::kBF16);
    SY_REQUIRE(bias.numel() == w.size(0), InvalidArgument, op, "bias ", bias.describe(), " for ",
               w.size(0), " outputs");
  }
}

// y = x W^T + b, or y += x W^T + b with accumulate (beta 1; y f32).
void linear_into(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate) {
  check_linear(accumulate ? "cuda linear_add" : "cuda linear", x, w, bias, y);
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  SY_REQUIRE(!accumulate || y.dtype() == DType::kF32, InvalidArgument, "cuda linear_add", "y ", y.describe(),
             " must be f32");
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) zero(y.raw(), y.nbytes());
  } else if (detail::gemv_fits(x, w, y)) {  // decode-sized: one weight-streaming pass, bias and add included
    detail::gemv(x, w, bias, y, accumulate);
    return;
  } else {
    Tensor xb = x;
    if (x.dtype() == DType::kF32) {
      xb = Tensor::empty(x.shape(), DType::kBF16, Device::kCuda);
      f32_to_bf16_kernel<<<detail::f32_to_bf16_blocks(m * k), 256, 0, stream()>>>(
          x.f32(), reinterpret_cast<__nv_bfloat16*>(xb.raw()), m * k);
      SY_CUDA_CHECK_LAUNCH();
    }
    // Column-major view: y^T (n x m) = W (k x n, transposed) * x^T (k x m).
    const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    const cudaDataType_t y_type = y.dtype() == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
    SY_CUBLAS_CHECK(detail::cublas().gemm_ex(handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                                             static_cast<int>(m), static_cast<int>(k), &alpha, w.raw(), CUDA_R_16BF,
                                             static_cast<int>(k), xb.raw(), CUDA_R_16BF, static_cast<int>(k), &beta,
                                             y.raw(), y_type, static_cast<int>(n), CUBLAS_COMPUTE_32F,
                                             CUBLAS_GEMM_DEFAULT));
  }
  if (bias.defined()) {
    if (y.dtype() == DType::kF32) {
      add_bias<float>(y, bias, m, n);
    } else {
      add_bias<__nv_bfloat16>(y, bias, m, n);
    }
  }
}

}  // namespace

void prepare_blas() { (void)handle(); }

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) { linear_into(x, w, bias, y, false); }

void linear_add(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) { linear_into(x, w, bias, y, true); }

void rms_norm_linear(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, const Tensor& bias,
                     Tensor& y) {
  const char* op = "cuda rms_norm_linear";
  check_linear(op, x, w, bias, y);  // x, w, y contiguous
  detail::require_device(op, "norm_w", norm_w);  // contiguous: the norm kernels index it densely
  detail::require_dtype(op, "x", x, DType::kF32);
  detail::require_dtype(op, "norm_w", norm_w, DType::kF32, DType::kBF16);
  SY_REQUIRE(norm_w.numel() == x.size(1), InvalidArgument, op, "norm weight ", norm_w.describe(), " for x ",
             x.describe());
  SY_REQUIRE(eps >= 0.f, InvalidArgument, op, "eps must be non-negative, got ", eps);
  if (x.size(0) > 0 && x.size(1) > 0 && w.size(0) > 0 && detail::gemv_normed_fits(x, norm_w, w, y)) {
    detail::gemv_normed(x, norm_w, eps, w, bias, y);
    return;
  }
  Tensor xb = Tensor::empty(x.shape(), DType::kBF16, Device::kCuda), none;
  rms_norm_dual(x, norm_w, eps, none, xb);
  linear(xb, w, bias, y);
}

void batched_linear(const Tensor& x, const Tensor& w, BatchedWeight layout, Tensor& y) {
  const char* op = "cuda batched_linear";
  detail::require_rows_device(op, "x", x);
  detail::require_rows_device(op, "w", w);
  detail::require_rows_device(op, "y", y);
  detail::require_dtype(op, "x", x, DType::kF32, DType::kBF16);
  detail::require_dtype(op, "w", w, DType::kBF16, DType::kBF16);
  detail::require_dtype(op, "y", y, DType::kF32, DType::kBF16);
  const bool nk = layout == BatchedWeight::kOutIn;
  SY_REQUIRE(x.dim() == 3 && w.dim() == 3 && y.dim() == 3, InvalidArgument, op, "rank-3 x, w, y expected, got x ",
             x.describe(), " w ", w.describe(), " y ", y.describe());
  const int64_t m = x.size(0), batches = x.size(1), k = x.size(2), n = nk ? w.size(1) : w.size(2);
  SY_REQUIRE(w.size(0) == batches && (nk ? w.size(2) : w.size(1)) == k && y.size(0) == m && y.size(1) == batches &&
                 y.size(2) == n,
             InvalidArgument, op, "shapes x ", x.describe(), " w ", w.describe(), " (", nk ? "B, n, k" : "B, k, n",
             ") y ", y.describe());
  // cuBLAS reads every operand as a strided matrix with unit steps along the last dimension; y's rows must not
  // overlap (each (row, batch) owns n consecutive elements, batches ordered within a row).
  const Shape &xs = x.strides(), &ws = w.strides(), &ys = y.strides();
  SY_REQUIRE(xs[2] == 1 && ws[2] == 1 && ys[2] == 1 && ys[1] >= n && ys[0] >= ys[1] * batches && xs[0] >= k &&
                 ws[1] >= (nk ? k : n) && (x.dtype() == DType::kBF16 || x.is_contiguous()),
             InvalidArgument, op, "unsupported strides: x ", x.describe(), " w ", w.describe(), " y ", y.describe(),
             " (unit last strides, non-overlapping y rows; f32 x must be contiguous)");
  SY_REQUIRE(k > 0, InvalidArgument, op, "empty reduction dimension: x ", x.describe());
  for (int64_t v : {xs[0], ws[1], ys[0], m, n, k, batches}) {  // cuBLAS takes these as int (batch strides: 64-bit)
    SY_REQUIRE(v <= INT32_MAX, InvalidArgument, op, "a size or leading dimension exceeds 2^31: x ", x.describe(),
               " w ", w.describe(), " y ", y.describe());
  }
  if (m == 0 || batches == 0 || n == 0) return;
  Tensor xb = x;
  if (x.dtype() == DType::kF32) {
    xb = Tensor::empty(x.shape(), DType::kBF16, Device::kCuda);
    detail::to_bf16(x, xb);
  }
  const Shape& xbs = xb.strides();
  // Column-major view per batch b: y_b^T (n x m, ld ys[0]) = op(W_b) (n x k) * x_b^T (k x m, ld xbs[0]); W_b
  // (n, k) row-major is k x n column-major (transposed), W_b (k, n) row-major is n x k column-major (as is).
  const float alpha = 1.f, beta = 0.f;
  const cudaDataType_t y_type = y.dtype() == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  SY_CUBLAS_CHECK(detail::cublas().gemm_strided_batched_ex(
      handle(), nk ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
      static_cast<int>(k), &alpha, w.raw(), CUDA_R_16BF, static_cast<int>(ws[1]), ws[0], xb.raw(), CUDA_R_16BF,
      static_cast<int>(xbs[0]), xbs[1], &beta, y.raw(), y_type, static_cast<int>(ys[0]), ys[1],
      static_cast<int>(batches), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace sy::cuda
