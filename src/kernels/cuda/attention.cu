// CUDA causal attention (GQA, sliding window, sinks) over contiguous or paged keys: one 4-warp block per
// (query, head, key split); each warp walks every 4th visible key of its split with an online softmax in f32,
// then the warps merge. Paged keys/values are f32 or bf16 (the device KV pool is bf16). Decode-sized batches
// split each query's keys over several blocks (flash-decoding) so a few queries still fill the GPU; a second
// kernel merges the splits' (max, sum, accumulator) partials. Whole fresh prompts go through the tensor-core
// kernel instead (flash_attention.cu). MLA's absorbed form runs here too (one shared 576-wide key row per token
// whose first 512 columns are the values: dv up to 512). Not here: packed documents (key_start), tensor cores
// for decode, an MLA kernel that shares each key row across heads in shared memory.
#include <algorithm>
#include <cmath>
#include <initializer_list>

#include "grouped_decode_attention.cuh"
#include "l2_prefetch.cuh"
#include "op_common.cuh"
#include "qkv_head.cuh"

namespace sy::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kMaxDv = 512;  // value dims per head: 4 per lane up to 128, 8 up to 256, else 16 (MLA's latent)

struct AttnParams {
  int64_t heads, kv_heads, dk, dv, kv_len;
  int64_t ks, khs, vs, vhs;  // element strides of k and v (token, head)
  float scale;
  int window;
  bool keys_ready;  // AttentionArgs::cached_keys_ready (paged only)
  detail::L2Range prefetch;  // AttentionArgs::l2_prefetch (paged only)
  int64_t min_chunk;  // AttentionArgs::min_split_keys (paged only)
};

// Head dims up to 32 * kPrefetchPerLane (keys and values; the kernel's 4-per-lane form) have each warp's
// first key row read before the programmatic-launch wait where the cached keys are ready
// (AttentionArgs::cached_keys_ready); its value row is read after the wait, alongside the key's dot product.
// The wider forms, or the value row too, spilled under the 64-register bound.
constexpr int kPrefetchPerLane = 4;

// The q|k|v epilogue folded into a decode pass's attention (paged_attention_qkv; detail::QkvSource): head dims
// up to kFusedMaxDim.
constexpr int kFusedMaxDim = 32 * kPrefetchPerLane;
using detail::QkvSource;

// A float as the pool of element type KV stores it (the key and value a later pass reads back).
__device__ __forceinline__ float as_stored(float v, const float*) { return v; }
__device__ __forceinline__ float as_stored(float v, const __nv_bfloat16*) {
  return __bfloat162float(__float2bfloat16(v));
}

// Paged KV (paged_attention): key j of query i lives at pool row tables[table_start[i] + j / bs] * bs + j % bs.
struct PagedRows {
  const int64_t* table_start = nullptr;
  const int32_t* tables = nullptr;
  int64_t block_size = 0;
};

// Splits of one query's keys: split s of S covers keys [lo + s*chunk, lo + (s+1)*chunk) with
// chunk = max(ceil((pos - lo + 1) / S), min_chunk), computed on the device so the launch shape does not depend
// on positions (decode steps are replayed from CUDA graphs while positions grow); splits past the last key
// see none.
// Eight blocks per multiprocessor (at most 64 registers): key_splits sizes a decode pass to eight blocks per
// multiprocessor, one wave only if all eight are resident (the reads before the wait took the bf16 form from
// 62 to 70 registers without the bound: seven per SM, two waves).
// kFromQkv (paged_attention_qkv; paged, 4 dims per lane, a decode pass): q is unused; the block forms its
// query head from src.qkv as qkv_epilogue does, the split holding the query's own position forms that
// token's key and value too (stored as the pool stores them) and uses them for that key, and the first query
// head of each key head's group writes them to the pools.
template <typename KV, bool kPaged, int kDvPerLane, bool kFromQkv = false>
__global__ void __launch_bounds__(kWarps * 32, 8) attention_kernel(const float* q, const KV* k, const KV* v,
                                                               const int64_t* positions, const float* sinks,
                                                               AttnParams p, PagedRows paged, float* out,
                                                               float* partial, int* bad, QkvSource src) {
  static_assert(!kFromQkv || (kPaged && kDvPerLane == kPrefetchPerLane), "the fused form is the paged 4-per-lane one");
  // A decode-chain kernel (see launch_chained). The query's position and its block table are the pass's
  // inputs (uploaded before it, written by no kernel of the chain): they, and the pool row of each warp's
  // first key, are read before the wait, so the first key load after it is one round trip, not three.
  detail::chain_release();
  detail::prefetch_l2(p.prefetch);
  __shared__ float warp_m[kWarps], warp_l[kWarps];
  __shared__ float warp_acc[kWarps][kDvPerLane * 32];
  const int64_t item = blockIdx.x;  // query * heads + head
  const int split = blockIdx.y, splits = gridDim.y;
  const int64_t i = item / p.heads, h = item % p.heads, kh = h / (p.heads / p.kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t pos = positions[i];
  const bool bad_pos = pos < 0 || (!kPaged && pos >= p.kv_len);
  const int64_t first = p.window > 0 ? max(int64_t{0}, pos - p.window + 1) : 0;
  const int64_t chunk = max((pos - first + splits) / splits, p.min_chunk);
  const int64_t lo = first + split * chunk, hi = min(pos, lo + chunk - 1);
  const int32_t* table = kPaged && !bad_pos ? paged.tables + paged.table_start[i] : nullptr;
  auto pool_row = [&](int64_t j) {
    return kPaged ? int64_t{table[j / paged.block_size]} * paged.block_size + j % paged.block_size : j;
  };
  const int64_t first_row = !bad_pos && lo + warp <= hi ? pool_row(lo + warp) : 0;
  // The fused form's query head, own key and value, and the epilogue's staged tables.
  constexpr int kFused = kFromQkv ? kFusedMaxDim : 1;
  __shared__ float q_s[kFused], k_s[kFused], v_s[kFused], q_norm_s[kFused], k_norm_s[kFused], cos_s[kFused],
      sin_s[kFused];
  if (kFromQkv) {
    detail::stage_qkv_tables(src.q_norm, src.k_norm, src.inv_freq, static_cast<float>(pos), src.head, q_norm_s,
                             k_norm_s, cos_s, sin_s);
  }
  const int64_t own_row = kFromQkv && !bad_pos ? src.rows[i] : 0;
  // In a decode pass every key before the query's own position was cached by an earlier pass: the first of
  // them this warp reads comes in before the wait too (the query's own row is this pass's, written by the
  // kernel before this one).
  constexpr bool kCanPrefetch = kPaged && kDvPerLane == kPrefetchPerLane;
  const bool prefetched = kCanPrefetch && !kFromQkv && p.keys_ready && !bad_pos && lo + warp <= hi &&
                          lo + warp < pos && p.dk <= 32 * kPrefetchPerLane;
  float k_pre[kPrefetchPerLane];
#pragma unroll
  for (int c = 0; c < kPrefetchPerLane; ++c) {
    if (!kCanPrefetch) break;
    const int64_t d = lane + 32 * c;
    k_pre[c] = prefetched && d < p.dk ? detail::load_f(k + first_row * p.ks + kh * p.khs, d) : 0.f;
  }
  detail::chain_wait();
  if (bad_pos) {
    if (threadIdx.x == 0 && bad) *bad = 1;
    float* dst = splits == 1 ? out + item * p.dv : partial + (item * splits + split) * (p.dv + 2) + 2;
    for (int64_t c = threadIdx.x; c < p.dv; c += blockDim.x) dst[c] = NAN;
    if (splits > 1 && threadIdx.x == 0) dst[-2] = dst[-1] = NAN;
    return;
  }
  // The fused form's own key: this split holds the query's position.
  const bool own_key = kFromQkv && lo <= pos && pos <= hi;
  if (kFromQkv) {
    const detail::QkvHeadParams& hp = src.head;
    const int64_t qk_cols = static_cast<int64_t>(hp.heads + hp.kv_heads) * hp.d;
    const float* row = src.qkv + i * (qk_cols + static_cast<int64_t>(hp.kv_heads) * hp.dv);
    __syncthreads();  // the staged tables
    if (warp == 0) {
      detail::transform_head(row, src.bias, h * hp.d, hp.d, src.q_norm ? q_norm_s : nullptr, true, cos_s, sin_s, hp,
                             q_s);
    } else if (warp == 1 && own_key) {
      detail::transform_head(row, src.bias, (hp.heads + kh) * hp.d, hp.d, src.k_norm ? k_norm_s : nullptr, true,
                             cos_s, sin_s, hp, k_s);
      for (int j = lane; j < hp.d; j += 32) k_s[j] = as_stored(k_s[j], k);
    } else if (warp == 2 && own_key) {
      detail::transform_head(row, src.bias, qk_cols + kh * hp.dv, hp.dv, nullptr, false, cos_s, sin_s, hp, v_s);
      for (int j = lane; j < hp.dv; j += 32) v_s[j] = as_stored(v_s[j], v);
    }
    __syncthreads();
    if (own_key && h % (p.heads / p.kv_heads) == 0) {  // one block per (query, key head) writes the pools
      KV* keys = static_cast<KV*>(src.keys) + own_row * p.ks + kh * p.khs;
      KV* values = static_cast<KV*>(src.values) + own_row * p.vs + kh * p.vhs;
      for (int j = threadIdx.x; j < hp.d; j += blockDim.x) detail::store_f(keys, j, k_s[j]);
      for (int j = threadIdx.x; j < hp.dv; j += blockDim.x) detail::store_f(values, j, v_s[j]);
    }
  }
  const float* qrow = kFromQkv ? q_s : q + item * p.dk;
  float m = -INFINITY, l = 0.f, acc[kDvPerLane];
#pragma unroll
  for (int c = 0; c < kDvPerLane; ++c) acc[c] = 0.f;
  for (int64_t j = lo + warp; j <= hi; j += kWarps) {
    const bool first_key = j == lo + warp, pre = kCanPrefetch && first_key && prefetched;
    const int64_t r = first_key ? first_row : pool_row(j);
    const KV* krow = k + r * p.ks + kh * p.khs;
    const bool own = kFromQkv && j == pos;  // the fused form's own key, from shared memory
    float s = 0.f;
    if (own) {
      for (int64_t d = lane; d < p.dk; d += 32) s += qrow[d] * k_s[d];
    } else if (pre) {  // the same products in the same order as the loop below
#pragma unroll
      for (int c = 0; c < kPrefetchPerLane; ++c) {
        if (lane + 32 * c < p.dk) s += qrow[lane + 32 * c] * k_pre[c];
      }
    } else {
      for (int64_t d = lane; d < p.dk; d += 32) s += qrow[d] * detail::load_f(krow, d);
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    s *= p.scale;
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float e = expf(s - m_new);
    l = l * corr + e;
    const KV* vrow = v + r * p.vs + kh * p.vhs;
#pragma unroll
    for (int c = 0; c < kDvPerLane; ++c) {
      const int64_t d = lane + 32 * c;
      acc[c] = acc[c] * corr + (d < p.dv ? e * (own ? v_s[d] : detail::load_f(vrow, d)) : 0.f);
    }
    m = m_new;
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
#pragma unroll
  for (int c = 0; c < kDvPerLane; ++c) warp_acc[warp][lane + 32 * c] = acc[c];
  __syncthreads();
  // One split: the sinks join the softmax here. Several: this split's partial (max, sum, unnormalised
  // accumulator) goes to `partial` and merge_splits_kernel adds the sinks.
  const bool final = splits == 1;
  float gm = final && sinks ? sinks[h] : -INFINITY;
  for (int w = 0; w < kWarps; ++w) gm = fmaxf(gm, warp_m[w]);
  float denom = final && sinks ? expf(sinks[h] - gm) : 0.f;
  float f[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    f[w] = warp_m[w] == -INFINITY ? 0.f : expf(warp_m[w] - gm);  // a warp that saw no key adds nothing
    denom += warp_l[w] * f[w];
  }
  float* dst = final ? out + item * p.dv : partial + (item * splits + split) * (p.dv + 2) + 2;
  for (int64_t d = threadIdx.x; d < p.dv; d += blockDim.x) {
    float o = 0.f;
    for (int w = 0; w < kWarps; ++w) o += warp_acc[w][d] * f[w];
    dst[d] = final ? o / denom : o;
  }
  if (!final && threadIdx.x == 0) {
    dst[-2] = gm;  // -inf when the split saw no key
    dst[-1] = denom;
  }
}

// out[item] = merge of the item's split partials (each [max, sum, acc[dv]]) and its head's sink. Warp 0 finds
// the common max and each split's factor exp(max_s - max) (0 for a split that saw no key) into shared memory,
// with the denominator; then each thread sums its output dims over the splits with independent loads (the
// serial loop with an exp per split this replaced was latency-bound: 15 us per layer at 33 splits).
// Dynamic shared memory: splits floats.
__global__ void merge_splits_kernel(const float* partial, const float* sinks, int64_t heads, int64_t dv,
                                    int splits, float* out) {
  detail::chain_entry();  // a decode-chain kernel: see launch_chained
  extern __shared__ float factor[];
  __shared__ float shared_denom;
  const int64_t item = blockIdx.x;
  const float* part = partial + item * splits * (dv + 2);
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const float sink = sinks ? sinks[item % heads] : -INFINITY;
    float gm = sink;
    for (int s = lane; s < splits; s += 32) gm = fmaxf(gm, part[s * (dv + 2)]);
    for (int o = 16; o > 0; o >>= 1) gm = fmaxf(gm, __shfl_xor_sync(0xffffffffu, gm, o));
    float denom = 0.f;
    for (int s = lane; s < splits; s += 32) {
      const float ms = part[s * (dv + 2)];
      const float f = ms == -INFINITY ? 0.f : expf(ms - gm);
      factor[s] = f;
      if (f != 0.f) denom += part[s * (dv + 2) + 1] * f;
    }
    for (int o = 16; o > 0; o >>= 1) denom += __shfl_xor_sync(0xffffffffu, denom, o);
    if (lane == 0) shared_denom = denom + (sinks ? expf(sink - gm) : 0.f);
  }
  __syncthreads();
  const float denom = shared_denom;
  for (int64_t d = threadIdx.x; d < dv; d += blockDim.x) {
    float o = 0.f;
#pragma unroll 8
    for (int s = 0; s < splits; ++s) {
      if (factor[s] != 0.f) o += part[s * (dv + 2) + 2 + d] * factor[s];  // a split that saw no key adds nothing
    }
    out[item * dv + d] = o / denom;
  }
}

// Key splits per (query, head): enough blocks for about eight per multiprocessor, at most 64 splits.
int key_splits(int64_t items) {
  const int64_t target = int64_t{detail::multiprocessors()} * 8;
  if (items >= target) return 1;
  return static_cast<int>(std::min<int64_t>(64, (target + items - 1) / items));
}

// src: the fused form (paged_attention_qkv; q is then unused), else null.
template <typename KV, bool kPaged>
void launch_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                      const AttentionArgs& args, const AttnParams& p, const PagedRows& paged, int splits,
                      Tensor& out, int* bad, const QkvSource* src = nullptr) {
  const int64_t items = q.size(0) * p.heads;
  const float* sinks = args.sinks.defined() ? args.sinks.f32() : nullptr;
  const dim3 grid(static_cast<unsigned>(items), static_cast<unsigned>(splits));
  const auto* kp = static_cast<const KV*>(k.raw());
  const auto* vp = static_cast<const KV*>(v.raw());
  Tensor partial;
  if (splits > 1) partial = Tensor::empty({items, splits, p.dv + 2}, DType::kF32, Device::kCuda);
  float* part = splits > 1 ? partial.f32() : nullptr;
  if (src) {
    if constexpr (kPaged) {
      detail::launch_chained(attention_kernel<KV, true, kPrefetchPerLane, true>, grid, kWarps * 32, 0,
                             static_cast<const float*>(nullptr), kp, vp, positions.i64(), sinks, p, paged, out.f32(),
                             part, bad, *src);
    } else {
      SY_CHECK(false, "cuda attention: the q|k|v-fused form reads a paged pool");
    }
  } else if (p.dv <= kPrefetchPerLane * 32) {
    detail::launch_chained(attention_kernel<KV, kPaged, kPrefetchPerLane>, grid, kWarps * 32, 0, q.f32(), kp, vp,
                           positions.i64(), sinks, p, paged, out.f32(), part, bad, QkvSource{});
  } else if (p.dv <= 8 * 32) {
    detail::launch_chained(attention_kernel<KV, kPaged, 8>, grid, kWarps * 32, 0, q.f32(), kp, vp, positions.i64(),
                           sinks, p, paged, out.f32(), part, bad, QkvSource{});
  } else {
    detail::launch_chained(attention_kernel<KV, kPaged, 16>, grid, kWarps * 32, 0, q.f32(), kp, vp, positions.i64(),
                           sinks, p, paged, out.f32(), part, bad, QkvSource{});
  }
  SY_CUDA_CHECK_LAUNCH();
  if (splits == 1) return;
  // The factor table gets 8 floats of slack: compute-sanitizer (H100, 2026-12-05) caught the unrolled sum
  // below reading 12 bytes past `splits` floats of shared memory.
  detail::launch_chained(merge_splits_kernel, static_cast<unsigned>(items), 128, (splits + 8) * sizeof(float),
                         partial.f32(), sinks, p.heads, p.dv, splits, out.f32());
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, int64_t kv_len,
               const AttentionArgs& args, Tensor& out) {
  detail::require_device("cuda attention", "q", q);
  detail::require_device("cuda attention", "k", k);
  detail::require_device("cuda attention", "v", v);
  detail::require_device("cuda attention", "positions", positions);
  detail::require_device("cuda attention", "out", out);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&q, &k, &v, &out}) {
    detail::require_dtype("cuda attention", "operand", *t, DType::kF32);
  }
  detail::require_dtype("cuda attention", "positions", positions, DType::kI64, DType::kI64);
  SY_REQUIRE(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && out.dim() == 3, InvalidArgument, "cuda attention",
             "rank-3 tensors expected");
  const int64_t t = q.size(0), heads = q.size(1), dk = q.size(2), kv_heads = k.size(1), dv = v.size(2);
  SY_REQUIRE(k.size(2) == dk && v.size(1) == kv_heads && kv_heads > 0 && heads % kv_heads == 0 &&
                 k.size(0) >= kv_len && v.size(0) >= kv_len && out.size(0) == t && out.size(1) == heads &&
                 out.size(2) == dv && positions.numel() == t && dv <= kMaxDv,
             InvalidArgument, "cuda attention", "q ", q.describe(), " k ", k.describe(), " v ", v.describe(),
             " out ", out.describe(), " kv_len ", kv_len, " (dv at most ", kMaxDv, ")");
  if (args.sinks.defined()) {
    detail::require_device("cuda attention", "sinks", args.sinks);
    detail::require_dtype("cuda attention", "sinks", args.sinks, DType::kF32);
    SY_REQUIRE(args.sinks.numel() == heads, InvalidArgument, "cuda attention", "sinks ", args.sinks.describe());
  }
  if (t == 0 || heads == 0) return;
  AttnParams p{heads, kv_heads, dk, dv, kv_len, k.strides()[0], k.strides()[1], v.strides()[0], v.strides()[1],
               args.scale, args.window, false, detail::L2Range{}, 0};
  Tensor bad = Tensor::zeros({1}, DType::kI32, Device::kCuda);
  launch_attention<float, false>(q, k, v, positions, args, p, PagedRows{}, key_splits(t * heads), out, bad.i32());
  SY_REQUIRE(to_host(bad).i32()[0] == 0, InvalidArgument, "cuda attention", "a position lies outside the ",
             kv_len, " cached keys");
}

void paged_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                     const Tensor& table_start, const Tensor& block_tables, int64_t block_size,
                     const AttentionArgs& args, Tensor& out) {
  const char* op = "cuda paged_attention";
  detail::require_device(op, "q", q);
  detail::require_device(op, "out", out);
  detail::require_rows_device(op, "keys", k);
  detail::require_rows_device(op, "values", v);
  detail::require_dtype(op, "q", q, DType::kF32);
  detail::require_dtype(op, "out", out, DType::kF32);
  detail::require_dtype(op, "keys", k, DType::kF32, DType::kBF16);
  SY_REQUIRE(v.dtype() == k.dtype(), InvalidArgument, op, "keys ", k.describe(), " and values ", v.describe(),
             " differ in dtype");
  SY_REQUIRE(args.key_splits >= 0 && args.key_splits <= 1024, InvalidArgument, op, "key_splits must be in [0, 1024], got ",
             args.key_splits);
  SY_REQUIRE(args.min_split_keys >= 0, InvalidArgument, op, "min_split_keys must not be negative, got ",
             args.min_split_keys);
  detail::require_device(op, "positions", positions);
  detail::require_dtype(op, "positions", positions, DType::kI64, DType::kI64);
  detail::require_device(op, "table_start", table_start);
  detail::require_dtype(op, "table_start", table_start, DType::kI64, DType::kI64);
  detail::require_device(op, "block_tables", block_tables);
  detail::require_dtype(op, "block_tables", block_tables, DType::kI32, DType::kI32);
  SY_REQUIRE(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && out.dim() == 3, InvalidArgument, op,
             "rank-3 tensors expected");
  const int64_t t = q.size(0), heads = q.size(1), dk = q.size(2), kv_heads = k.size(1), dv = v.size(2);
  SY_REQUIRE(k.size(2) == dk && v.size(1) == kv_heads && kv_heads > 0 && heads % kv_heads == 0 &&
                 k.size(0) == v.size(0) && block_size > 0 && k.size(0) % block_size == 0 && out.size(0) == t &&
                 out.size(1) == heads && out.size(2) == dv && positions.numel() == t && table_start.numel() == t &&
                 dv <= kMaxDv,
             InvalidArgument, op, "q ", q.describe(), " k ", k.describe(), " v ", v.describe(), " out ",
             out.describe(), " block size ", block_size);
  if (args.sinks.defined()) {
    detail::require_device(op, "sinks", args.sinks);
    detail::require_dtype(op, "sinks", args.sinks, DType::kF32);
    SY_REQUIRE(args.sinks.numel() == heads, InvalidArgument, op, "sinks ", args.sinks.describe());
  }
  if (t == 0 || heads == 0) return;
  if (args.grouped_decode && grouped_decode_fits(q, k, v) && out.is_contiguous()) {
    detail::grouped_decode_attention(q, k, v, positions, table_start, block_tables, block_size, args, out);
    return;
  }
  AttnParams p{heads, kv_heads, dk, dv, k.size(0), k.strides()[0], k.strides()[1], v.strides()[0], v.strides()[1],
               args.scale, args.window, args.cached_keys_ready, detail::l2_range(op, args.l2_prefetch),
               args.min_split_keys};
  PagedRows paged{table_start.i64(), block_tables.i32(), block_size};
  // A forced count applies only to passes the automatic rule splits (decode-sized), so a forced count never
  // multiplies the scratch of a prefill-sized pass.
  const int auto_splits = key_splits(t * heads);
  const int splits = args.key_splits > 0 && auto_splits > 1 ? args.key_splits : auto_splits;
  if (k.dtype() == DType::kBF16) {
    launch_attention<__nv_bfloat16, true>(q, k, v, positions, args, p, paged, splits, out, nullptr);
  } else {
    launch_attention<float, true>(q, k, v, positions, args, p, paged, splits, out, nullptr);
  }
}

bool paged_attention_qkv_fits(int64_t heads, int64_t kv_heads, int64_t d, int64_t dv, const DeviceRope& rope) {
  return heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && d >= 1 && d <= kFusedMaxDim && dv >= 1 &&
         dv <= kFusedMaxDim && rope.rotary_dim <= d && rope.rotary_dim % 2 == 0;
}

void paged_attention_qkv(const Tensor& qkv, const QkvEpilogueArgs& e, const DeviceRope& rope, const Tensor& rows,
                         Tensor& keys, Tensor& values, const Tensor& positions, const Tensor& table_start,
                         const Tensor& block_tables, int64_t block_size, const AttentionArgs& args, Tensor& out) {
  const char* op = "cuda paged_attention_qkv";
  detail::require_device(op, "qkv", qkv);
  detail::require_dtype(op, "qkv", qkv, DType::kF32);
  detail::require_device(op, "out", out);
  detail::require_dtype(op, "out", out, DType::kF32);
  detail::require_rows_device(op, "keys", keys);
  detail::require_rows_device(op, "values", values);
  detail::require_dtype(op, "keys", keys, DType::kF32, DType::kBF16);
  SY_REQUIRE(values.dtype() == keys.dtype(), InvalidArgument, op, "keys ", keys.describe(), " and values ",
             values.describe(), " differ in dtype");
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"positions", &positions},
                                {"table_start", &table_start}, {"rows", &rows}}) {
    detail::require_device(op, name, *t);
    detail::require_dtype(op, name, *t, DType::kI64, DType::kI64);
  }
  detail::require_device(op, "block_tables", block_tables);
  detail::require_dtype(op, "block_tables", block_tables, DType::kI32, DType::kI32);
  SY_REQUIRE(qkv.dim() == 2 && keys.dim() == 3 && values.dim() == 3 && out.dim() == 3 && qkv.is_contiguous() &&
                 out.is_contiguous(),
             InvalidArgument, op, "qkv ", qkv.describe(), " (contiguous rows), rank-3 pools and a contiguous rank-3 out");
  const int64_t t = qkv.size(0), heads = out.size(1), kv_heads = keys.size(1), d = keys.size(2),
                dv = values.size(2);
  SY_REQUIRE(paged_attention_qkv_fits(heads, kv_heads, d, dv, rope) && values.size(1) == kv_heads &&
                 out.size(0) == t && out.size(2) == dv && qkv.size(1) == (heads + kv_heads) * d + kv_heads * dv &&
                 keys.size(0) == values.size(0) && block_size > 0 && keys.size(0) % block_size == 0 &&
                 positions.numel() == t && table_start.numel() == t && rows.numel() == t && rope.inv_freq.defined() &&
                 rope.inv_freq.numel() == rope.rotary_dim / 2,
             InvalidArgument, op, "qkv ", qkv.describe(), " keys ", keys.describe(), " values ", values.describe(),
             " out ", out.describe(), " rotary dim ", rope.rotary_dim, " (head dims at most ", kFusedMaxDim,
             ", whole heads per key head)");
  detail::check_qkv_epilogue_vectors(op, e, qkv.size(1), d);
  if (args.sinks.defined()) {
    detail::require_device(op, "sinks", args.sinks);
    detail::require_dtype(op, "sinks", args.sinks, DType::kF32);
    SY_REQUIRE(args.sinks.numel() == heads, InvalidArgument, op, "sinks ", args.sinks.describe());
  }
  SY_REQUIRE(args.key_splits >= 0 && args.key_splits <= 1024, InvalidArgument, op,
             "key_splits must be in [0, 1024], got ", args.key_splits);
  SY_REQUIRE(args.min_split_keys >= 0, InvalidArgument, op, "min_split_keys must not be negative, got ",
             args.min_split_keys);
  if (t == 0) return;
  QkvSource src;
  src.qkv = qkv.f32();
  src.bias = e.bias.defined() ? e.bias.f32() : nullptr;
  src.q_norm = e.q_norm.defined() ? e.q_norm.f32() : nullptr;
  src.k_norm = e.k_norm.defined() ? e.k_norm.f32() : nullptr;
  src.inv_freq = rope.inv_freq.f32();
  src.rows = rows.i64();
  src.keys = keys.raw();
  src.values = values.raw();
  src.head = detail::QkvHeadParams{static_cast<int>(heads), static_cast<int>(kv_heads), static_cast<int>(d),
                                   static_cast<int>(dv), e.clip, e.eps, rope.rotary_dim / 2, rope.interleaved,
                                   rope.attention_scaling};
  AttnParams p{heads, kv_heads, d, dv, keys.size(0), keys.strides()[0], keys.strides()[1], values.strides()[0],
               values.strides()[1], args.scale, args.window, true, detail::l2_range(op, args.l2_prefetch),
               args.min_split_keys};
  // out stands in for q (the fused forms read their queries from qkv; only the shape is taken from it).
  if (args.grouped_decode && grouped_decode_fits(out, keys, values)) {
    detail::grouped_decode_attention(out, keys, values, positions, table_start, block_tables, block_size, args, out,
                                     &src);
    return;
  }
  PagedRows paged{table_start.i64(), block_tables.i32(), block_size};
  const int auto_splits = key_splits(t * heads);
  const int splits = args.key_splits > 0 && auto_splits > 1 ? args.key_splits : auto_splits;
  if (keys.dtype() == DType::kBF16) {
    launch_attention<__nv_bfloat16, true>(out, keys, values, positions, args, p, paged, splits, out, nullptr, &src);
  } else {
    launch_attention<float, true>(out, keys, values, positions, args, p, paged, splits, out, nullptr, &src);
  }
}

}  // namespace sy::cuda
