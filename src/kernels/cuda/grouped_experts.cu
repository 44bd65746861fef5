// Grouped expert projection for decode-sized batches: one launch runs every routed expert's rows through its
// own bf16 weight matrix, reading the per-expert row ranges on the device (no host synchronisation, so a
// decode step can stay on the GPU end to end). Memory-bound design: each warp owns output columns and
// streams that weight row once per kRows rows of its expert with 16-byte loads, four in flight per lane;
// activations stay f32 (read through L1/L2). Grid: (column tiles, min(experts, rows)): block row y finds the
// y-th expert that received rows, so empty experts cost no blocks.
// Prefill-sized groups are better served by tensor-core GEMMs (per-expert cuBLAS in the forward pass).
#include <vector>

#include "op_common.cuh"

namespace sy::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kColsPerWarp = 4;
constexpr int kRows = 8;

// The blockIdx.y-th expert that received rows (in expert order), or -1 when fewer experts have rows: the
// grid is sized by the row count, not the expert count, so a decode step (8 rows over 128 experts) launches
// blocks for 8 experts, not 128. Warp 0 scans the offsets with ballots; the answer goes through shared memory.
__device__ int active_expert(const int64_t* offsets, int num_experts) {
  __shared__ int chosen;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    int seen = 0, found = -1;
    for (int base = 0; base < num_experts && found < 0; base += 32) {
      const int e = base + lane;
      const bool has_rows = e < num_experts && offsets[e + 1] > offsets[e];
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

template <bool kVec>
__global__ void __launch_bounds__(kWarps * 32) grouped_linear_kernel(const float* x, const uint64_t* weights,
                                                                    const int64_t* offsets, int num_experts,
                                                                    float* y, int64_t n, int64_t k) {
  const int e = active_expert(offsets, num_experts);
  if (e < 0) return;
  const int64_t lo = offsets[e], hi = offsets[e + 1];
  const __nv_bfloat16* w = reinterpret_cast<const __nv_bfloat16*>(weights[e]);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int cw = 0; cw < kColsPerWarp; ++cw) {
    const int64_t col = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kColsPerWarp + cw;
    if (col >= n) return;
    const __nv_bfloat16* wrow = w + col * k;
    for (int64_t r0 = lo; r0 < hi; r0 += kRows) {
      const int rows = static_cast<int>(hi - r0 < kRows ? hi - r0 : kRows);
      float acc[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r] = 0.f;
      if (kVec) {  // k % 8 == 0: 8 bf16 weights per 16-byte load, kBatch loads issued before any is used
        constexpr int kBatch = 4;
        for (int64_t k0 = lane * 8; k0 < k; k0 += kBatch * 32 * 8) {
          uint4 packed[kBatch];
#pragma unroll
          for (int u = 0; u < kBatch; ++u) {
            const int64_t kk = k0 + u * 32 * 8;
            packed[u] = kk < k ? __ldg(reinterpret_cast<const uint4*>(wrow + kk)) : make_uint4(0, 0, 0, 0);
          }
#pragma unroll
          for (int u = 0; u < kBatch; ++u) {
            const int64_t kk = k0 + u * 32 * 8;
            if (kk >= k) break;
            const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&packed[u]);
            float wf[8];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              const float2 f = __bfloat1622float2(h2[i]);
              wf[2 * i] = f.x;
              wf[2 * i + 1] = f.y;
            }
#pragma unroll
            for (int r = 0; r < kRows; ++r) {
              if (r < rows) {
                const float4* xr = reinterpret_cast<const float4*>(x + (r0 + r) * k + kk);
                const float4 a = xr[0], b = xr[1];
                acc[r] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w + wf[4] * b.x + wf[5] * b.y +
                          wf[6] * b.z + wf[7] * b.w;
              }
            }
          }
        }
      } else {
        for (int64_t kk = lane; kk < k; kk += 32) {
          const float wv = __bfloat162float(wrow[kk]);
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            if (r < rows) acc[r] += wv * x[(r0 + r) * k + kk];
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float v = acc[r];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && r < rows) y[(r0 + r) * n + col] = v;
      }
    }
  }
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
  return t;
}

void grouped_linear(const Tensor& x, const ExpertWeightTable& w, const Tensor& offsets, Tensor& y) {
  const char* op = "cuda grouped_linear";
  detail::require_device(op, "x", x);
  detail::require_device(op, "y", y);
  detail::require_device(op, "offsets", offsets);
  detail::require_dtype(op, "x", x, DType::kF32);
  detail::require_dtype(op, "y", y, DType::kF32);
  detail::require_dtype(op, "offsets", offsets, DType::kI64, DType::kI64);
  SY_REQUIRE(x.dim() == 2 && y.dim() == 2 && x.size(1) == w.k && y.size(1) == w.n && y.size(0) == x.size(0) &&
                 offsets.numel() == w.num_experts + 1,
             InvalidArgument, op, "x ", x.describe(), " y ", y.describe(), " weights (", w.n, ", ", w.k, ") x ",
             w.num_experts, " offsets ", offsets.describe());
  if (x.size(0) == 0 || w.n == 0) return;
  const unsigned col_tiles = static_cast<unsigned>((w.n + kWarps * kColsPerWarp - 1) / (kWarps * kColsPerWarp));
  // At most one block row per expert that can have rows: min(experts, rows).
  const int64_t slots = x.size(0) < w.num_experts ? x.size(0) : w.num_experts;
  const dim3 grid(col_tiles, static_cast<unsigned>(slots));
  const uint64_t* ptrs = reinterpret_cast<const uint64_t*>(w.pointers.i64());
  if (w.k % 8 == 0) {
    grouped_linear_kernel<true><<<grid, kWarps * 32, 0, stream()>>>(x.f32(), ptrs, offsets.i64(), w.num_experts,
                                                                    y.f32(), w.n, w.k);
  } else {
    grouped_linear_kernel<false><<<grid, kWarps * 32, 0, stream()>>>(x.f32(), ptrs, offsets.i64(), w.num_experts,
                                                                     y.f32(), w.n, w.k);
  }
  SY_CUDA_CHECK_LAUNCH();
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
