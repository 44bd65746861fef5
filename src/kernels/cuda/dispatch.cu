// CUDA dispatch row maps, permute and unpermute (combine). Rows are grouped by expert and, within an expert,
// ordered by assignment index, exactly as sy::moe::make_dispatch_layout orders them; positions come from
// block-wide prefix counts, never from atomics, so the layout and every result are deterministic.
// Not here: capacity/drop decisions, per-rank counts for expert parallelism, fusion of permute into the GEMM.
#include <algorithm>
#include <atomic>
#include <type_traits>

#include "block_layout.cuh"
#include "op_common.cuh"

namespace sy::cuda {

namespace {

constexpr int kThreads = 256;
std::atomic<bool> g_chunked_layout{true};  // set_chunked_dispatch_layout
std::atomic<bool> g_token_combine{true};  // set_token_combine
constexpr int64_t kTokenCombineMinTokens = 1024;  // smaller passes keep unpermute8_kernel's wider grid

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

// The chunked layout (set_chunked_dispatch_layout): the assignments in chunks of kChunk, a block each, so that
// no block walks them all. Three launches: each chunk's per-expert counts; a warp per expert scans its counts
// over the chunks; each chunk's block finds the experts' offsets and gives its assignments rows in order. Same rows as
// count_kernel + rows_kernel: expert by expert, and within an expert chunk by chunk, round by round, warp by
// warp, lane by lane, which is assignment order. No atomics decide a position (the shared-memory histogram's
// atomics only count).
constexpr int kChunk = 1024;
constexpr int kChunkWarps = kThreads / 32;
constexpr int kChunkedMaxExperts = 1024;  // the shared memory of chunk_rows_kernel: 8 B + 4 B per warp and expert

// Block c: chunk_counts[c * E + e] = the assignments of expert e among [c * kChunk, (c + 1) * kChunk).
// Dynamic shared memory: E ints. An id outside [0, E) sets *bad and counts nowhere (rows_kernel's behaviour).
__global__ void chunk_count_kernel(const int32_t* expert, int64_t assignments, int num_experts, int64_t* chunk_counts,
                                   int* bad) {
  extern __shared__ int histogram[];
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) histogram[e] = 0;
  __syncthreads();
  const int64_t lo = int64_t{blockIdx.x} * kChunk, hi = min(lo + kChunk, assignments);
  for (int64_t a = lo + threadIdx.x; a < hi; a += blockDim.x) {
    const int32_t x = expert[a];
    if (x >= 0 && x < num_experts) {
      atomicAdd(&histogram[x], 1);
    } else if (bad != nullptr) {
      *bad = 1;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) chunk_counts[int64_t{blockIdx.x} * num_experts + e] = histogram[e];
}

// Block e (one warp): first[c * E + e] = the assignments of expert e in chunks before c (a warp scan over 32
// chunks at a time), and counts[e] = all of them.
__global__ void expert_scan_kernel(const int64_t* chunk_counts, int chunks, int num_experts, int64_t* first,
                                   int64_t* counts) {
  const int e = blockIdx.x, lane = threadIdx.x;
  int64_t carry = 0;
  for (int c0 = 0; c0 < chunks; c0 += 32) {
    const int c = c0 + lane;
    const int64_t v = c < chunks ? chunk_counts[int64_t{c} * num_experts + e] : 0;
    int64_t incl = v;
    for (int o = 1; o < 32; o <<= 1) {
      const int64_t y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    if (c < chunks) first[int64_t{c} * num_experts + e] = carry + incl - v;
    carry += __shfl_sync(0xffffffffu, incl, 31);
  }
  if (lane == 0) counts[e] = carry;
}

// Block c gives chunk c's assignments their rows. First the experts' offsets (exclusive prefix sums of
// counts: warp 0, each lane summing a run of experts; block 0 writes them out), then kThreads assignments at a
// time in order: within a round a warp finds the lanes that share its expert (match.any), each warp's group
// leader records the group's size, and a lane's row is its expert's next row in the chunk plus the same
// expert's lanes before it (earlier warps, then earlier lanes). Dynamic shared memory: E int64 (each expert's
// next row) + kChunkWarps * E ints.
__global__ void chunk_rows_kernel(const int32_t* expert, int64_t assignments, int num_experts, const int64_t* counts,
                                  const int64_t* first, int64_t* offsets, int64_t* row_assignment,
                                  int64_t* assignment_row) {
  extern __shared__ int64_t next[];
  int* warp_count = reinterpret_cast<int*>(next + num_experts);  // [kChunkWarps][E]
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) next[e] = counts[e];
  __syncthreads();
  if (threadIdx.x < 32) {  // next[] becomes the exclusive prefix sums of the counts
    const int lane = threadIdx.x, run = (num_experts + 31) / 32;
    const int e0 = min(lane * run, num_experts), e1 = min(e0 + run, num_experts);
    int64_t sum = 0;
    for (int e = e0; e < e1; ++e) sum += next[e];
    int64_t incl = sum;
    for (int o = 1; o < 32; o <<= 1) {
      const int64_t y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    int64_t off = incl - sum;
    for (int e = e0; e < e1; ++e) {
      const int64_t n = next[e];
      next[e] = off;
      if (blockIdx.x == 0) offsets[e] = off;
      off += n;
    }
    if (blockIdx.x == 0 && lane == 31) offsets[num_experts] = incl;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) next[e] += first[int64_t{blockIdx.x} * num_experts + e];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t lo = int64_t{blockIdx.x} * kChunk, hi = min(lo + kChunk, assignments);
  for (int64_t start = lo; start < hi; start += blockDim.x) {
    for (int i = threadIdx.x; i < kChunkWarps * num_experts; i += blockDim.x) warp_count[i] = 0;
    __syncthreads();  // the counts are zero; next[] holds the rows after the last round's
    const int64_t a = start + threadIdx.x;
    const int32_t x = a < hi ? expert[a] : -1;
    const bool valid = x >= 0 && x < num_experts;
    const unsigned same = __match_any_sync(0xffffffffu, valid ? x : -1);
    const int rank = __popc(same & ((1u << lane) - 1u));
    if (valid && rank == 0) warp_count[warp * num_experts + x] = __popc(same);
    __syncthreads();
    if (valid) {
      int before = rank;
      for (int w = 0; w < warp; ++w) before += warp_count[w * num_experts + x];
      const int64_t row = next[x] + before;
      row_assignment[row] = a;
      assignment_row[a] = row;
    }
    __syncthreads();  // every lane has read next[]
    for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
      int round = 0;
      for (int w = 0; w < kChunkWarps; ++w) round += warp_count[w * num_experts + e];
      next[e] += round;
    }
    __syncthreads();  // the sums have read warp_count before the next round zeroes it
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

// The same sums as unpermute_kernel, element for element (the residual, then each slot's weighted row in slot
// order), eight columns per thread: one 16-byte load per slot of bf16 expert rows (two of f32 ones) instead of
// eight 2- or 4-byte loads, every slot's load issued before the first is used, and evict-first (each expert row
// is read once). hidden % 8 == 0, 16-byte aligned rows. The unvectorised kernel reached 1.8 TB/s on an H100
// at 16384 tokens x top-8 (454 us of a 3.3 ms layer).
constexpr int kUnpermuteSlots = 8;  // slots whose loads are in flight together
__device__ __forceinline__ void load8_streaming(const float* p, float (&v)[8]) {
  const float4 a = __ldcs(reinterpret_cast<const float4*>(p)), b = __ldcs(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8_streaming(const __nv_bfloat16* p, float (&v)[8]) {
  detail::unpack_bf16x8(__ldcs(reinterpret_cast<const uint4*>(p)), v);
}
template <typename T>
__global__ void unpermute8_kernel(const T* expert_out, const int64_t* assignment_row, const float* weight,
                                  int top_k, int64_t hidden, int64_t tokens, float* out) {
  detail::chain_entry();  // a decode-chain kernel: see launch_chained
  const int64_t groups = hidden / 8;  // 8-column groups per row
  for (int64_t t = blockIdx.y; t < tokens; t += gridDim.y) {
    for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups; g += int64_t{gridDim.x} * blockDim.x) {
      float* dst = out + t * hidden + 8 * g;
      float acc[8];
      detail::load_f32x8(dst, acc);
      for (int s0 = 0; s0 < top_k; s0 += kUnpermuteSlots) {
        float v[kUnpermuteSlots][8], w[kUnpermuteSlots];
#pragma unroll
        for (int u = 0; u < kUnpermuteSlots; ++u) {
          if (s0 + u >= top_k) break;
          w[u] = weight[t * top_k + s0 + u];
          load8_streaming(expert_out + assignment_row[t * top_k + s0 + u] * hidden + 8 * g, v[u]);
        }
#pragma unroll
        for (int u = 0; u < kUnpermuteSlots; ++u) {
          if (s0 + u >= top_k) break;
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[i] += w[u] * v[u][i];
        }
      }
      reinterpret_cast<float4*>(dst)[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
      reinterpret_cast<float4*>(dst)[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
    }
  }
}

// The same sums again (unpermute8_kernel's, element for element) for large passes of bf16 expert rows: each
// block walks tokens t = blockIdx.x, + gridDim.x, ... a whole token row at a time (its threads take the
// 8-column groups), and reads the next token's slots (row indices and weights) as the current token's start,
// so that no row load waits for an index. Row indices in 32 bits (the host checks the rows fit) and the slots'
// rows held as raw 16-byte words until summed, to keep the registers down. top_k <= kUnpermuteSlots.
__global__ void unpermute_tokens_kernel(const __nv_bfloat16* expert_out, const int64_t* assignment_row,
                                        const float* weight, int top_k, int64_t hidden, int64_t tokens, float* out) {
  detail::chain_entry();  // a decode-chain kernel: see launch_chained
  const int64_t groups = hidden / 8;
  int32_t row[kUnpermuteSlots];
  float w[kUnpermuteSlots];
  auto read_slots = [&](int64_t t) {
#pragma unroll
    for (int u = 0; u < kUnpermuteSlots; ++u) {
      const bool in = t < tokens && u < top_k;
      row[u] = in ? static_cast<int32_t>(assignment_row[t * top_k + u]) : 0;
      w[u] = in ? weight[t * top_k + u] : 0.f;
    }
  };
  read_slots(blockIdx.x);
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    int32_t here[kUnpermuteSlots];
    float w_here[kUnpermuteSlots];
#pragma unroll
    for (int u = 0; u < kUnpermuteSlots; ++u) here[u] = row[u], w_here[u] = w[u];
    read_slots(t + gridDim.x);  // in flight while this token's rows load
    for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
      uint4 raw[kUnpermuteSlots];
#pragma unroll
      for (int u = 0; u < kUnpermuteSlots; ++u) {
        if (u < top_k) raw[u] = __ldcs(reinterpret_cast<const uint4*>(expert_out + int64_t{here[u]} * hidden + 8 * g));
      }
      float* dst = out + t * hidden + 8 * g;
      float acc[8];
      detail::load_f32x8(dst, acc);
#pragma unroll
      for (int u = 0; u < kUnpermuteSlots; ++u) {
        if (u >= top_k) break;
        float v[8];
        detail::unpack_bf16x8(raw[u], v);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] += w_here[u] * v[i];
      }
      reinterpret_cast<float4*>(dst)[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
      reinterpret_cast<float4*>(dst)[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
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

void set_chunked_dispatch_layout(bool on) { g_chunked_layout.store(on); }
bool chunked_dispatch_layout() { return g_chunked_layout.load(); }
void set_token_combine(bool on) { g_token_combine.store(on); }
bool token_combine() { return g_token_combine.load(); }

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
  } else if (g_chunked_layout.load() && num_experts <= kChunkedMaxExperts) {
    const int chunks = static_cast<int>((assignments + kChunk - 1) / kChunk);
    Tensor chunk_counts = Tensor::empty({chunks, num_experts}, DType::kI64, Device::kCuda);
    Tensor first = Tensor::empty({chunks, num_experts}, DType::kI64, Device::kCuda);
    chunk_count_kernel<<<chunks, kThreads, num_experts * sizeof(int), stream()>>>(
        expert.i32(), assignments, num_experts, chunk_counts.i64(), check_ids ? bad.i32() : nullptr);
    SY_CUDA_CHECK_LAUNCH();
    expert_scan_kernel<<<num_experts, 32, 0, stream()>>>(chunk_counts.i64(), chunks, num_experts, first.i64(),
                                                         l.tokens_per_expert.i64());
    SY_CUDA_CHECK_LAUNCH();
    const size_t rows_smem = num_experts * (sizeof(int64_t) + kChunkWarps * sizeof(int));
    chunk_rows_kernel<<<chunks, kThreads, rows_smem, stream()>>>(
        expert.i32(), assignments, num_experts, l.tokens_per_expert.i64(), first.i64(), l.offsets.i64(),
        l.row_assignment.i64(), l.assignment_row.i64());
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

namespace {

// The combine over expert rows of type T: eight columns per thread (unpermute8_kernel) where the width is a
// multiple of 8 and the rows and out are 16-byte aligned, else one (unpermute_kernel); the same sums either way.
template <typename T>
void launch_unpermute(const T* expert_out, const DeviceDispatchLayout& layout, const Tensor& weight, Tensor& out) {
  const int64_t hidden = out.size(1);
  const bool vec = hidden % 8 == 0 && reinterpret_cast<uintptr_t>(expert_out) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out.raw()) % 16 == 0;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (vec && g_token_combine.load() && layout.num_tokens >= kTokenCombineMinTokens &&
        layout.top_k <= kUnpermuteSlots && layout.num_tokens * layout.top_k < INT32_MAX) {
      // A block per token row (up to 1024 threads of 8 columns), as many blocks as are resident (asked once per
      // block size: the answer depends on the kernel's registers, not on the pass).
      const int threads = static_cast<int>(std::min<int64_t>(1024, (hidden / 8 + 31) / 32 * 32));
      static std::atomic<int> resident_by_warps[33] = {};
      int per_sm = resident_by_warps[threads / 32].load();
      if (per_sm == 0) {
        SY_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, unpermute_tokens_kernel, threads, 0));
        resident_by_warps[threads / 32].store(per_sm);
      }
      const int64_t blocks = std::min<int64_t>(layout.num_tokens, int64_t{std::max(per_sm, 1)} * detail::multiprocessors());
      detail::launch_chained(unpermute_tokens_kernel, dim3(static_cast<unsigned>(blocks)), threads, 0, expert_out,
                             layout.assignment_row.i64(), weight.f32(), layout.top_k, hidden, layout.num_tokens,
                             out.f32());
      SY_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  const dim3 grid(static_cast<unsigned>(((vec ? hidden / 8 : hidden) + 127) / 128),
                  static_cast<unsigned>(layout.num_tokens < 65535 ? layout.num_tokens : 65535));
  detail::launch_chained(vec ? unpermute8_kernel<T> : unpermute_kernel<T>, grid, 128, 0, expert_out,
                         layout.assignment_row.i64(), weight.f32(), layout.top_k, hidden, layout.num_tokens,
                         out.f32());
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace

void unpermute(const Tensor& expert_out, const DeviceDispatchLayout& layout, const Tensor& weight, Tensor& out) {
  detail::require_device("cuda unpermute", "expert_out", expert_out);
  detail::require_device("cuda unpermute", "weight", weight);
  detail::require_device("cuda unpermute", "out", out);
  detail::require_dtype("cuda unpermute", "expert_out", expert_out, DType::kF32, DType::kBF16);
  SY_REQUIRE(weight.dtype() == DType::kF32 && out.dtype() == DType::kF32, InvalidArgument, "cuda unpermute",
             "f32 weight and out expected");
  SY_REQUIRE(expert_out.dim() == 2 && expert_out.size(0) == layout.row_assignment.numel() && out.dim() == 2 &&
                 out.size(0) == layout.num_tokens && out.size(1) == expert_out.size(1) &&
                 weight.numel() == layout.num_tokens * layout.top_k && expert_out.is_contiguous() &&
                 out.is_contiguous() && weight.is_contiguous(),
             InvalidArgument, "cuda unpermute", "expert_out ", expert_out.describe(), " out ", out.describe(),
             " weight ", weight.describe());
  if (layout.num_tokens == 0 || out.size(1) == 0) return;
  if (expert_out.dtype() == DType::kF32) {
    launch_unpermute(expert_out.f32(), layout, weight, out);
  } else {
    launch_unpermute(reinterpret_cast<const __nv_bfloat16*>(expert_out.raw()), layout, weight, out);
  }
}

}  // namespace sy::cuda
