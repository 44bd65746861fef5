// Causal prefill attention on the tensor cores, FlashAttention-2 style: one block of 4 warps per 64 queries
// and head, looping over 64-key tiles of K and V staged in shared memory; S = Q K^T and O += P V run as
// bf16 WMMA products with f32 accumulation; the online softmax (running max and sum per row) runs in f32 on
// the S tile in shared memory, and the per-row rescale of O happens there too (the accumulator fragments'
// layout is opaque), so O round-trips through shared memory each tile. One sequence, head dim 64 or 128, GQA,
// sliding window (key tiles wholly outside every row's window are skipped) and per-head sinks (joined to the
// softmax at the end); no packed documents yet (cuda::attention has them). Not here: wgmma/TMA pipelining.
#include <mma.h>

#include <cmath>

#include "op_common.cuh"

namespace sy::cuda {

namespace {

using namespace nvcuda;

constexpr int kBlockM = 64;   // queries per block (16 per warp)
constexpr int kBlockN = 64;   // keys per tile
constexpr int kWarps = 4;
constexpr int kLdS = kBlockN + 4;   // f32 row stride of a warp's S tile
constexpr int kLdP = kBlockN + 8;   // bf16 row stride of a warp's P tile

// Shared memory of a block for head dim kD.
template <int kD>
struct Smem {
  static constexpr int kLdQK = kD + 8;  // bf16 row stride of Q/K/V tiles (multiple of 8, staggers banks)
  static constexpr int kLdO = kD + 4;   // f32 row stride of a warp's O tile
  __nv_bfloat16 q[kBlockM * kLdQK];
  __nv_bfloat16 k[kBlockN * kLdQK];
  __nv_bfloat16 v[kBlockN * kLdQK];
  float s[kWarps][16 * kLdS];
  __nv_bfloat16 p[kWarps][16 * kLdP];
  float o[kWarps][16 * kLdO];
};

// Copies rows [row0, row0 + 64) of one head (row stride `stride` elements) into a tile; rows past `t` are 0.
template <int kD>
__device__ void load_tile(__nv_bfloat16* tile, const __nv_bfloat16* src, int64_t row0, int64_t t, int64_t stride) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < 64 * kChunks; i += blockDim.x) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (row0 + r < t) val = *reinterpret_cast<const uint4*>(src + (row0 + r) * stride + c);
    *reinterpret_cast<uint4*>(tile + r * Smem<kD>::kLdQK + c) = val;
  }
}

// Query i attends keys [max(0, i - window + 1), i] (window 0: [0, i]); sinks: (heads,) f32 or null.
template <int kD>
__global__ void __launch_bounds__(kWarps * 32) flash_kernel(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                                            const __nv_bfloat16* v, const float* sinks, float* out,
                                                            int64_t t, int heads, int kv_heads, float scale,
                                                            int window) {
  constexpr int kLdQK = Smem<kD>::kLdQK, kLdO = Smem<kD>::kLdO;
  extern __shared__ __align__(16) unsigned char raw[];
  Smem<kD>& sm = *reinterpret_cast<Smem<kD>*>(raw);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int head = blockIdx.y, kv_head = head / (heads / kv_heads);
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kBlockM;
  const int64_t q_stride = static_cast<int64_t>(heads) * kD, kv_stride = static_cast<int64_t>(kv_heads) * kD;
  load_tile<kD>(sm.q, q + head * kD, q0, t, q_stride);
  float* o = sm.o[warp];
  for (int i = lane; i < 16 * kLdO; i += 32) o[i] = 0.f;
  // Row statistics: lane pair (2r, 2r+1) owns row r of this warp's 16 rows.
  const int row = lane >> 1, half = lane & 1;
  const int64_t qi = q0 + warp * 16 + row;  // this lane's query index
  float m = -INFINITY, l = 0.f;
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> qf[kD / 16];
  for (int kt = 0; kt < kD / 16; ++kt) wmma::load_matrix_sync(qf[kt], sm.q + warp * 16 * kLdQK + kt * 16, kLdQK);
  const int64_t last_key = q0 + kBlockM - 1 < t - 1 ? q0 + kBlockM - 1 : t - 1;
  // The block's first query sees keys from q0 - window + 1 on: earlier tiles are masked for every row.
  const int64_t first_key = window > 0 && q0 - window + 1 > 0 ? q0 - window + 1 : 0;
  for (int64_t k0 = first_key / kBlockN * kBlockN; k0 <= last_key; k0 += kBlockN) {
    __syncthreads();  // previous tile fully consumed
    load_tile<kD>(sm.k, k + kv_head * kD, k0, t, kv_stride);
    load_tile<kD>(sm.v, v + kv_head * kD, k0, t, kv_stride);
    __syncthreads();
    // S (16 x 64) = Q_w K^T.
    float* s = sm.s[warp];
    for (int nt = 0; nt < kBlockN / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
      for (int kt = 0; kt < kD / 16; ++kt) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, sm.k + nt * 16 * kLdQK + kt * 16, kLdQK);
        wmma::mma_sync(acc, qf[kt], kf, acc);
      }
      wmma::store_matrix_sync(s + nt * 16, acc, kLdS, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax on this lane's half row (32 keys), causal and window masks by index.
    float* srow = s + row * kLdS + half * 32;
    const int64_t lo = window > 0 ? qi - window + 1 : 0;
    float mx = -INFINITY;
    for (int c = 0; c < 32; ++c) {
      const int64_t key = k0 + half * 32 + c;
      const float x = key <= qi && key >= lo ? srow[c] * scale : -INFINITY;
      srow[c] = x;
      mx = fmaxf(mx, x);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);
    const float alpha = m_new == -INFINITY ? 1.f : __expf(m - m_new);
    float sum = 0.f;
    __nv_bfloat16* prow = sm.p[warp] + row * kLdP + half * 32;
    for (int c = 0; c < 32; ++c) {
      const float pv = srow[c] == -INFINITY ? 0.f : __expf(srow[c] - m_new);
      sum += pv;
      prow[c] = __float2bfloat16(pv);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    float* orow = o + row * kLdO + half * (kD / 2);
    for (int c = 0; c < kD / 2; ++c) orow[c] *= alpha;
    __syncwarp();
    // O (16 x 128) += P V.
    for (int nt = 0; nt < kD / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, o + nt * 16, kLdO, wmma::mem_row_major);
      for (int kt = 0; kt < kBlockN / 16; ++kt) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, sm.p[warp] + kt * 16, kLdP);
        wmma::load_matrix_sync(vf, sm.v + kt * 16 * kLdQK + nt * 16, kLdQK);
        wmma::mma_sync(acc, pf, vf, acc);
      }
      wmma::store_matrix_sync(o + nt * 16, acc, kLdO, wmma::mem_row_major);
    }
    __syncwarp();
  }
  // out = O / l for this lane's half row; a sink adds exp(sink - max) to the denominator, as in
  // ops::attention (every row saw its own key, so m is finite).
  if (qi < t) {
    float scale_o = 1.f, denom = l;
    if (sinks) {
      const float sink = sinks[head], mf = fmaxf(m, sink);
      scale_o = __expf(m - mf);
      denom = l * scale_o + __expf(sink - mf);
    }
    const float inv = scale_o / denom;
    const float* orow = o + row * kLdO + half * (kD / 2);
    float* dst = out + qi * q_stride + head * kD + half * (kD / 2);
    for (int c = 0; c < kD / 2; ++c) dst[c] = orow[c] * inv;
  }
}

int64_t g_calls = 0;

template <int kD>
void launch_flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args, Tensor& out) {
  static const bool configured = [] {
    SY_CUDA_CHECK(cudaFuncSetAttribute(flash_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(sizeof(Smem<kD>))));
    return true;
  }();
  (void)configured;
  const int64_t t = q.size(0);
  const int heads = static_cast<int>(q.size(1)), kv_heads = static_cast<int>(k.size(1));
  const dim3 grid(static_cast<unsigned>((t + kBlockM - 1) / kBlockM), static_cast<unsigned>(heads));
  flash_kernel<kD><<<grid, kWarps * 32, sizeof(Smem<kD>), stream()>>>(
      static_cast<const __nv_bfloat16*>(q.raw()), static_cast<const __nv_bfloat16*>(k.raw()),
      static_cast<const __nv_bfloat16*>(v.raw()), args.sinks.defined() ? args.sinks.f32() : nullptr, out.f32(), t,
      heads, kv_heads, args.scale, args.window);
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace

int64_t flash_attention_calls() { return g_calls; }

void flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args, Tensor& out) {
  const char* op = "cuda flash_attention";
  for (const Tensor* x : {&q, &k, &v}) {
    detail::require_device(op, "operand", *x);
    detail::require_dtype(op, "operand", *x, DType::kBF16, DType::kBF16);
  }
  detail::require_device(op, "out", out);
  detail::require_dtype(op, "out", out, DType::kF32);
  const int64_t d = q.dim() == 3 ? q.size(2) : 0;
  SY_REQUIRE(q.dim() == 3 && k.dim() == 3 && v.shape() == k.shape() && out.shape() == q.shape() &&
                 (d == 64 || d == 128) && k.size(2) == d && k.size(0) == q.size(0) && k.size(1) > 0 &&
                 q.size(1) % k.size(1) == 0,
             InvalidArgument, op, "q ", q.describe(), " k ", k.describe(), " v ", v.describe(), " out ",
             out.describe(), " (head dim 64 or 128, one sequence, heads a multiple of kv heads)");
  SY_REQUIRE(args.window >= 0, InvalidArgument, op, "negative window ", args.window);
  if (args.sinks.defined()) {
    detail::require_device(op, "sinks", args.sinks);
    detail::require_dtype(op, "sinks", args.sinks, DType::kF32);
    SY_REQUIRE(args.sinks.numel() == q.size(1), InvalidArgument, op, "sinks ", args.sinks.describe(), " for ",
               q.size(1), " heads");
  }
  if (q.size(0) == 0) return;
  ++g_calls;
  if (d == 64) {
    launch_flash<64>(q, k, v, args, out);
  } else {
    launch_flash<128>(q, k, v, args, out);
  }
}

}  // namespace sy::cuda
