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

template <typename T>
__global__ void scatter_rows_kernel(T* dst, const float* src, const int64_t* rows, int64_t n, int64_t row) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * row; i += int64_t{gridDim.x} * blockDim.x) {
    detail::store_f(dst, rows[i / row] * row + i % row, src[i]);
  }
}

template <typename T>
__global__ void gather_rows_kernel(T* dst, const T* src, const int64_t* rows, int64_t n, int64_t row) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * row; i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = src[rows[i / row] * row + i % row];
  }
}

// dst[r, dst_col + j] = src[r / div, src_col + j] for j < width (f32 rows of cs and cd columns).
__global__ void copy_columns_kernel(const float* src, int64_t cs, int64_t src_col, float* dst, int64_t cd,
                                    int64_t dst_col, int64_t rows, int64_t width, int64_t div) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * width; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / width, j = i % width;
    dst[r * cd + dst_col + j] = src[(r / div) * cs + src_col + j];
  }
}

// Row gather in 16-byte words (rows whose byte size is a multiple of 16, any dtype).
__global__ void gather_rows16_kernel(uint4* dst, const uint4* src, const int64_t* rows, int64_t n, int64_t words) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * words; i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = src[rows[i / words] * words + i % words];
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
  detail::require_device("cuda scatter_rows", "dst", dst);
  detail::require_dtype("cuda scatter_rows", "dst", dst, DType::kF32, DType::kBF16);
  require_f32("cuda scatter_rows", "src", src);
  detail::require_device("cuda scatter_rows", "rows", rows);
  detail::require_dtype("cuda scatter_rows", "rows", rows, DType::kI64, DType::kI64);
  const int64_t n = rows.numel();
  SY_REQUIRE(n > 0 && src.size(0) == n && src.numel() % n == 0 && dst.numel() % dst.size(0) == 0 &&
                 dst.numel() / dst.size(0) == src.numel() / n,
             InvalidArgument, "cuda scatter_rows", "dst ", dst.describe(), " src ", src.describe(), " rows ",
             rows.describe());
  const int64_t row = src.numel() / n;
  const unsigned blocks = detail::blocks_for(n * row, 256);
  if (dst.dtype() == DType::kBF16) {
    scatter_rows_kernel<<<blocks, 256, 0, stream()>>>(static_cast<__nv_bfloat16*>(dst.raw()), src.f32(), rows.i64(), n, row);
  } else {
    scatter_rows_kernel<<<blocks, 256, 0, stream()>>>(dst.f32(), src.f32(), rows.i64(), n, row);
  }
  SY_CUDA_CHECK_LAUNCH();
}

void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t width, int64_t src_row_div) {
  const char* op = "cuda copy_columns";
  require_f32(op, "src", src);
  require_f32(op, "dst", dst);
  SY_REQUIRE(src.dim() == 2 && dst.dim() == 2 && src_row_div >= 1 && width >= 0 && src_col >= 0 && dst_col >= 0 &&
                 src_col + width <= src.size(1) && dst_col + width <= dst.size(1) &&
                 dst.size(0) == src.size(0) * src_row_div,
             InvalidArgument, op, "src ", src.describe(), " columns [", src_col, ", ", src_col + width, ") dst ",
             dst.describe(), " columns [", dst_col, ", ", dst_col + width, ") with ", src_row_div,
             " destination rows per source row");
  const int64_t rows = dst.size(0);
  if (rows == 0 || width == 0) return;
  copy_columns_kernel<<<detail::blocks_for(rows * width, 256), 256, 0, stream()>>>(
      src.f32(), src.size(1), src_col, dst.f32(), dst.size(1), dst_col, rows, width, src_row_div);
  SY_CUDA_CHECK_LAUNCH();
}

void gather_rows(const Tensor& src, const Tensor& rows, Tensor& dst) {
  detail::require_device("cuda gather_rows", "src", src);
  detail::require_device("cuda gather_rows", "dst", dst);
  SY_REQUIRE(src.dtype() == dst.dtype(), InvalidArgument, "cuda gather_rows", "src ", src.describe(), " dst ",
             dst.describe(), " differ in dtype");
  detail::require_device("cuda gather_rows", "rows", rows);
  detail::require_dtype("cuda gather_rows", "rows", rows, DType::kI64, DType::kI64);
  const int64_t n = rows.numel();
  // Elements per row from the shape past dim 0, so that empty src or dst still compare their widths.
  auto row_elements = [](const Tensor& t) {
    int64_t e = 1;
    for (int d = 1; d < t.dim(); ++d) e *= t.size(d);
    return e;
  };
  SY_REQUIRE(src.dim() >= 1 && dst.dim() >= 1 && dst.size(0) == n && row_elements(src) == row_elements(dst),
             InvalidArgument, "cuda gather_rows", "src ", src.describe(), " dst ", dst.describe());
  if (n == 0) return;
  const int64_t row = row_elements(dst);
  const int64_t row_bytes = row * static_cast<int64_t>(dtype_size(dst.dtype()));
  const bool aligned = reinterpret_cast<uintptr_t>(src.raw()) % 16 == 0 && reinterpret_cast<uintptr_t>(dst.raw()) % 16 == 0;
  if (row_bytes % 16 == 0 && aligned) {
    const int64_t words = row_bytes / 16;
    gather_rows16_kernel<<<detail::blocks_for(n * words, 256), 256, 0, stream()>>>(
        static_cast<uint4*>(dst.raw()), static_cast<const uint4*>(src.raw()), rows.i64(), n, words);
  } else if (row_bytes % 4 == 0 && aligned) {  // 16-byte aligned buffers are 4-byte aligned too
    gather_rows_kernel<<<detail::blocks_for(n * row_bytes / 4, 256), 256, 0, stream()>>>(
        static_cast<uint32_t*>(dst.raw()), static_cast<const uint32_t*>(src.raw()), rows.i64(), n, row_bytes / 4);
  } else if (dtype_size(dst.dtype()) == 4) {
    gather_rows_kernel<<<detail::blocks_for(n * row, 256), 256, 0, stream()>>>(
        static_cast<uint32_t*>(dst.raw()), static_cast<const uint32_t*>(src.raw()), rows.i64(), n, row);
  } else if (dtype_size(dst.dtype()) == 2) {
    gather_rows_kernel<<<detail::blocks_for(n * row, 256), 256, 0, stream()>>>(
        static_cast<uint16_t*>(dst.raw()), static_cast<const uint16_t*>(src.raw()), rows.i64(), n, row);
  } else if (dtype_size(dst.dtype()) == 1) {
    gather_rows_kernel<<<detail::blocks_for(n * row, 256), 256, 0, stream()>>>(
        static_cast<uint8_t*>(dst.raw()), static_cast<const uint8_t*>(src.raw()), rows.i64(), n, row);
  } else {
    SY_REQUIRE(false, InvalidArgument, "cuda gather_rows", "rows of ", dst.describe(),
               " have an element size gather_rows does not handle");
  }
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
