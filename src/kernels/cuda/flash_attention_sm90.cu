// Causal prefill attention on Hopper's warpgroup tensor-core instructions (wgmma, sm_90a), head dims 128/128:
// the FlashAttention-2 loop of flash_attention.cu with both products on wgmma. One block of two warpgroups
// per 128 queries and head (a table of tiles over packed sequences, the longest first, as there); each
// warpgroup owns 64 query rows. Per 128-key tile: S = Q K^T is eight m64n128k16 products with Q and K read
// from shared memory through K-major descriptors; the online softmax runs in f32 on S's accumulator fragments
// (log2 domain, masks for causality, the window and the sequence end); P, rounded to bf16, stays in registers
// and is the A operand of O += P V (eight m64n128k16 products with A from registers and V read through an
// MN-major descriptor: V's rows are keys, so no transposed copy is made). Q, two K stages and two V stages
// (32 KB each) sit in shared memory in the 128-byte swizzled layout of wgmma.cuh; cp.async stages the next K
// tile while Q K^T runs (the barrier that publishes the V tile overlaps it too) and the next V tile during
// the next Q K^T.
// Sinks join the softmax at the end. CPU reference: ops::attention; the GPU tests compare both kernels with it.
// tools/flash_wgmma_emulation.py checks the address, fragment and pipeline arithmetic on the CPU.
// Not here: TMA, warp specialisation and ping-pong between the warpgroups (FlashAttention-3), head dims other
// than 128 (the FA2 kernel covers them).
#include <cmath>
#include <map>

#include "async_copy.cuh"
#include "flash_softmax.cuh"
#include "flash_tiles.cuh"
#include "op_common.cuh"
#include "wgmma.cuh"

namespace sy::cuda::detail {

namespace {

constexpr int kBlockM = 128;  // queries per block: two warpgroups of 64
constexpr int kBlockN = 128;  // keys per tile
constexpr int kD = 128;       // head dim of q.k and v
constexpr int kThreads = 256;
constexpr uint32_t kTileBytes = kBlockN * kD * 2;  // 32 KB: a Q, K or V tile, two 64-column blocks of 16 KB
constexpr size_t kSmemBytes = 5 * size_t{kTileBytes} + 1024;  // Q, K x 2, V x 2, + slack to align to 1024
static_assert(kBlockM == kFlashSm90BlockM, "the tile table's query tiles");

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
constexpr uint32_t kHalfBytes = kTileBytes / 2;  // one 64-column block of a tile

// Rows [row0, row0 + 128) of one head (row stride `stride` elements) into a swizzled tile, asynchronously;
// rows at or past t are zeros. Thread t stages 16-byte chunk t % 16 of rows t / 16 + 16 i, i < 8.
__device__ __forceinline__ void load_tile(uint32_t tile, const __nv_bfloat16* src, int64_t row0, int64_t t,
                                          int64_t stride) {
  const int chunk = threadIdx.x & 15, block = chunk >> 3, c = chunk & 7;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = (threadIdx.x >> 4) + 16 * i;
    const bool in = row0 + r < t;
    cp_async16(tile + block * kHalfBytes + sm90::swizzled(r, c), src + (in ? (row0 + r) * stride : 0) + chunk * 8,
               in ? 16 : 0);
  }
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}
#endif

// Query i of a sequence attends its keys [max(0, i - window + 1), i] (window 0: [0, i]); sinks: (heads,) f32 or
// null; scale_log2 = softmax scale * log2(e). Fragment coordinates (wgmma.cuh): in warp w of warpgroup wg, g =
// lane / 4 and c = lane % 4; s[4j + 2r + e] and o[4j + 2r + e] are row 64 wg + 16 w + g + 8r, column
// 8j + 2c + e (a key of the tile, a dimension of the head).
__global__ void __launch_bounds__(kThreads, 1)
    flash_sm90_kernel(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const float* sinks,
                      float* out, const FlashTile* tiles, int heads, int kv_heads, float scale_log2, int window) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (smem_address(smem_raw) + 1023u) & ~1023u;
  const uint32_t sq = base, sk = base + kTileBytes, sv = base + 3 * kTileBytes;  // K, V: two stages each
  const int warpgroup = threadIdx.x / 128, warp = (threadIdx.x % 128) / 32, lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  const int head = blockIdx.y, kv_head = head / (heads / kv_heads);
  const FlashTile tile = tiles[blockIdx.x];
  const int64_t t = tile.len, q0 = tile.q0;
  const int64_t q_stride = int64_t{heads} * kD, kv_stride = int64_t{kv_heads} * kD;
  q += tile.row0 * q_stride + head * kD;  // the sequence's rows of this head from here on
  k += tile.row0 * kv_stride + kv_head * kD;
  v += tile.row0 * kv_stride + kv_head * kD;
  out += tile.row0 * q_stride;
  const int64_t last_key = q0 + kBlockM - 1 < t - 1 ? q0 + kBlockM - 1 : t - 1;
  // The block's first query sees keys from q0 - window + 1 on: earlier tiles are masked for every row.
  const int64_t first_key = window > 0 && q0 - window + 1 > 0 ? q0 - window + 1 : 0;
  const int64_t tile0 = first_key / kBlockN * kBlockN;
  load_tile(sq, q, q0, t, q_stride);
  load_tile(sk, k, tile0, t, kv_stride);
  cp_async_commit();  // group: Q and the first K tile
  load_tile(sv, v, tile0, t, kv_stride);
  cp_async_commit();  // group: the first V tile

  const int64_t row_q[2] = {q0 + warpgroup * 64 + warp * 16 + g, q0 + warpgroup * 64 + warp * 16 + g + 8};
  int64_t row_lo[2];
  for (int r = 0; r < 2; ++r) row_lo[r] = window > 0 ? row_q[r] - window + 1 : 0;
  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // running max (log2 units) and sum per row
  const uint32_t q_rows = sq + warpgroup * 64 * 128;        // this warpgroup's 64 rows of each Q block

  int stage = 0;
  for (int64_t k0 = tile0; k0 <= last_key; k0 += kBlockN, stage ^= 1) {
    const bool more = k0 + kBlockN <= last_key;
    const uint32_t k_tile = sk + stage * kTileBytes, v_tile = sv + stage * kTileBytes;
    cp_async_wait<1>();  // Q and this K tile have landed (this V tile may still be in flight)
    sm90::fence_proxy_async();
    __syncthreads();
    // S (64 x 128 keys) = Q K^T over the 128 dims: 16 at a time, 64-dim blocks 16 KB apart.
    float s[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) s[i] = 0.f;
    sm90::fence_accumulators(s);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      const uint32_t at = (kk / 4) * kHalfBytes + (kk % 4) * 32;
      sm90::wgmma_m64n128k16(s, sm90::smem_descriptor(q_rows + at), sm90::smem_descriptor(k_tile + at));
    }
    sm90::wgmma_commit();
    sm90::fence_accumulators(s);
    // While Q K^T runs: the next K tile into the other stage (both warpgroups finished their Q K^T on it before
    // the barrier above), and the barrier that publishes this V tile.
    if (more) load_tile(sk + (stage ^ 1) * kTileBytes, k, k0 + kBlockN, t, kv_stride);
    cp_async_commit();  // group: the next K tile (empty after the last)
    cp_async_wait<1>();  // this V tile has landed
    sm90::fence_proxy_async();
    __syncthreads();
    sm90::wgmma_wait<0>();
    sm90::fence_accumulators(s);
    // Online softmax per row (a row's 128 scores are spread over the 4 threads of a quad).
    online_softmax<kBlockN, kD>(s, o, row_q, row_lo, k0, c, scale_log2, m, l);
    // O += P V: P's columns 16kk..16kk+15 (keys) are s[8kk..8kk+7] packed pairwise, the A fragment layout;
    // all of P is packed before the first product (registers written between the products of one batch make
    // the compiler insert a warpgroup arrive before each).
    uint32_t p[kBlockN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      p[kk][0] = pack_bf16(s[8 * kk], s[8 * kk + 1]);
      p[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
      p[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
      p[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
    sm90::fence_operands(p);
    sm90::fence_accumulators(o);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      sm90::wgmma_m64n128k16_rs_mn(o, p[kk], sm90::smem_descriptor_mn(v_tile + kk * 16 * 128, kHalfBytes));
    }
    sm90::wgmma_commit();
    sm90::fence_accumulators(o);
    sm90::wgmma_wait<0>();
    sm90::fence_accumulators(o);
    // Both warpgroups are done with the other V stage (the barriers of this iteration came after their last
    // P V).
    if (more) load_tile(sv + (stage ^ 1) * kTileBytes, v, k0 + kBlockN, t, kv_stride);
    cp_async_commit();  // group: the next V tile (empty after the last)
  }
  cp_async_wait<0>();
  store_rows<kD>(o, m, l, row_q, t, sinks ? sinks + head : nullptr, out + head * kD, q_stride, c);
#else
  __trap();  // built without sm_90a code: flash_sm90_supported() says false, so this never launches
#endif
}

}  // namespace

bool flash_sm90_supported() {
  static std::map<int, bool> cache;  // per device: the shared-memory attribute belongs to the current device
  return once_per_device(cache, [] {
    if (!sm90a_device(kSmemBytes)) return false;
    SY_CUDA_CHECK(cudaFuncSetAttribute(flash_sm90_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kSmemBytes)));
    return true;
  });
}

void launch_flash_sm90(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args,
                       const Tensor& tiles, int64_t num_tiles, Tensor& out) {
  const int heads = static_cast<int>(q.size(1)), kv_heads = static_cast<int>(k.size(1));
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(heads));
  flash_sm90_kernel<<<grid, kThreads, kSmemBytes, stream()>>>(
      static_cast<const __nv_bfloat16*>(q.raw()), static_cast<const __nv_bfloat16*>(k.raw()),
      static_cast<const __nv_bfloat16*>(v.raw()), args.sinks.defined() ? args.sinks.f32() : nullptr, out.f32(),
      reinterpret_cast<const FlashTile*>(tiles.raw()), heads, kv_heads, args.scale * 1.4426950408889634f,
      args.window);
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda::detail
