// CUDA dispatch row maps, permute and unpermute (combine). Rows are grouped by expert and, within an expert,
// ordered by assignment index, exactly as sy::moe::make_dispatch_layout orders them; positions come from
// block-wide prefix counts, never from atomics, so the layout and every result are deterministic.
// Not here: capacity/drop decisions, per-rank counts for expert parallelism, fusion of permute into the GEMM.
#include "block_layout.cuh"
#include "op_common.cuh"

namespace sy::cuda {

namespace {

constexpr int kThreads = 256;

// Block e counts the assignments of expert e.
__global__ void count_kernel(const int32_t* expert, int64_t assignments, int num_experts, int64_t* counts,
                             int* bad) {
  __shared__ int64_t partial[kThreads / 32];
  const int e = blockIdx.x;
  int64_t n = 0;
  for (int64_t a = threadIdx.x; a < assignments; a += blockDim.x) {
    const int32_t x = expert[a];
    n += x == e;
    if (bad != nullptr && e == 0 && (x < 0 || x >= num_experts)) *bad = 1;
  }
  for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = n;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t total = 0;
    for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
    counts[e] = total;
  }
}

// Block e walks the assignments in order, chunk by chunk, and gives its k-th match row offsets[e] + k.
__global__ void rows_kernel(const int32_t* expert, int64_t assignments, int num_experts, const int64_t* counts,
                            int64_t* offsets, int64_t* row_assignment, int64_t* assignment_row) {
  __shared__ int warp_counts[kThreads / 32];
  __shared__ int64_t base;
  const int e = blockIdx.x;
  if (threadIdx.x == 0) {
    int64_t off = 0;
    for (int i = 0; i < e; ++i) off += counts[i];
    base = off;
    offsets[e] = off;
    if (e == num_experts - 1) offsets[num_experts] = off + counts[e];
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t start = 0; start < assignments; start += blockDim.x) {
    const int64_t a = start + threadIdx.x;
    const bool match = a < assignments && expert[a] == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, match);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = __popc(ballot & ((1u << lane) - 1u));
    for (int w = 0; w < warp; ++w) before += warp_counts[w];
    if (match) {
      const int64_t row = base + before;
      row_assignment[row] = a;
      assignment_row[a] = row;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int total = 0;
      for (int w = 0; w < kThreads / 32; ++w) total += warp_counts[w];
      base += total;
    }
    __syncthreads();
  }
}

// The whole layout in one block for decode-sized passes (the two kernels above cost ~10 us of launches and
// serial offset sums at a handful of assignments); see block_layout.cuh.
__global__ void __launch_bounds__(detail::kBlockLayoutMaxExperts) small_layout_kernel(
    const int32_t* expert, int assignments, int num_experts, int64_t* counts, int64_t* offsets,
    int64_t* row_assignment, int64_t* assignment_row, int* bad) {
  detail::block_layout(expert, assignments, num_experts, counts, offsets, row_assignment, assignment_row, bad);
}

template <typename T>
__global__ void permute_kernel(const T* x, const int64_t* row_assignment, int top_k, int64_t hidden, T* out) {
  const int64_t r = blockIdx.x;
  const T* src = x + (row_assignment[r] / top_k) * hidden;
  T* dst = out + r * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) dst[j] = src[j];
}

// Block t owns output row t; each element sums its top_k contributions in slot order.
template <typename T>
__global__ void unpermute_kernel(const T* expert_out, const int64_t* assignment_row, const float* weight,
                                 int top_k, int64_t hidden, int64_t tokens, float* out) {
  detail::chain_entry();  // a decode-chain kernel: see launch_chained
  // Grid: (hidden chunks, tokens): a one-token decode still spreads over many blocks.
  for (int64_t t = blockIdx.y; t < tokens; t += gridDim.y) {
    for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < hidden; j += int64_t{gridDim.x} * blockDim.x) {
      float acc = out[t * hidden + j];
      for (int s = 0; s < top_k; ++s) {
        acc += weight[t * top_k + s] * detail::load_f(expert_out, assignment_row[t * top_k + s] * hidden + j);
      }
      out[t * hidden + j] = acc;
    }
  }
}

// Row r of the permuted rows belongs to expert expert[row_assignment[r]]; adds that expert's bias row.
template <typename T>
__global__ void expert_bias_kernel(T* y, const float* bias, const int32_t* expert, const int64_t* row_assignment,
                                   int64_t rows, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    const int32_t e = expert[row_assignment[r]];
    detail::store_f(y, i, detail::load_f(y, i) + bias[e * n + c]);
  }
}

}  // namespace

void add_expert_bias(Tensor& y, const Tensor& bias, const Tensor& expert, const DeviceDispatchLayout& layout) {
  const char* op = "cuda add_expert_bias";
  detail::require_device(op, "y", y);
  detail::require_device(op, "bias", bias);
  detail::require_device(op, "expert", expert);
  detail::require_dtype(op, "y", y, DType::kF32, DType::kBF16);
  detail::require_dtype(op, "bias", bias, DType::kF32);
  detail::require_dtype(op, "expert", expert, DType::kI32, DType::kI32);
  const int64_t rows = layout.row_assignment.numel();
  SY_REQUIRE(y.dim() == 2 && y.size(0) == rows && bias.dim() == 2 && bias.size(0) == layout.num_experts &&
                 bias.size(1) == y.size(1) && expert.numel() == rows,
             InvalidArgument, op, "y ", y.describe(), " bias ", bias.describe(), " expert ", expert.describe());
  const int64_t n = y.size(1);
  if (rows == 0 || n == 0) return;
  if (y.dtype() == DType::kF32) {
    expert_bias_kernel<<<detail::blocks_for(rows * n, 256), 256, 0, stream()>>>(
        y.f32(), bias.f32(), expert.i32(), layout.row_assignment.i64(), rows, n);
  } else {
    expert_bias_kernel<<<detail::blocks_for(rows * n, 256), 256, 0, stream()>>>(
        static_cast<__nv_bfloat16*>(y.raw()), bias.f32(), expert.i32(), layout.row_assignment.i64(), rows, n);
  }
  SY_CUDA_CHECK_LAUNCH();
}

DeviceDispatchLayout make_dispatch_layout(const Tensor& expert, int num_experts, bool check_ids,
                                          const Tensor& counts_out) {
  detail::require_device("cuda dispatch", "expert", expert);
  detail::require_dtype("cuda dispatch", "expert", expert, DType::kI32, DType::kI32);
  SY_REQUIRE(expert.dim() == 2 && num_experts >= 1, InvalidArgument, "cuda dispatch", "expert ",
             expert.describe(), " over ", num_experts, " experts");
  DeviceDispatchLayout l;
  l.num_experts = num_experts;
  l.num_tokens = expert.size(0);
  l.top_k = static_cast<int>(expert.size(1));
  const int64_t assignments = expert.numel();
  if (counts_out.defined()) {
    detail::require_device("cuda dispatch", "counts_out", counts_out);
    detail::require_dtype("cuda dispatch", "counts_out", counts_out, DType::kI64, DType::kI64);
    SY_REQUIRE(counts_out.numel() == num_experts, InvalidArgument, "cuda dispatch", "counts_out ",
               counts_out.describe(), " for ", num_experts, " experts");
    l.tokens_per_expert = counts_out;
  } else {
    l.tokens_per_expert = Tensor::empty({num_experts}, DType::kI64, Device::kCuda);
  }
  l.offsets = Tensor::empty({num_experts + 1}, DType::kI64, Device::kCuda);
  l.row_assignment = Tensor::empty({assignments}, DType::kI64, Device::kCuda);
  l.assignment_row = Tensor::empty({assignments}, DType::kI64, Device::kCuda);
  Tensor bad = check_ids ? Tensor::zeros({1}, DType::kI32, Device::kCuda) : Tensor();
  if (assignments <= detail::kBlockLayoutMaxAssignments && num_experts <= detail::kBlockLayoutMaxExperts) {
    // A thread per expert and per assignment, whole warps.
    const int64_t wanted = num_experts > assignments ? num_experts : assignments;
    const int threads = static_cast<int>((wanted + 31) / 32 * 32);
    small_layout_kernel<<<1, threads, 0, stream()>>>(expert.i32(), static_cast<int>(assignments), num_experts,
                                                           l.tokens_per_expert.i64(), l.offsets.i64(),
                                                           l.row_assignment.i64(), l.assignment_row.i64(),
                                                           check_ids ? bad.i32() : nullptr);
    SY_CUDA_CHECK_LAUNCH();
  } else {
    count_kernel<<<num_experts, kThreads, 0, stream()>>>(expert.i32(), assignments, num_experts,
                                                         l.tokens_per_expert.i64(), check_ids ? bad.i32() : nullptr);
    SY_CUDA_CHECK_LAUNCH();
    rows_kernel<<<num_experts, kThreads, 0, stream()>>>(expert.i32(), assignments, num_experts,
                                                        l.tokens_per_expert.i64(), l.offsets.i64(),
                                                        l.row_assignment.i64(), l.assignment_row.i64());
    SY_CUDA_CHECK_LAUNCH();
  }
  // An expert id out of range would leave rows unwritten: refuse it (one int copied back: a host sync, which
  // callers whose ids come from cuda::route skip).
  if (check_ids) {
    SY_REQUIRE(to_host(bad).i32()[0] == 0, InvalidArgument, "cuda dispatch", "expert id outside [0, ",
               num_experts, ")");
  }
  return l;
}

void permute(const Tensor& x, const DeviceDispatchLayout& layout, Tensor& permuted) {
  detail::require_device("cuda permute", "x", x);
  detail::require_device("cuda permute", "permuted", permuted);
  detail::require_dtype("cuda permute", "x", x, DType::kF32, DType::kBF16);
  const int64_t rows = layout.row_assignment.numel();
  SY_REQUIRE(x.dim() == 2 && x.size(0) == layout.num_tokens && permuted.dtype() == x.dtype() &&
                 permuted.dim() == 2 && permuted.size(0) == rows && permuted.size(1) == x.size(1),
             InvalidArgument, "cuda permute", "x ", x.describe(), " permuted ", permuted.describe(), " for ", rows,
             " rows");
  const int64_t hidden = x.size(1);
  if (rows == 0 || hidden == 0) return;
  if (x.dtype() == DType::kF32) {
    permute_kernel<<<static_cast<unsigned>(rows), 256, 0, stream()>>>(x.f32(), layout.row_assignment.i64(),
                                                                      layout.top_k, hidden, permuted.f32());
  } else {
    permute_kernel<<<static_cast<unsigned>(rows), 256, 0, stream()>>>(
        reinterpret_cast<const __nv_bfloat16*>(x.raw()), layout.row_assignment.i64(), layout.top_k, hidden,
        reinterpret_cast<__nv_bfloat16*>(permuted.raw()));
  }
  SY_CUDA_CHECK_LAUNCH();
}

void unpermute(const Tensor& expert_out, const DeviceDispatchLayout& layout, const Tensor& weight, Tensor& out) {
  detail::require_device("cuda unpermute", "expert_out", expert_out);
  detail::require_device("cuda unpermute", "weight", weight);
  detail::require_device("cuda unpermute", "out", out);
  detail::require_dtype("cuda unpermute", "expert_out", expert_out, DType::kF32, DType::kBF16);
  SY_REQUIRE(weight.dtype() == DType::kF32 && out.dtype() == DType::kF32, InvalidArgument, "cuda unpermute",
             "f32 weight and out expected");
  SY_REQUIRE(expert_out.dim() == 2 && expert_out.size(0) == layout.row_assignment.numel() && out.dim() == 2 &&
                 out.size(0) == layout.num_tokens && out.size(1) == expert_out.size(1) &&
                 weight.numel() == layout.num_tokens * layout.top_k,
             InvalidArgument, "cuda unpermute", "expert_out ", expert_out.describe(), " out ", out.describe(),
             " weight ", weight.describe());
  const int64_t hidden = out.size(1);
  if (layout.num_tokens == 0 || hidden == 0) return;
  const dim3 grid(static_cast<unsigned>((hidden + 127) / 128),
                  static_cast<unsigned>(layout.num_tokens < 65535 ? layout.num_tokens : 65535));
  if (expert_out.dtype() == DType::kF32) {
    detail::launch_chained(unpermute_kernel<float>, grid, 128, 0, expert_out.f32(), layout.assignment_row.i64(),
                           weight.f32(), layout.top_k, hidden, layout.num_tokens, out.f32());
  } else {
    detail::launch_chained(unpermute_kernel<__nv_bfloat16>, grid, 128, 0,
                           reinterpret_cast<const __nv_bfloat16*>(expert_out.raw()), layout.assignment_row.i64(),
                           weight.f32(), layout.top_k, hidden, layout.num_tokens, out.f32());
  }
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
