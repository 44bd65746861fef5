// Causal prefill attention on the tensor cores, FlashAttention-2 style: one block of 4 warps per 64 queries
// and head (the longest rows launched first), looping over 64-key tiles of K and V that cp.async stages in
// shared memory (the next K tile loads during P V, the next V tile during the next Q K^T). Each warp owns 16
// query rows: S = Q K^T and O += P V are bf16 mma.sync.m16n8k16 products with f32 accumulators held in
// registers (ldmatrix feeds the operands; V through its transposing form), the online softmax runs in f32 on
// the S fragments in the log2 domain, and S's accumulator fragments become P's operand fragments without
// leaving registers. Packed variable-length sequences in one launch (a table gives each block its sequence's
// first row, length and query tile, the longest tiles first), head dims 64 or 128 (or 192 for q.k and 128 for
// v: MLA's prefill in the expanded form), GQA, sliding window (key tiles wholly outside every row's window are
// skipped) and per-head sinks (joined to the softmax at the end).
// Hopper: head dims 128/128 can run the wgmma kernel instead (flash_attention_sm90.cu, AttentionArgs::sm90).
// With AttentionArgs::cudnn, calls cuDNN can take go to its fused attention instead (cudnn_attention.cu).
// Not here: TMA and warp specialisation (FlashAttention-3).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <vector>

#include "async_copy.cuh"
#include "cudnn_attention.cuh"
#include "flash_softmax.cuh"
#include "flash_tiles.cuh"
#include "op_common.cuh"

namespace sy::cuda {

namespace {

constexpr int kBlockM = 64;   // queries per block (16 per warp)
constexpr int kBlockN = 64;   // keys per tile
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

// Shared memory of a block for query/key head dim kDk and value head dim kDv: Q and K tiles of 64 rows of kDk,
// a V tile of 64 rows of kDv; rows padded by 16 bytes so that the eight row addresses of an ldmatrix fall in
// distinct bank groups.
template <int kDk, int kDv>
struct Tiles {
  static constexpr int kLdK = kDk + 8;  // bf16 elements per Q or K row
  static constexpr int kLdV = kDv + 8;  // per V row
  static constexpr size_t kBytes = size_t{64} * (2 * kLdK + kLdV) * sizeof(__nv_bfloat16);
};

using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::smem_address;

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i; thread t receives (row t/4,
// columns 2(t%4), 2(t%4)+1) of each, or with .trans (rows 2(t%4), 2(t%4)+1, column t/4).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}
// d += a (16x16, row-major fragment) * b (16x8, column fragment), bf16 in, f32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Rows [row0, row0 + 64) of one head (row stride `stride` elements) into a tile, asynchronously; rows at or
// past t are zeros.
// (kD elements per row, kLd per tile row.)
template <int kD, int kLd>
__device__ __forceinline__ void load_tile(__nv_bfloat16* tile, const __nv_bfloat16* src, int64_t row0, int64_t t,
                                          int64_t stride) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < 64 * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    const bool in = row0 + r < t;
    cp_async16(tile + r * kLd + c, src + (in ? (row0 + r) * stride : 0) + c, in ? 16 : 0);
  }
}

using detail::FlashTile;

// Query i of a sequence attends its keys [max(0, i - window + 1), i] (window 0: [0, i]); sinks: (heads,) f32
// or null. scale_log2 = softmax scale * log2(e). Fragment coordinates: g = lane / 4 and c = lane % 4; an accumulator
// tile (16 x 8) holds [g][2c, 2c+1] in elements 0, 1 and [g + 8][2c, 2c+1] in elements 2, 3.
template <int kDk, int kDv>
__global__ void __launch_bounds__(kThreads) flash_kernel(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                                         const __nv_bfloat16* v, const float* sinks, float* out,
                                                         const FlashTile* tiles, int heads, int kv_heads,
                                                         float scale_log2, int window) {
  constexpr int kLdK = Tiles<kDk, kDv>::kLdK, kLdV = Tiles<kDk, kDv>::kLdV;
  extern __shared__ __align__(16) unsigned char raw[];
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(raw);
  __nv_bfloat16* sk = sq + kBlockM * kLdK;
  __nv_bfloat16* sv = sk + kBlockN * kLdK;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int head = blockIdx.y, kv_head = head / (heads / kv_heads);
  const FlashTile tile = tiles[blockIdx.x];
  const int64_t t = tile.len, q0 = tile.q0;
  const int64_t q_stride = static_cast<int64_t>(heads) * kDk, k_stride = static_cast<int64_t>(kv_heads) * kDk;
  const int64_t v_stride = static_cast<int64_t>(kv_heads) * kDv, o_stride = static_cast<int64_t>(heads) * kDv;
  q += tile.row0 * q_stride;  // the sequence's rows from here on
  k += tile.row0 * k_stride;
  v += tile.row0 * v_stride;
  out += tile.row0 * o_stride;
  const __nv_bfloat16* kh = k + kv_head * kDk;
  const __nv_bfloat16* vh = v + kv_head * kDv;
  const int64_t last_key = q0 + kBlockM - 1 < t - 1 ? q0 + kBlockM - 1 : t - 1;
  // The block's first query sees keys from q0 - window + 1 on: earlier tiles are masked for every row.
  const int64_t first_key = window > 0 && q0 - window + 1 > 0 ? q0 - window + 1 : 0;
  const int64_t tile0 = first_key / kBlockN * kBlockN;
  load_tile<kDk, kLdK>(sq, q + head * kDk, q0, t, q_stride);
  load_tile<kDk, kLdK>(sk, kh, tile0, t, k_stride);
  cp_async_commit();  // group: Q and the first K tile
  load_tile<kDv, kLdV>(sv, vh, tile0, t, v_stride);
  cp_async_commit();  // group: the first V tile

  const int64_t row_q[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};  // this thread's two query rows
  int64_t row_lo[2];
  for (int r = 0; r < 2; ++r) row_lo[r] = window > 0 ? row_q[r] - window + 1 : 0;
  uint32_t qf[kDk / 16][4];  // Q fragments of this warp's rows, loaded once
  float o[kDv / 8][4];        // O (16 x kDv): dims 8j..8j+7 in o[j]
  for (int j = 0; j < kDv / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // running max (log2 units) and sum per row

  for (int64_t k0 = tile0; k0 <= last_key; k0 += kBlockN) {
    cp_async_wait<1>();  // Q and this K tile have landed (this V tile may still be in flight)
    __syncthreads();
    if (k0 == tile0) {
      for (int ks = 0; ks < kDk / 16; ++ks) {
        ldmatrix_x4(qf[ks], sq + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLdK + ks * 16 + (lane >> 4) * 8);
      }
    }
    // S (16 x 64) = Q K^T: keys 8j..8j+7 of the tile in s[j].
    float s[kBlockN / 8][4];
    for (int j = 0; j < kBlockN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kDk / 16; ++ks) {
#pragma unroll
      for (int np = 0; np < kBlockN / 16; ++np) {
        uint32_t b[4];  // keys 16np.. (b[0], b[1]) and 16np+8.. (b[2], b[3]), dims 16ks..16ks+15
        ldmatrix_x4(b, sk + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * kLdK + ks * 16 + ((lane >> 3) & 1) * 8);
        mma_bf16(s[2 * np], qf[ks], b[0], b[1]);
        mma_bf16(s[2 * np + 1], qf[ks], b[2], b[3]);
      }
    }
    // Online softmax per row (a row's 64 scores are spread over the 4 threads of a quad).
    detail::online_softmax<kBlockN, kDv>(&s[0][0], &o[0][0], row_q, row_lo, k0, c, scale_log2, m, l);
    cp_async_wait<0>();  // this V tile has landed
    __syncthreads();     // and every warp is done with this K tile
    if (k0 + kBlockN <= last_key) load_tile<kDk, kLdK>(sk, kh, k0 + kBlockN, t, k_stride);
    cp_async_commit();  // group: the next K tile (empty after the last)
    // O += P V: P's fragments for keys 16ks..16ks+15 are S tiles 2ks and 2ks+1, rounded to bf16.
#pragma unroll
    for (int ks = 0; ks < kBlockN / 16; ++ks) {
      const uint32_t a[4] = {pack_bf16(s[2 * ks][0], s[2 * ks][1]), pack_bf16(s[2 * ks][2], s[2 * ks][3]),
                             pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                             pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3])};
#pragma unroll
      for (int dp = 0; dp < kDv / 16; ++dp) {
        uint32_t b[4];  // dims 16dp.. (b[0], b[1]) and 16dp+8.. (b[2], b[3]), keys 16ks..16ks+15
        ldmatrix_x4_trans(b, sv + (ks * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * kLdV + dp * 16 + (lane >> 4) * 8);
        mma_bf16(o[2 * dp], a, b[0], b[1]);
        mma_bf16(o[2 * dp + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with this V tile
    if (k0 + kBlockN <= last_key) load_tile<kDv, kLdV>(sv, vh, k0 + kBlockN, t, v_stride);
    cp_async_commit();  // group: the next V tile
  }
  cp_async_wait<0>();
  detail::store_rows<kDv>(&o[0][0], m, l, row_q, t, sinks ? sinks + head : nullptr, out + head * kDv, o_stride, c);
}

std::atomic<int64_t> g_calls{0}, g_sm90_calls{0}, g_cudnn_calls{0};  // calls so far (tests check which kernel ran)

template <int kDk, int kDv>
void launch_flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args, const Tensor& tiles,
                  int64_t num_tiles, Tensor& out) {
  static std::map<int, bool> configured;  // per device: the attribute belongs to the current device
  detail::once_per_device(configured, [] {
    SY_CUDA_CHECK(cudaFuncSetAttribute(flash_kernel<kDk, kDv>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(Tiles<kDk, kDv>::kBytes)));
    return true;
  });
  const int heads = static_cast<int>(q.size(1)), kv_heads = static_cast<int>(k.size(1));
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(heads));
  flash_kernel<kDk, kDv><<<grid, kThreads, Tiles<kDk, kDv>::kBytes, stream()>>>(
      static_cast<const __nv_bfloat16*>(q.raw()), static_cast<const __nv_bfloat16*>(k.raw()),
      static_cast<const __nv_bfloat16*>(v.raw()), args.sinks.defined() ? args.sinks.f32() : nullptr, out.f32(),
      reinterpret_cast<const FlashTile*>(tiles.raw()), heads, kv_heads, args.scale * 1.4426950408889634f,
      args.window);
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace

int64_t flash_attention_calls() { return g_calls; }
int64_t flash_attention_sm90_calls() { return g_sm90_calls; }
bool flash_attention_sm90_supported() { return detail::flash_sm90_supported(); }
int64_t flash_attention_cudnn_calls() { return g_cudnn_calls; }
bool flash_attention_cudnn_available(std::string* why) { return detail::cudnn_attention_available(why); }
bool flash_attention_cudnn_compiled() { return detail::cudnn_attention_compiled(); }

Tensor detail::flash_tile_table(const std::vector<std::pair<int64_t, int64_t>>& sequences, int64_t block_m,
                                int64_t& count) {
  std::vector<FlashTile> table;
  for (const auto& [r0, r1] : sequences) {
    for (int64_t q0 = 0; q0 < r1 - r0; q0 += block_m) table.push_back({r0, r1 - r0, q0});
  }
  count = static_cast<int64_t>(table.size());
  if (table.empty()) return Tensor();
  std::stable_sort(table.begin(), table.end(), [](const FlashTile& a, const FlashTile& b) { return a.q0 > b.q0; });
  // Asynchronous upload (no host synchronisation in the pass): the copy is staged before upload returns.
  const size_t table_bytes = table.size() * sizeof(FlashTile);
  Tensor tiles = Tensor::empty({static_cast<int64_t>(table_bytes)}, DType::kU8, Device::kCuda);
  upload(tiles.raw(), table.data(), table_bytes);
  return tiles;
}

void detail::cast_sequence_rows(const Tensor& src, Tensor& dst,
                                const std::vector<std::pair<int64_t, int64_t>>& sequences) {
  for (size_t i = 0; i < sequences.size();) {
    size_t j = i;
    while (j + 1 < sequences.size() && sequences[j + 1].first == sequences[j].second) ++j;
    if (sequences[j].second > sequences[i].first) {
      Tensor from = src.slice(0, sequences[i].first, sequences[j].second);
      Tensor to = dst.slice(0, sequences[i].first, sequences[j].second);
      cast(from, to);
    }
    i = j + 1;
  }
}

void flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args, Tensor& out) {
  flash_attention(q, k, v, {{0, q.dim() == 3 ? q.size(0) : 0}}, args, out);
}

void flash_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                     const std::vector<std::pair<int64_t, int64_t>>& sequences, const AttentionArgs& args,
                     Tensor& out) {
  const char* op = "cuda flash_attention";
  for (const Tensor* x : {&q, &k, &v}) {
    detail::require_device(op, "operand", *x);
    detail::require_dtype(op, "operand", *x, DType::kBF16, DType::kBF16);
  }
  detail::require_device(op, "out", out);
  detail::require_dtype(op, "out", out, DType::kF32, DType::kBF16);
  const int64_t dk = q.dim() == 3 ? q.size(2) : 0, dv = v.dim() == 3 ? v.size(2) : 0;
  const bool dims_ok = (dk == 64 && dv == 64) || (dk == 128 && dv == 128) || (dk == 192 && dv == 128);
  SY_REQUIRE(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && dims_ok && k.size(2) == dk && v.size(0) == k.size(0) &&
                 v.size(1) == k.size(1) && out.dim() == 3 && out.size(0) == q.size(0) && out.size(1) == q.size(1) &&
                 out.size(2) == dv && k.size(0) == q.size(0) && k.size(1) > 0 && q.size(1) % k.size(1) == 0,
             InvalidArgument, op, "q ", q.describe(), " k ", k.describe(), " v ", v.describe(), " out ",
             out.describe(), " (head dims 64/64, 128/128 or 192/128 (MLA) for q.k / v, heads a multiple of kv heads,",
             " as many key rows as queries)");
  SY_REQUIRE(args.window >= 0, InvalidArgument, op, "negative window ", args.window);
  if (args.sinks.defined()) {
    detail::require_device(op, "sinks", args.sinks);
    detail::require_dtype(op, "sinks", args.sinks, DType::kF32);
    SY_REQUIRE(args.sinks.numel() == q.size(1), InvalidArgument, op, "sinks ", args.sinks.describe(), " for ",
               q.size(1), " heads");
  }
  int64_t prev_end = 0;
  for (const auto& [r0, r1] : sequences) {
    SY_REQUIRE(r0 >= prev_end && r1 >= r0 && r1 <= q.size(0), InvalidArgument, op, "sequence rows [", r0, ", ", r1,
               ") out of order, overlapping or past the ", q.size(0), " rows");
    prev_end = r1;
  }
  if (args.cudnn && detail::cudnn_flash_attention(q, k, v, sequences, args, out)) {
    ++g_calls;
    ++g_cudnn_calls;
    return;
  }
  // Our kernels write f32: a bf16 `out` gets their rows through a scratch.
  const bool widen = out.dtype() == DType::kBF16;
  Tensor out32 = widen ? Tensor::empty(out.shape(), DType::kF32, Device::kCuda) : out;
  int64_t n_tiles = 0;
  if (args.sm90 && dk == 128 && dv == 128 && detail::flash_sm90_supported()) {
    Tensor tiles = detail::flash_tile_table(sequences, detail::kFlashSm90BlockM, n_tiles);
    if (n_tiles == 0) return;
    ++g_calls;
    ++g_sm90_calls;
    detail::launch_flash_sm90(q, k, v, args, tiles, n_tiles, out32);
  } else {
    Tensor tiles = detail::flash_tile_table(sequences, kBlockM, n_tiles);
    if (n_tiles == 0) return;
    ++g_calls;
    if (dk == 64) {
      launch_flash<64, 64>(q, k, v, args, tiles, n_tiles, out32);
    } else if (dk == 128) {
      launch_flash<128, 128>(q, k, v, args, tiles, n_tiles, out32);
    } else {
      launch_flash<192, 128>(q, k, v, args, tiles, n_tiles, out32);
    }
  }
  if (widen) detail::cast_sequence_rows(out32, out, sequences);
}

}  // namespace sy::cuda
