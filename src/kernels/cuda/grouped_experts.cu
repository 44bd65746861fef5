// Grouped expert projection for decode-sized batches: one launch runs every routed expert's rows through its
// own bf16 weight matrix, reading the per-expert row ranges on the device (no host synchronisation, so a
// decode step can stay on the GPU end to end). Memory-bound design: each warp owns four output columns and
// streams their weight rows together once per kRows rows of its expert with 16-byte loads, eight in
// flight per lane; activations stay f32 (read through L1/L2). Grid: (column tiles, min(experts, rows)):
// block row y finds the y-th expert that received rows, so empty experts cost no blocks. Rows can be read
// through a dispatch layout's row map straight from the un-permuted tokens (no permute pass).
// Prefill-sized groups are better served by tensor-core GEMMs (cuBLAS grouped GEMM in the forward pass).
#include <vector>

#include "op_common.cuh"
#include "tensor_map.cuh"

namespace sy::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kColsPerWarp = 4;
constexpr int kMaxRows = 8;  // rows per chunk (the kernel's kRows) when nothing bounds an expert's row count

// The blockIdx.y-th expert that received rows (in expert order), or -1 when fewer experts have rows: the
// grid is sized by the row count, not the expert count, so a decode step (8 rows over 128 experts) launches
// blocks for 8 experts, not 128. Warp 0 loads the first kScanAhead * 32 experts' offsets at once (one L2 round
// trip: the chain of one round trip per 32 experts this replaced stood before every weight load of a decode
// step's expert GEMVs), then scans them with ballots (further experts 32 at a time); the answer goes through
// shared memory.
constexpr int kScanAhead = 8;  // 256 experts
__device__ int active_expert(const int64_t* offsets, int num_experts) {
  __shared__ int chosen;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    bool ahead[kScanAhead];
#pragma unroll
    for (int i = 0; i < kScanAhead; ++i) {
      const int e = 32 * i + lane;
      ahead[i] = e < num_experts && offsets[e + 1] > offsets[e];
    }
    int seen = 0, found = -1;
    for (int base = 0; base < num_experts && found < 0; base += 32) {
      const int e = base + lane;
      bool has_rows = false;
#pragma unroll
      for (int i = 0; i < kScanAhead; ++i) has_rows = base == 32 * i ? ahead[i] : has_rows;
      if (base >= 32 * kScanAhead) has_rows = e < num_experts && offsets[e + 1] > offsets[e];
      const unsigned mask = __ballot_sync(0xffffffffu, has_rows);
      const int count = __popc(mask);
      const int want = static_cast<int>(blockIdx.y) - seen;
      if (want < count) {
        unsigned m = mask;
        for (int i = 0; i < want; ++i) m &= m - 1;  // drop the lowest `want` set bits
        found = base + __ffs(m) - 1;
      }
      seen += count;
    }
    if (lane == 0) chosen = found;
  }
  __syncthreads();
  return chosen;
}

// Loads in flight per lane and weight row in the vectorised path: with kColsPerWarp rows streamed together a
// lane keeps kColsPerWarp * kBatch 16-byte loads outstanding (8, 128 bytes; two 256-thread blocks per SM
// hold 64 KB in flight), enough to cover HBM latency at decode sizes. kBatch 2 keeps the kernel at two blocks
// per SM (119 registers, no spills); 4 needed 166 registers (one block per SM) or spilled under a bound of 128.
// (3 with one accumulator row, three blocks per SM, measured slower than 2 on an H100: 21.1 and 13.6 us for a
// Qwen3-30B-A3B decode step's gate|up and down against 20.5 and 12.8.)
constexpr int kBatch = 2;

// y[r, c] = x[r, :] . w_e[c, :] for the rows r of expert e, or with kGated y[r, c] = silu(x[r] . gate_e[c]) *
// (x[r] . up_e[c]) (the SwiGLU hidden in the same pass: x is read once and no gate/up rows are written).
// Each warp streams kColsPerWarp weight rows together (kColsPerWarp adjacent columns of w, or half as many
// columns of gate and of up), all loads of a k chunk issued before any is used, once per kRows rows of its
// expert; weights are read with evict-first loads (each is used once per pass), activations through L1.
// With `gather` (a dispatch layout's row_assignment), row r of the groups reads x row gather[r] / top_k (the
// token of that assignment) instead of x row r.
// kRows: rows per chunk (1, 2, 4 or 8), the accumulators a lane keeps; any value gives the same result. A
// decode step of T tokens gives no expert more than T rows, and at T = 1 one accumulator row leaves room for
// three blocks per SM instead of two: a Qwen3-30B-A3B step's gate|up rows fit one wave (3072 warps).
template <bool kVec, bool kGated, int kRows>
__global__ void __launch_bounds__(kWarps * 32, kRows == 1 ? 3 : 2) grouped_linear_kernel(const float* x,
                                                                    const int64_t* gather,
                                                                    int top_k, const uint64_t* weights,
                                                                    const uint64_t* up_weights,
                                                                    const int64_t* offsets, int num_experts,
                                                                    float* y, int64_t n, int64_t k,
                                                                    bool release_after_wait) {
  constexpr int kOut = kGated ? kColsPerWarp / 2 : kColsPerWarp;  // output columns per warp
  constexpr int kUp = kGated ? 1 : 0;  // the up table's slot (only gated kernels have one)
  __shared__ uint64_t staged[kUp + 1][detail::kStagedExperts];
  // A decode-chain kernel (see launch_chained); the weight tables are staged before the wait. With
  // release_after_wait the next kernel is released only after the wait (see grouped_swiglu).
  if (!release_after_wait) detail::chain_release();
  detail::stage_pointers(weights, num_experts, staged[0]);
  if (kGated) detail::stage_pointers(up_weights, num_experts, staged[kUp]);
  detail::chain_wait();
  if (release_after_wait) detail::chain_release();
  const int e = active_expert(offsets, num_experts);  // its barrier makes the staged tables visible
  if (e < 0) return;
  const int64_t lo = offsets[e], hi = offsets[e + 1];
  const __nv_bfloat16* w = reinterpret_cast<const __nv_bfloat16*>(detail::staged_pointer(weights, staged[0], e));
  const __nv_bfloat16* wu =
      kGated ? reinterpret_cast<const __nv_bfloat16*>(detail::staged_pointer(up_weights, staged[kUp], e)) : nullptr;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kOut;
  if (col0 >= n) return;
  const int cols = static_cast<int>(n - col0 < kOut ? n - col0 : kOut);
  // Weight row of slot c (nullptr past the last column).
  const __nv_bfloat16* wrow[kColsPerWarp];
#pragma unroll
  for (int c = 0; c < kColsPerWarp; ++c) {
    const int col = c % kOut;
    wrow[c] = col >= cols ? nullptr : (kGated && c >= kOut ? wu : w) + (col0 + col) * k;
  }
  for (int64_t r0 = lo; r0 < hi; r0 += kRows) {
    const int rows = static_cast<int>(hi - r0 < kRows ? hi - r0 : kRows);
    // The x row of each of this chunk's rows: lane r looks up row r's and the x loads take it by shuffle. The
    // lookup (a round trip to L2 through the layout's row map) is not waited for until the first x load, so it
    // overlaps the first weight loads (which do not depend on it); shared memory here made every weight load
    // wait for it. One register: an array of kRows would spill at the kernel's two-blocks-per-SM bound. The
    // shuffles need the whole warp, so the k loops below run the same iterations on every lane (their bounds
    // depend on the chunk, not the lane) and a lane past k guards its loads and products instead.
    const int my_src = lane < rows ? static_cast<int>(gather ? gather[r0 + lane] / top_k : r0 + lane) : 0;
    auto src = [&](int r) { return __shfl_sync(0xffffffffu, my_src, r); };
    float acc[kRows][kColsPerWarp];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < kColsPerWarp; ++c) acc[r][c] = 0.f;
    }
    if (kVec) {  // k % 8 == 0: 8 bf16 weights per 16-byte load
      for (int64_t base = 0; base < k; base += kBatch * 32 * 8) {
        const int64_t k0 = base + lane * 8;
        uint4 packed[kColsPerWarp][kBatch];
#pragma unroll
        for (int c = 0; c < kColsPerWarp; ++c) {
#pragma unroll
          for (int u = 0; u < kBatch; ++u) {
            const int64_t kk = k0 + u * 32 * 8;
            packed[c][u] = wrow[c] && kk < k ? __ldcs(reinterpret_cast<const uint4*>(wrow[c] + kk))
                                             : make_uint4(0, 0, 0, 0);
          }
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int64_t kk = k0 + u * 32 * 8;
          if (base + u * 32 * 8 >= k) break;  // the same on every lane
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            if (r >= rows) break;
            const int64_t row = src(r);
            if (kk >= k) continue;
            const float4* xr = reinterpret_cast<const float4*>(x + row * k + kk);
            const float4 a = xr[0], b = xr[1];
#pragma unroll
            for (int c = 0; c < kColsPerWarp; ++c) {
              acc[r][c] += detail::dot_bf16x8(packed[c][u], a, b);
            }
          }
        }
      }
    } else {
#pragma unroll
      for (int c = 0; c < kColsPerWarp; ++c) {
        if (!wrow[c]) continue;
        for (int64_t base = 0; base < k; base += 32) {  // the same iterations on every lane
          const int64_t kk = base + lane;
          const float wv = kk < k ? __bfloat162float(wrow[c][kk]) : 0.f;
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            if (r >= rows) break;
            const int64_t row = src(r);
            if (kk < k) acc[r][c] += wv * x[row * k + kk];
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) break;
      float v[kColsPerWarp];
#pragma unroll
      for (int c = 0; c < kColsPerWarp; ++c) {
        v[c] = acc[r][c];
        for (int o = 16; o > 0; o >>= 1) v[c] += __shfl_xor_sync(0xffffffffu, v[c], o);
      }
      if (lane != 0) continue;
#pragma unroll
      for (int c = 0; c < kOut; ++c) {
        if (c >= cols) break;
        // silu as cuda::silu_mul computes it, so the fused pass equals the three-launch one.
        y[(r0 + r) * n + col0 + c] = kGated ? v[c] / (1.f + expf(-v[c])) * v[kOut + c] : v[c];
      }
    }
  }
}

// rows: the grouped rows (y's); gather/top_k as in the kernel (null: x's rows are y's). rows_bound: no expert
// has more rows (0: unknown).
template <bool kGated, int kRows>
void launch_rows(const Tensor& x, const int64_t* gather, int top_k, const dim3 grid, const ExpertWeightTable& w,
                 const ExpertWeightTable* up, const Tensor& offsets, Tensor& y, bool release_after_wait) {
  const uint64_t* ptrs = reinterpret_cast<const uint64_t*>(w.pointers.i64());
  const uint64_t* up_ptrs = up ? reinterpret_cast<const uint64_t*>(up->pointers.i64()) : nullptr;
  if (w.k % 8 == 0) {
    detail::launch_chained(grouped_linear_kernel<true, kGated, kRows>, grid, kWarps * 32, 0, x.f32(), gather, top_k,
                           ptrs, up_ptrs, offsets.i64(), w.num_experts, y.f32(), w.n, w.k, release_after_wait);
  } else {
    detail::launch_chained(grouped_linear_kernel<false, kGated, kMaxRows>, grid, kWarps * 32, 0, x.f32(), gather,
                           top_k, ptrs, up_ptrs, offsets.i64(), w.num_experts, y.f32(), w.n, w.k, release_after_wait);
  }
  SY_CUDA_CHECK_LAUNCH();
}

template <bool kGated>
void launch_grouped(const Tensor& x, const int64_t* gather, int top_k, int64_t rows, int64_t rows_bound,
                    const ExpertWeightTable& w, const ExpertWeightTable* up, const Tensor& offsets, Tensor& y,
                    bool release_after_wait = false) {
  constexpr int kOut = kGated ? kColsPerWarp / 2 : kColsPerWarp;
  const unsigned col_tiles = static_cast<unsigned>((w.n + kWarps * kOut - 1) / (kWarps * kOut));
  // At most one block row per expert that can have rows: min(experts, rows).
  const int64_t slots = rows < w.num_experts ? rows : w.num_experts;
  const dim3 grid(col_tiles, static_cast<unsigned>(slots));
  if (rows_bound == 1) {
    launch_rows<kGated, 1>(x, gather, top_k, grid, w, up, offsets, y, release_after_wait);
  } else if (rows_bound == 2) {
    launch_rows<kGated, 2>(x, gather, top_k, grid, w, up, offsets, y, release_after_wait);
  } else if (rows_bound >= 3 && rows_bound <= 4) {
    launch_rows<kGated, 4>(x, gather, top_k, grid, w, up, offsets, y, release_after_wait);
  } else {
    launch_rows<kGated, kMaxRows>(x, gather, top_k, grid, w, up, offsets, y, release_after_wait);
  }
}

void check_grouped_args(const char* op, const Tensor& x, const ExpertWeightTable& w, const Tensor& offsets,
                        const Tensor& y) {
  detail::require_device(op, "x", x);
  detail::require_device(op, "y", y);
  detail::require_device(op, "offsets", offsets);
  detail::require_dtype(op, "x", x, DType::kF32);
  detail::require_dtype(op, "y", y, DType::kF32);
  detail::require_dtype(op, "offsets", offsets, DType::kI64, DType::kI64);
  SY_REQUIRE(x.dim() == 2 && y.dim() == 2 && x.size(1) == w.k && y.size(1) == w.n && y.size(0) == x.size(0) &&
                 offsets.numel() == w.num_experts + 1 && x.size(0) < INT32_MAX,
             InvalidArgument, op, "x ", x.describe(), " y ", y.describe(), " weights (", w.n, ", ", w.k, ") x ",
             w.num_experts, " offsets ", offsets.describe());
}

}  // namespace

ExpertWeightTable make_expert_weight_table(const std::vector<Tensor>& weights) {
  SY_REQUIRE(!weights.empty(), InvalidArgument, "cuda grouped_linear", "no experts");
  ExpertWeightTable t;
  t.num_experts = static_cast<int>(weights.size());
  Tensor host = Tensor::empty({static_cast<int64_t>(weights.size())}, DType::kI64);
  for (size_t e = 0; e < weights.size(); ++e) {
    const Tensor& w = weights[e];
    if (!w.defined()) {  // an expert this process does not hold: must never receive rows
      host.i64()[e] = 0;
      continue;
    }
    detail::require_device("cuda grouped_linear", "expert weight", w);
    detail::require_dtype("cuda grouped_linear", "expert weight", w, DType::kBF16, DType::kBF16);
    SY_REQUIRE(w.dim() == 2 && (t.n == 0 || (w.size(0) == t.n && w.size(1) == t.k)), InvalidArgument,
               "cuda grouped_linear", "expert ", e, " weight ", w.describe(), " differs from the others");
    t.n = w.size(0);
    t.k = w.size(1);
    host.i64()[e] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(w.raw()));
  }
  t.pointers = to_device(host);
  t.keep = weights;
  t.tensor_maps = detail::expert_weight_maps(weights);
  return t;
}

void grouped_linear(const Tensor& x, const ExpertWeightTable& w, const Tensor& offsets, Tensor& y,
                    int64_t rows_per_expert_bound) {
  check_grouped_args("cuda grouped_linear", x, w, offsets, y);
  SY_REQUIRE(rows_per_expert_bound >= 0, InvalidArgument, "cuda grouped_linear", "rows_per_expert_bound ",
             rows_per_expert_bound, " must be 0 (unknown) or positive");
  if (x.size(0) == 0 || w.n == 0) return;
  launch_grouped<false>(x, nullptr, 1, x.size(0), rows_per_expert_bound, w, nullptr, offsets, y);
}

void grouped_swiglu(const Tensor& x, const ExpertWeightTable& gate, const ExpertWeightTable& up,
                    const Tensor& offsets, Tensor& y) {
  const char* op = "cuda grouped_swiglu";
  check_grouped_args(op, x, gate, offsets, y);
  SY_REQUIRE(up.n == gate.n && up.k == gate.k && up.num_experts == gate.num_experts, InvalidArgument, op,
             "gate weights (", gate.n, ", ", gate.k, ") x ", gate.num_experts, " and up weights (", up.n, ", ", up.k,
             ") x ", up.num_experts, " differ");
  if (x.size(0) == 0 || gate.n == 0) return;
  launch_grouped<true>(x, nullptr, 1, x.size(0), 0, gate, &up, offsets, y);
}

void grouped_swiglu(const Tensor& x, const ExpertWeightTable& gate, const ExpertWeightTable& up,
                    const DeviceDispatchLayout& layout, Tensor& y, bool release_after_wait) {
  const char* op = "cuda grouped_swiglu";
  detail::require_device(op, "x", x);
  detail::require_device(op, "y", y);
  detail::require_dtype(op, "x", x, DType::kF32);
  detail::require_dtype(op, "y", y, DType::kF32);
  const int64_t rows = layout.num_tokens * layout.top_k;
  SY_REQUIRE(x.dim() == 2 && y.dim() == 2 && x.size(0) == layout.num_tokens && x.size(1) == gate.k &&
                 y.size(0) == rows && y.size(1) == gate.n && layout.num_experts == gate.num_experts &&
                 up.n == gate.n && up.k == gate.k && up.num_experts == gate.num_experts && rows < INT32_MAX &&
                 layout.offsets.defined() && layout.offsets.numel() == gate.num_experts + 1 &&
                 layout.row_assignment.defined() && layout.row_assignment.numel() == rows,
             InvalidArgument, op, "x ", x.describe(), " (tokens of a layout of ", layout.num_tokens, " x top-",
             layout.top_k, " over ", layout.num_experts, " experts) y ", y.describe(), " gate (", gate.n, ", ",
             gate.k, ") x ", gate.num_experts, " up (", up.n, ", ", up.k, ") x ", up.num_experts);
  if (rows == 0 || gate.n == 0) return;
  // Top-k picks distinct experts, so no expert has more rows than the layout has tokens.
  launch_grouped<true>(x, layout.row_assignment.i64(), layout.top_k, rows, layout.num_tokens, gate, &up,
                       layout.offsets, y, release_after_wait);
}

void copy(const Tensor& src, Tensor& dst) {
  detail::require_device("cuda copy", "src", src);
  detail::require_device("cuda copy", "dst", dst);
  SY_REQUIRE(src.nbytes() == dst.nbytes(), InvalidArgument, "cuda copy", "src ", src.describe(), " dst ",
             dst.describe());
  if (src.nbytes() == 0) return;
  SY_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream()));
}

}  // namespace sy::cuda
