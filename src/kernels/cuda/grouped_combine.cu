// The last projection of the routed experts and the combine in one launch, for decode-sized passes:
// out[t] += sum_s weight[t, s] * (w_e x_r) with e = expert[t, s] and r = assignment_row[t * top_k + s], what
// grouped_linear into dispatch-ordered rows followed by unpermute gives, without writing or re-reading the
// expert rows and without the second launch. Grid: (column tiles, tokens); in a block the warps split the
// token's slots (one slot per warp at top-8), each streaming its expert's kCols weight rows with every 16-byte
// load of a lane in flight at once; the slots' sums meet in shared memory and are added to out in slot
// order, as unpermute adds them (deterministic, and the same arithmetic as the two launches: each slot's sum
// is grouped_linear's). Not here: experts shared by several tokens are read once per token (L2 serves
// the repeats), so larger passes keep the two launches.
// The bulk form (set_grouped_linear_combine_bulk, Hopper) has each warp's weight rows, contiguous in the
// expert's matrix, brought into shared memory by one bulk copy instead of twelve 16-byte loads per lane held
// in registers: 64 registers a thread instead of ~120, four blocks per SM instead of two, so a
// Qwen3-30B-A3B step's 512 blocks are resident at once instead of in two waves. Same products in the same
// order as the register form: the same bits.
#include <atomic>
#include <map>

#include "async_copy.cuh"
#include "mbarrier.cuh"
#include "op_common.cuh"

namespace sy::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kCols = 4;       // output columns per warp
constexpr int kMaxSlots = 32;  // top_k this kernel takes
constexpr int kChunk = 1024;   // input columns per round of loads: four 16-byte loads per lane and column in
                               // flight (Qwen3-30B-A3B's 768-wide expert rows in one round)
constexpr int kLoads = kChunk / (32 * 8);
constexpr int64_t kBulkMaxK = 1536;  // the bulk form: a block's 8 x 4 weight rows in at most 96 KB of shared memory

std::atomic<bool> g_bulk{false};

size_t bulk_smem_bytes(int64_t k) { return static_cast<size_t>(kWarps) * kCols * k * sizeof(__nv_bfloat16); }

// Slot s's weight matrix of token t (nullptr: it adds nothing). The ids are read through L2: with
// routing_ready they were written by a kernel this one does not wait for.
__device__ __forceinline__ const __nv_bfloat16* slot_matrix(const int32_t* expert, int64_t t, int top_k, int s,
                                                            const uint64_t* weights, const uint64_t* staged,
                                                            int num_experts) {
  const int e = __ldcg(expert + t * top_k + s);
  return e >= 0 && e < num_experts
             ? reinterpret_cast<const __nv_bfloat16*>(detail::staged_pointer(weights, staged, e))
             : nullptr;
}

// The end of both forms, after the block barrier: one thread per (tile, column) adds the slots' sums to the
// residual, weighted, in slot order.
__device__ __forceinline__ void add_slots(const float (&part)[kWarps][kMaxSlots][kCols], int tiles, int64_t t,
                                          int64_t n, int top_k, const float* weight, float* out) {
  if (threadIdx.x >= tiles * kCols) return;
  const int my_tile = threadIdx.x / kCols, c = threadIdx.x % kCols;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * tiles + my_tile) * kCols + c;
  if (col >= n) return;
  float acc = out[t * n + col];
  for (int s = 0; s < top_k; ++s) acc += weight[t * top_k + s] * part[my_tile][s][c];
  out[t * n + col] = acc;
}

// One k chunk of a slot's sums, the same order in both forms (grouped_linear's: per lane, 8 products per
// 16 bytes of weights, in k order, columns innermost; the butterfly after the last chunk). weights(c, u, kk):
// the 16 bytes of column c at load u (column kk of the row).
template <class Weights>
__device__ __forceinline__ void chunk_products(const float* xr, int64_t k0, int64_t k, int lane,
                                               float (&acc)[kCols], Weights weights) {
#pragma unroll
  for (int u = 0; u < kLoads; ++u) {
    const int64_t kk = k0 + lane * 8 + u * 32 * 8;
    if (kk >= k) break;
    const float4* xp = reinterpret_cast<const float4*>(xr + kk);
    const float4 a = xp[0], b = xp[1];
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[c] += detail::dot_bf16x8(weights(c, u, kk), a, b);
  }
}

// A warp's four sums (lane c < kCols gets column c's) into part[tile][s].
__device__ __forceinline__ void store_slot(float (&acc)[kCols], bool has_matrix, int lane, float* slot_part) {
  if (has_matrix) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      for (int o = 16; o > 0; o >>= 1) acc[c] += __shfl_xor_sync(0xffffffffu, acc[c], o);
    }
  }
  if (lane < kCols) {
    float v = 0.f;
#pragma unroll
    for (int c = 0; c < kCols; ++c) v = c == lane ? acc[c] : v;
    slot_part[lane] = has_matrix ? v : 0.f;
  }
}

// x: (rows, k) f32 in dispatch order; weights: (E,) device addresses of (n, k) bf16 matrices; k % 8 == 0,
// rows 16-byte aligned. Slots with an expert id outside [0, E) or no matrix add nothing. routing_ready: the
// routing (expert, assignment_row) was complete before this kernel was released (see grouped_linear_combine),
// so each warp reads its first slot's expert and issues that expert's first weight loads before waiting on
// the previous kernel, whose output (x) is all it then waits for.
__global__ void __launch_bounds__(kWarps * 32) grouped_linear_combine_kernel(
    const float* x, const int64_t* assignment_row, const int32_t* expert, const float* weight, int top_k,
    const uint64_t* weights, int num_experts, float* out, int64_t n, int64_t k, bool routing_ready) {
  __shared__ float part[kWarps][kMaxSlots][kCols];  // [tile][slot][column]
  __shared__ uint64_t staged[detail::kStagedExperts];
  // A decode-chain kernel (see launch_chained); the weight table is staged before the wait.
  detail::chain_release();
  detail::stage_pointers(weights, num_experts, staged);
  if (!routing_ready) detail::chain_wait();
  __syncthreads();  // the staged table
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int slot_warps = top_k < kWarps ? top_k : kWarps, tiles = kWarps / slot_warps;
  const int tile = warp / slot_warps, first_slot = warp % slot_warps;
  const int64_t t = blockIdx.y, col0 = (static_cast<int64_t>(blockIdx.x) * tiles + tile) * kCols;
  const bool active = tile < tiles && col0 < n;
  const int cols = active ? static_cast<int>(n - col0 < kCols ? n - col0 : kCols) : 0;
  auto matrix = [&](int s) { return slot_matrix(expert, t, top_k, s, weights, staged, num_experts); };
  uint4 packed[kCols][kLoads];
  auto load_chunk = [&](const __nv_bfloat16* w, int64_t k0) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
        const int64_t kk = k0 + lane * 8 + u * 32 * 8;
        packed[c][u] = c < cols && kk < k ? __ldcs(reinterpret_cast<const uint4*>(w + (col0 + c) * k + kk))
                                          : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // The first slot's matrix and first chunk of its rows, before the wait where the routing allows.
  const __nv_bfloat16* first_w = active && first_slot < top_k ? matrix(first_slot) : nullptr;
  if (first_w) load_chunk(first_w, 0);
  if (routing_ready) detail::chain_wait();
  if (active) {
    for (int s = first_slot; s < top_k; s += slot_warps) {
      const __nv_bfloat16* w = s == first_slot ? first_w : matrix(s);
      float acc[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[c] = 0.f;
      if (w) {
        const float* xr = x + assignment_row[t * top_k + s] * k;
        for (int64_t k0 = 0; k0 < k; k0 += kChunk) {
          if (s != first_slot || k0 != 0) load_chunk(w, k0);
          chunk_products(xr, k0, k, lane, acc, [&](int c, int u, int64_t) { return packed[c][u]; });
        }
      }
      store_slot(acc, w != nullptr, lane, part[tile][s]);
    }
  }
  __syncthreads();
  add_slots(part, tiles, t, n, top_k, weight, out);
}

// The bulk form: the same slots, tiles and arithmetic, each warp's kCols weight rows of a slot (contiguous:
// adjacent rows of the expert's (n, k) matrix) brought into its shared-memory buffer by one bulk copy that
// lane 0 issues and every lane waits for on the warp's barrier. Dynamic shared memory: bulk_smem_bytes(k).
__global__ void __launch_bounds__(kWarps * 32, 4) grouped_linear_combine_bulk_kernel(
    const float* x, const int64_t* assignment_row, const int32_t* expert, const float* weight, int top_k,
    const uint64_t* weights, int num_experts, float* out, int64_t n, int64_t k, bool routing_ready) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(128) unsigned char rows_smem[];  // [warp][kCols][k] bf16
  __shared__ float part[kWarps][kMaxSlots][kCols];  // [tile][slot][column]
  __shared__ uint64_t staged[detail::kStagedExperts];
  __shared__ __align__(8) uint64_t landed[kWarps];  // warp w's rows have landed
  detail::chain_release();
  detail::stage_pointers(weights, num_experts, staged);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const uint32_t bar = detail::smem_address(&landed[warp]);
  if (lane == 0) {
    sm90::mbarrier_init(bar, 1);
    sm90::fence_mbarrier_init();
  }
  if (!routing_ready) detail::chain_wait();
  __syncthreads();  // the staged table and the barriers
  const int slot_warps = top_k < kWarps ? top_k : kWarps, tiles = kWarps / slot_warps;
  const int tile = warp / slot_warps, first_slot = warp % slot_warps;
  const int64_t t = blockIdx.y, col0 = (static_cast<int64_t>(blockIdx.x) * tiles + tile) * kCols;
  const bool active = tile < tiles && col0 < n;
  const int cols = active ? static_cast<int>(n - col0 < kCols ? n - col0 : kCols) : 0;
  const __nv_bfloat16* rows = reinterpret_cast<const __nv_bfloat16*>(rows_smem) + warp * kCols * k;
  auto matrix = [&](int s) { return slot_matrix(expert, t, top_k, s, weights, staged, num_experts); };
  auto request = [&](const __nv_bfloat16* w) {  // rows col0 .. col0 + cols - 1 of w, one copy
    if (lane == 0) {
      const uint32_t bytes = static_cast<uint32_t>(cols * k * sizeof(__nv_bfloat16));
      sm90::mbarrier_arrive_expect_tx(bar, bytes);
      sm90::bulk_load(detail::smem_address(rows), w + col0 * k, bytes, bar);
    }
  };
  const __nv_bfloat16* first_w = active && first_slot < top_k ? matrix(first_slot) : nullptr;
  if (first_w) request(first_w);
  if (routing_ready) detail::chain_wait();
  if (active) {
    uint32_t phase = 0;
    for (int s = first_slot; s < top_k; s += slot_warps) {
      const __nv_bfloat16* w = s == first_slot ? first_w : matrix(s);
      float acc[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[c] = 0.f;
      if (w) {
        if (s != first_slot) {
          __syncwarp();  // every lane is done with the buffer's previous rows
          if (lane == 0) sm90::fence_proxy_async_shared();
          request(w);
        }
        sm90::mbarrier_wait(bar, phase);
        phase ^= 1;
        const float* xr = x + assignment_row[t * top_k + s] * k;
        for (int64_t k0 = 0; k0 < k; k0 += kChunk) {
          chunk_products(xr, k0, k, lane, acc, [&](int c, int, int64_t kk) {
            return c < cols ? *reinterpret_cast<const uint4*>(rows + c * k + kk) : make_uint4(0, 0, 0, 0);
          });
        }
      }
      store_slot(acc, w != nullptr, lane, part[tile][s]);
    }
  }
  __syncthreads();
  add_slots(part, tiles, t, n, top_k, weight, out);
#else
  __trap();  // built without sm_90a code: bulk_supported() says false, so this never launches
#endif
}

// Whether the bulk form can run here (an sm_90a build on a compute capability 9.0 GPU), with its shared
// memory granted (per device, once).
bool bulk_supported() {
  static std::map<int, bool> cache;
  return detail::once_per_device(cache, [] {
    const size_t bytes = bulk_smem_bytes(kBulkMaxK);
    if (!detail::sm90a_device(bytes)) return false;
    SY_CUDA_CHECK(cudaFuncSetAttribute(grouped_linear_combine_bulk_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    return true;
  });
}

}  // namespace

bool set_grouped_linear_combine_bulk(bool on) {
  g_bulk.store(on && bulk_supported());
  return g_bulk.load();
}

bool grouped_linear_combine_bulk() { return g_bulk.load(); }

bool grouped_linear_combine_fits(const ExpertWeightTable& w, int top_k) {
  return w.k % 8 == 0 && top_k >= 1 && top_k <= kMaxSlots;
}

void grouped_linear_combine(const Tensor& x, const ExpertWeightTable& w, const DeviceDispatchLayout& layout,
                            const Tensor& expert, const Tensor& weight, Tensor& out, bool routing_ready) {
  const char* op = "cuda grouped_linear_combine";
  detail::require_device(op, "x", x);
  detail::require_device(op, "expert", expert);
  detail::require_device(op, "weight", weight);
  detail::require_device(op, "out", out);
  detail::require_dtype(op, "x", x, DType::kF32);
  detail::require_dtype(op, "expert", expert, DType::kI32, DType::kI32);
  detail::require_dtype(op, "weight", weight, DType::kF32);
  detail::require_dtype(op, "out", out, DType::kF32);
  const int64_t tokens = layout.num_tokens, rows = tokens * layout.top_k;
  SY_REQUIRE(grouped_linear_combine_fits(w, layout.top_k) && x.dim() == 2 && x.size(0) == rows && x.size(1) == w.k &&
                 out.dim() == 2 && out.size(0) == tokens && out.size(1) == w.n && expert.numel() == rows &&
                 weight.numel() == rows && layout.num_experts == w.num_experts && layout.assignment_row.defined() &&
                 layout.assignment_row.numel() == rows && x.is_contiguous() && out.is_contiguous() &&
                 reinterpret_cast<uintptr_t>(x.raw()) % 16 == 0 && tokens <= 65535,
             InvalidArgument, op, "x ", x.describe(), " out ", out.describe(), " expert ", expert.describe(),
             " weight ", weight.describe(), " for ", tokens, " tokens x top-", layout.top_k, " over experts (", w.n,
             ", ", w.k, ") x ", w.num_experts, " (k a multiple of 8, top_k at most ", kMaxSlots,
             ", 16-byte aligned rows)");
  if (tokens == 0 || w.n == 0) return;
  const int slot_warps = layout.top_k < kWarps ? layout.top_k : kWarps, tiles = kWarps / slot_warps;
  const dim3 grid(static_cast<unsigned>((w.n + tiles * kCols - 1) / (tiles * kCols)), static_cast<unsigned>(tokens));
  const bool bulk = g_bulk.load() && w.k <= kBulkMaxK && bulk_supported();
  detail::launch_chained(bulk ? grouped_linear_combine_bulk_kernel : grouped_linear_combine_kernel, grid,
                         kWarps * 32, bulk ? bulk_smem_bytes(w.k) : 0, x.f32(), layout.assignment_row.i64(),
                         expert.i32(), weight.f32(), layout.top_k,
                         reinterpret_cast<const uint64_t*>(w.pointers.i64()), w.num_experts, out.f32(), w.n, w.k,
                         routing_ready);
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
