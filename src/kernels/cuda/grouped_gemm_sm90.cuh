// What the two Hopper grouped-GEMM kernels share (grouped_gemm_sm90.cu: all threads load and multiply;
// grouped_gemm_sm90_ws.cu: a producer warpgroup loads, two consumer warpgroups multiply, persistent blocks): the
// tile shapes, the problem description, the row-tile table entry and the epilogue that writes a tile's products
// from the accumulator fragments. Not a public header.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "wgmma.cuh"

namespace sy::cuda::sm90_grouped {

constexpr int kTileM = 128;  // rows per block tile: two warpgroups of 64
constexpr int kTileK = 64;   // k per stage: one 128-byte swizzle span of bf16 per row
constexpr int kThreads = 256;
constexpr int kABytes = kTileM * kTileK * 2;  // 16 KB: an A stage
static_assert(kThreads / 8 * 4 == kTileM, "each thread stages 4 rows of 16 bytes of A per stage");

// A block tile of kTileN product columns (SwiGLU: kTileN / 2 gate + kTileN / 2 up rows of B), 128 or 256: the
// wider tile reads A half as often per product (m64n256k16, 128 accumulators per thread) and takes a ring of
// 4 stages instead of 5 (loads run kStages - 2 stages ahead).
template <int kTileN>
struct TileShape {
  static constexpr int kBBytes = kTileN * kTileK * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;  // a multiple of 1024: every stage starts an atom
  static constexpr int kStages = kTileN == 128 ? 5 : 4;
  static constexpr size_t kSmemBytes = size_t{kStages} * kStageBytes + 1024;  // + slack to align to 1024
  static constexpr int kBRows = kTileN / 32;  // B rows each thread stages per stage
  static constexpr int kAccumulators = kTileN / 2;
};
constexpr size_t kMaxSmemBytes = TileShape<256>::kSmemBytes;

struct Problem {
  const __nv_bfloat16* x;   // (x rows, k) bf16
  const int64_t* gather;    // (rows,) or null: grouped row r reads x row gather[r] / top_k (else x row r)
  int top_k;
  const int64_t* offsets;   // (experts + 1,): expert e's grouped rows are [offsets[e], offsets[e + 1])
  const uint64_t* w0;       // (experts,) addresses of (n, k) bf16 matrices: the weight, or SwiGLU's gate
  const uint64_t* w1;       // (experts,) SwiGLU's up matrices, or null
  __nv_bfloat16* y;         // (rows, n) bf16
  const float* bias0;       // (experts, n) f32 or null: the weight's bias, or SwiGLU's gate bias
  const float* bias1;       // (experts, n) f32 or null: SwiGLU's up bias
  float alpha, limit;       // SwiGLU: limit > 0 selects gpt-oss's clamped form with this alpha
  int64_t n, k;
  int experts;
  const uint8_t* maps0;     // (experts,) TMA descriptors of the w0 matrices (128 bytes each), or null
  const uint8_t* maps1;     // the same of the w1 matrices
  int n_tiles;              // column tiles of y: n / 128 (SwiGLU: n / 64), rounded up
  const struct RowTile* tiles;  // (row tiles,) from row_tile_table_kernel
  int flags;                    // kSkipIdleHalves (the warp-specialised kernel's options)
};

// Problem::flags: set_grouped_gemm_sm90_skip_idle_halves, no products for a tile's 64-row halves past its rows.
constexpr int kSkipIdleHalves = 1;

// Row tile i of the grouped rows: `rows` (1..128) rows of `expert` from grouped row row0; expert -1 past the last.
// A paired table (for block pairs) also has tiles of 0 rows: each expert's tile count padded to even.
struct RowTile {
  int64_t row0;
  int32_t expert, rows;
};

// The four lanes of a quad (lanes 4i..4i+3) each hold one 4-byte word (two bf16 columns) of four consecutive
// 8-column groups: w[u] is lane q's columns 2q, 2q + 1 of group u. Afterwards lane q holds all of group q in
// column order (w[p] = lane p's word of group q), 16 contiguous bytes: three exchanges across the quad.
__device__ __forceinline__ void quad_transpose(uint32_t (&w)[4], int q) {
  uint32_t o[4] = {w[0], w[1], w[2], w[3]};  // o[q] = w[q] already
#pragma unroll
  for (int s = 1; s < 4; ++s) {
    const int partner = q ^ s;
    uint32_t send = w[0];
#pragma unroll
    for (int u = 1; u < 4; ++u) send = u == partner ? w[u] : send;  // the word of the partner's group
    const uint32_t got = __shfl_xor_sync(0xffffffffu, send, s);       // its word of this lane's group
#pragma unroll
    for (int u = 0; u < 4; ++u) o[u] = u == partner ? got : o[u];
  }
#pragma unroll
  for (int u = 0; u < 4; ++u) w[u] = o[u];
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Writes one half of a block tile's products to y straight from the accumulator fragments in acc: `half` 0 or
// 1 is rows 0-63 or 64-127 of the tile (the warpgroup that multiplied them, or one of a ping-pong warpgroup's
// two accumulator sets); thread t = threadIdx.x % 128 holds rows r and r + 8 of the half, columns 2 (t % 4) and
// the next of each 8-column group. SwiGLU: accumulator columns c and c + kTileN / 2 are gate and up of output
// column c, and the tile writes kTileN / 2 columns of silu(gate) * up (gpt-oss's clamped form where
// p.limit > 0); plain: kTileN columns, plus the bias. Four groups at a time, the quad's words are transposed
// (quad_transpose) so that each lane stores one whole group with one 16-byte store: a warp's store covers 64
// contiguous bytes of each of its 8 rows, whole 32-byte sectors (4-byte stores of each lane's own two columns
// wrote each sector in two halves: 16 bytes per sector on average in Nsight Compute, H100, 2026-12-06).
// n % 8 == 0 and y 16-byte aligned (check_operands), so a group lies wholly inside or past n.
template <bool kSwiGLU, int kTileN>
__device__ __forceinline__ void store_tile(const Problem& p, const float (&acc)[kTileN / 2], int half, int expert,
                                           int64_t row0, int rows, int n_tile) {
  const int t = threadIdx.x % 128, lane = t % 32, q = lane % 4;
  const int r_top = half * 64 + (t / 32) * 16 + lane / 4;
  const bool top_in = r_top < rows, bottom_in = r_top + 8 < rows;
  __nv_bfloat16* y_top = p.y + (row0 + r_top) * p.n;
  __nv_bfloat16* y_bottom = y_top + 8 * p.n;
  constexpr int kOutTiles = kSwiGLU ? kTileN / 16 : kTileN / 8;  // 8-column groups written
  static_assert(kOutTiles % 4 == 0, "groups go four at a time through the quad transpose");
  const int64_t tile_col0 = int64_t{n_tile} * (kSwiGLU ? kTileN / 2 : kTileN);
  const float* bias0 = p.bias0 ? p.bias0 + int64_t{expert} * p.n : nullptr;
  const float* bias1 = p.bias1 ? p.bias1 + int64_t{expert} * p.n : nullptr;
#pragma unroll
  for (int j0 = 0; j0 < kOutTiles; j0 += 4) {
    uint32_t top[4], bottom[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int j = j0 + u;
      const int64_t col = tile_col0 + 8 * j + 2 * q;
      const bool col_in = col < p.n;  // every lane computes (the transpose needs all four), only these read biases
      float v[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t c = col + (e & 1);
        if constexpr (kSwiGLU) {
          float g = acc[4 * j + e] + (bias0 && col_in ? bias0[c] : 0.f);
          float up = acc[4 * (j + kTileN / 16) + e] + (bias1 && col_in ? bias1[c] : 0.f);
          // __fdividef (2 ulp, far below bf16's rounding): the IEEE division's instructions, in an epilogue
          // the tensor cores wait out, cost a 16K-token layer 6% (H100, 2026-12-06: 2.73 against 2.58 ms).
          if (p.limit > 0.f) {  // gpt-oss: clamp, then (up + 1) * gate * sigmoid(alpha * gate)
            g = fminf(g, p.limit);
            up = fminf(fmaxf(up, -p.limit), p.limit);
            v[e] = (up + 1.f) * __fdividef(g, 1.f + __expf(-p.alpha * g));
          } else {
            v[e] = __fdividef(g, 1.f + __expf(-g)) * up;
          }
        } else {
          v[e] = acc[4 * j + e] + (bias0 && col_in ? bias0[c] : 0.f);
        }
      }
      top[u] = pack_bf16x2(v[0], v[1]);
      bottom[u] = pack_bf16x2(v[2], v[3]);
    }
    quad_transpose(top, q);
    quad_transpose(bottom, q);
    const int64_t group_col = tile_col0 + 8 * (j0 + q);  // this lane's group after the transpose
    if (group_col < p.n) {
      if (top_in) *reinterpret_cast<uint4*>(y_top + group_col) = make_uint4(top[0], top[1], top[2], top[3]);
      if (bottom_in) {
        *reinterpret_cast<uint4*>(y_bottom + group_col) = make_uint4(bottom[0], bottom[1], bottom[2], bottom[3]);
      }
    }
  }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One stage's products of a warpgroup as one wgmma group: acc (64 x kTileN) += A (its 64 rows at a_stage) x
// B^T (kTileN rows at b_stage) over kTileK, both in the 128-byte swizzled K-major layout; then waits until
// only this group may still run (the previous stage's products have retired, so its stage may be refilled).
template <int kTileN>
__device__ __forceinline__ void multiply_stage(float (&acc)[kTileN / 2], uint32_t a_stage, uint32_t b_stage) {
  sm90::fence_accumulators(acc);
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kTileK / 16; ++kk) {
    sm90::wgmma_ss<kTileN>(acc, sm90::smem_descriptor(a_stage + kk * 32), sm90::smem_descriptor(b_stage + kk * 32));
  }
  sm90::wgmma_commit();
  sm90::fence_accumulators(acc);
  sm90::wgmma_wait<1>();
}
#endif

// The warp-specialised persistent kernel (grouped_gemm_sm90_ws.cu) over the row tiles of p.tiles: `tiles`
// block tiles (row tiles x p.n_tiles) in all, on at most `blocks` resident blocks, on the current stream.
// kTmaB: the weight tiles come by TMA from p.maps0 / p.maps1 (one thread issues them) instead of by the
// producer warpgroup's cp.async.
// kPingPong (kTileN 128 only): the consumer warpgroups take alternate 128 x 128 tiles.
// kPair (with kTmaB, without kPingPong): clusters of two blocks share each weight tile by TMA multicast; p.tiles
// must pair each expert's row tiles (row_tile_table_kernel's `pair`), and `blocks` is ignored (the launcher
// takes as many pairs as fit).
template <bool kSwiGLU, int kTileN, bool kTmaB, bool kPingPong, bool kPair>
void launch_warp_specialized(const Problem& p, int64_t tiles, int blocks);
// Grants its kernels their dynamic shared memory on the current device; false where they cannot have it.
bool allow_warp_specialized_smem();

}  // namespace sy::cuda::sm90_grouped
