// Prefill-sized routed experts as one cuBLAS grouped GEMM (see cuda_ops.h): every expert with rows is one
// problem of its own group (their row counts differ), operands bf16, f32 accumulation. cuBLAS 13 refuses
// f32 output for bf16 operands in the grouped call (measured on the H100: NOT_SUPPORTED), so the products
// are written in bf16 and widened to f32 in one pass. The problem pointer arrays are built on the host from
// the row offsets and uploaded once per call. If cuBLAS refuses the grouped call altogether, the same
// products run as one cublasGemmEx per expert (f32 output).
#include <vector>

#include "op_common.cuh"

namespace sy::cuda {

namespace {
bool g_grouped = true;  // whether the last call ran grouped

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = __bfloat162float(in[i]);
  }
}
}  // namespace

bool grouped_gemm_is_grouped() { return g_grouped; }

void cast(const Tensor& src, Tensor& dst) {
  detail::require_device("cuda cast", "src", src);
  detail::require_device("cuda cast", "dst", dst);
  SY_REQUIRE(src.numel() == dst.numel(), InvalidArgument, "cuda cast", "src ", src.describe(), " dst ", dst.describe());
  const int64_t n = src.numel();
  if (n == 0) return;
  if (src.dtype() == dst.dtype()) {
    SY_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream()));
  } else if (src.dtype() == DType::kF32 && dst.dtype() == DType::kBF16) {
    detail::to_bf16(src, dst);
  } else if (src.dtype() == DType::kBF16 && dst.dtype() == DType::kF32) {
    bf16_to_f32_kernel<<<detail::blocks_for(n, 256), 256, 0, stream()>>>(static_cast<const __nv_bfloat16*>(src.raw()),
                                                                         dst.f32(), n);
    SY_CUDA_CHECK_LAUNCH();
  } else {
    throw make_error<InvalidArgument>("cuda cast", "only f32 <-> bf16, not ", src.describe(), " -> ", dst.describe());
  }
}

void grouped_gemm(const Tensor& x, const ExpertWeightTable& w, const std::vector<int64_t>& offsets, Tensor& y) {
  const char* op = "cuda grouped_gemm";
  detail::require_device(op, "x", x);
  detail::require_device(op, "y", y);
  detail::require_dtype(op, "x", x, DType::kF32, DType::kBF16);
  detail::require_dtype(op, "y", y, DType::kF32, DType::kBF16);
  const bool y_bf16 = y.dtype() == DType::kBF16;
  const size_t y_elem = y_bf16 ? 2 : 4;
  SY_REQUIRE(x.dim() == 2 && y.dim() == 2 && x.size(1) == w.k && y.size(1) == w.n && y.size(0) == x.size(0) &&
                 static_cast<int>(offsets.size()) == w.num_experts + 1 && offsets.back() == x.size(0),
             InvalidArgument, op, "x ", x.describe(), " y ", y.describe(), " weights (", w.n, ", ", w.k, ") x ",
             w.num_experts, " with ", offsets.size(), " offsets");
  if (x.size(0) == 0 || w.n == 0) return;
  Tensor xb = x;
  if (x.dtype() == DType::kF32) {
    xb = Tensor::empty(x.shape(), DType::kBF16, Device::kCuda);
    detail::to_bf16(x, xb);
  }
  const int64_t n = w.n, k = w.k;
  std::vector<const void*> a, b;
  std::vector<void*> c;
  std::vector<int64_t> c_off;  // element offset of each problem's output rows in y
  std::vector<int> ms, ns, ks, ldas, ldbs, ldcs, sizes;
  std::vector<cublasOperation_t> ta, tb;
  for (int e = 0; e < w.num_experts; ++e) {
    const int64_t lo = offsets[e], hi = offsets[e + 1];
    if (hi == lo) continue;
    SY_REQUIRE(hi > lo && w.keep[e].defined(), InvalidArgument, op, "expert ", e, " has ", hi - lo,
               " rows but no weights (or the offsets decrease)");
    // Column-major: y_e^T (n x m_e) = W_e^T (n x k, stored (n, k) row-major) * x_e^T (k x m_e).
    a.push_back(w.keep[e].raw());
    b.push_back(static_cast<const __nv_bfloat16*>(xb.raw()) + lo * k);
    c.push_back(static_cast<char*>(y.raw()) + lo * n * static_cast<int64_t>(y_elem));
    c_off.push_back(lo * n);
    ms.push_back(static_cast<int>(n));
    ns.push_back(static_cast<int>(hi - lo));
    ks.push_back(static_cast<int>(k));
    ldas.push_back(static_cast<int>(k));
    ldbs.push_back(static_cast<int>(k));
    ldcs.push_back(static_cast<int>(n));
    sizes.push_back(1);
    ta.push_back(CUBLAS_OP_T);
    tb.push_back(CUBLAS_OP_N);
  }
  const int groups = static_cast<int>(a.size());
  if (groups == 0) return;
  const std::vector<float> alpha(groups, 1.f), beta(groups, 0.f);
  if (detail::cublas().gemm_grouped_batched_ex) {
    // The pointer arrays live on the device: A, B, C of every problem in one upload. C points into a bf16
    // copy of y at the same row offsets.
    Tensor yb = y_bf16 ? y : Tensor::empty(y.shape(), DType::kBF16, Device::kCuda);
    Tensor ptrs = Tensor::empty({3 * static_cast<int64_t>(groups)}, DType::kI64, Device::kCuda);
    std::vector<const void*> host(3 * static_cast<size_t>(groups));
    for (int g = 0; g < groups; ++g) {
      host[g] = a[g];
      host[groups + g] = b[g];
      host[2 * groups + g] = static_cast<__nv_bfloat16*>(yb.raw()) + c_off[g];
    }
    upload(ptrs.raw(), host.data(), host.size() * sizeof(void*));
    const void* const* dev = static_cast<const void* const*>(ptrs.raw());
    const cublasStatus_t st = detail::cublas().gemm_grouped_batched_ex(
        detail::cublas_handle(), ta.data(), tb.data(), ms.data(), ns.data(), ks.data(), alpha.data(), dev,
        CUDA_R_16BF, ldas.data(), dev + groups, CUDA_R_16BF, ldbs.data(), beta.data(),
        const_cast<void* const*>(dev + 2 * groups), CUDA_R_16BF, ldcs.data(), groups, sizes.data(),
        CUBLAS_COMPUTE_32F);
    if (st == CUBLAS_STATUS_SUCCESS && y_bf16) {
      g_grouped = true;
      return;
    }
    if (st == CUBLAS_STATUS_SUCCESS) {
      bf16_to_f32_kernel<<<detail::blocks_for(yb.numel(), 256), 256, 0, stream()>>>(
          static_cast<const __nv_bfloat16*>(yb.raw()), y.f32(), yb.numel());
      SY_CUDA_CHECK_LAUNCH();
      g_grouped = true;
      return;
    }
    SY_REQUIRE(st == CUBLAS_STATUS_NOT_SUPPORTED, Error, op, "cublasGemmGroupedBatchedEx failed: ",
               detail::cublas().status_name(st));
  }
  g_grouped = false;
  for (int g = 0; g < groups; ++g) {
    SY_CUBLAS_CHECK(detail::cublas().gemm_ex(detail::cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, ms[g], ns[g],
                                             ks[g], &alpha[g], a[g], CUDA_R_16BF, ldas[g], b[g], CUDA_R_16BF,
                                             ldbs[g], &beta[g], c[g], y_bf16 ? CUDA_R_16BF : CUDA_R_32F, ldcs[g],
                                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace sy::cuda
