// CUDA glue ops of the device forward pass: embedding gather, residual add, clamp, the sigmoid-gated shared
// expert add, and row scatter/gather (paged KV writes, last-token selection). Memory-bound, one thread per
// element, f32 arithmetic.
#include "op_common.cuh"

namespace sy::cuda {

using detail::load_f;

namespace {

template <typename T>
__global__ void embedding_kernel(const int64_t* ids, const T* table, float* out, int64_t t, int64_t d,
                                 int64_t vocab, int* bad) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < t * d; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = idx / d, c = idx % d;
    const int64_t id = ids[i];
    if (id < 0 || id >= vocab) {
      if (bad != nullptr) *bad = 1;
      out[idx] = 0.f;
      continue;
    }
    out[idx] = load_f(table, id * d + c);
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    y[i] += x[i];
  }
}

__global__ void clamp_kernel(float* x, float c, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = fminf(fmaxf(x[i], -c), c);
  }
}

__global__ void gate_add_kernel(float* out, const float* shared, const float* gate, int64_t t, int64_t d) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < t * d; i += int64_t{gridDim.x} * blockDim.x) {
    const float g = gate[i / d];
    out[i] += shared[i] / (1.f + expf(-g));
  }
}

__global__ void scatter_rows_kernel(float* dst, const float* src, const int64_t* rows, int64_t n, int64_t row) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * row; i += int64_t{gridDim.x} * blockDim.x) {
    dst[rows[i / row] * row + i % row] = src[i];
  }
}

__global__ void gather_rows_kernel(float* dst, const float* src, const int64_t* rows, int64_t n, int64_t row) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * row; i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = src[rows[i / row] * row + i % row];
  }
}

void require_f32(const char* op, const char* name, const Tensor& t) {
  detail::require_device(op, name, t);
  detail::require_dtype(op, name, t, DType::kF32);
}

}  // namespace

void embedding(const Tensor& ids, const Tensor& table, Tensor& out, bool check_ids) {
  detail::require_device("cuda embedding", "ids", ids);
  detail::require_dtype("cuda embedding", "ids", ids, DType::kI64, DType::kI64);
  detail::require_device("cuda embedding", "table", table);
  detail::require_dtype("cuda embedding", "table", table, DType::kBF16, DType::kF32);
  require_f32("cuda embedding", "out", out);
  SY_REQUIRE(table.dim() == 2 && out.dim() == 2 && out.size(0) == ids.numel() && out.size(1) == table.size(1),
             InvalidArgument, "cuda embedding", "ids ", ids.describe(), " table ", table.describe(), " out ",
             out.describe());
  const int64_t t = ids.numel(), d = table.size(1);
  if (t == 0) return;
  Tensor bad = check_ids ? Tensor::zeros({1}, DType::kI32, Device::kCuda) : Tensor();
  int32_t* bad_flag = check_ids ? bad.i32() : nullptr;
  if (table.dtype() == DType::kBF16) {
    embedding_kernel<<<detail::blocks_for(t * d, 256), 256, 0, stream()>>>(
        ids.i64(), reinterpret_cast<const __nv_bfloat16*>(table.raw()), out.f32(), t, d, table.size(0), bad_flag);
  } else {
    embedding_kernel<<<detail::blocks_for(t * d, 256), 256, 0, stream()>>>(ids.i64(), table.f32(), out.f32(), t, d,
                                                                           table.size(0), bad_flag);
  }
  SY_CUDA_CHECK_LAUNCH();
  if (check_ids) {
    SY_REQUIRE(to_host(bad).i32()[0] == 0, InvalidArgument, "cuda embedding",
               "a token id is outside the vocabulary [0, ", table.size(0), ")");
  }
}

void add_inplace(Tensor& y, const Tensor& x) {
  require_f32("cuda add", "y", y);
  require_f32("cuda add", "x", x);
  SY_REQUIRE(y.numel() == x.numel(), InvalidArgument, "cuda add", "y ", y.describe(), " x ", x.describe());
  if (y.numel() == 0) return;
  add_kernel<<<detail::blocks_for(y.numel(), 256), 256, 0, stream()>>>(y.f32(), x.f32(), y.numel());
  SY_CUDA_CHECK_LAUNCH();
}

void clamp_inplace(Tensor& x, float c) {
  require_f32("cuda clamp", "x", x);
  if (x.numel() == 0) return;
  clamp_kernel<<<detail::blocks_for(x.numel(), 256), 256, 0, stream()>>>(x.f32(), c, x.numel());
  SY_CUDA_CHECK_LAUNCH();
}

void sigmoid_gate_add(Tensor& out, const Tensor& shared, const Tensor& gate) {
  require_f32("cuda gate_add", "out", out);
  require_f32("cuda gate_add", "shared", shared);
  require_f32("cuda gate_add", "gate", gate);
  SY_REQUIRE(out.dim() == 2 && shared.shape() == out.shape() && gate.numel() == out.size(0), InvalidArgument,
             "cuda gate_add", "out ", out.describe(), " shared ", shared.describe(), " gate ", gate.describe());
  if (out.numel() == 0) return;
  gate_add_kernel<<<detail::blocks_for(out.numel(), 256), 256, 0, stream()>>>(out.f32(), shared.f32(), gate.f32(),
                                                                             out.size(0), out.size(1));
  SY_CUDA_CHECK_LAUNCH();
}

void scatter_rows(Tensor& dst, const Tensor& src, const Tensor& rows) {
  require_f32("cuda scatter_rows", "dst", dst);
  require_f32("cuda scatter_rows", "src", src);
  detail::require_device("cuda scatter_rows", "rows", rows);
  detail::require_dtype("cuda scatter_rows", "rows", rows, DType::kI64, DType::kI64);
  const int64_t n = rows.numel();
  SY_REQUIRE(n > 0 && src.size(0) == n && src.numel() % n == 0 && dst.numel() % dst.size(0) == 0 &&
                 dst.numel() / dst.size(0) == src.numel() / n,
             InvalidArgument, "cuda scatter_rows", "dst ", dst.describe(), " src ", src.describe(), " rows ",
             rows.describe());
  const int64_t row = src.numel() / n;
  scatter_rows_kernel<<<detail::blocks_for(n * row, 256), 256, 0, stream()>>>(dst.f32(), src.f32(), rows.i64(), n, row);
  SY_CUDA_CHECK_LAUNCH();
}

void gather_rows(const Tensor& src, const Tensor& rows, Tensor& dst) {
  require_f32("cuda gather_rows", "src", src);
  require_f32("cuda gather_rows", "dst", dst);
  detail::require_device("cuda gather_rows", "rows", rows);
  detail::require_dtype("cuda gather_rows", "rows", rows, DType::kI64, DType::kI64);
  const int64_t n = rows.numel();
  SY_REQUIRE(dst.size(0) == n && src.numel() / src.size(0) == dst.numel() / std::max<int64_t>(n, 1),
             InvalidArgument, "cuda gather_rows", "src ", src.describe(), " dst ", dst.describe());
  if (n == 0) return;
  const int64_t row = dst.numel() / n;
  gather_rows_kernel<<<detail::blocks_for(n * row, 256), 256, 0, stream()>>>(dst.f32(), src.f32(), rows.i64(), n, row);
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
