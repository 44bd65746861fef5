// Decode attention over the paged bf16 pool, grouped by key head: a thread-block cluster per (query, key
// head) computes all of the group's query heads (GQA) together, so each cached key and value row is read once
// for the group instead of once per query head. The cluster's kCluster blocks split the query's visible keys;
// each stages a step's key and value rows in shared memory with all of the step's loads in flight (the next
// step's loads issued before the current step's arithmetic), and the blocks merge their partial softmaxes
// through distributed shared memory: one launch, no partials through global memory, no merge kernel.
// Scores: lane l holds dims [l * d / 32, (l + 1) * d / 32) of its warp's query heads and sums them for every
// (head, key) pair of a step, the warp's 32 sums reduced together by a transposing butterfly (31 shuffles,
// after which lane l holds sum l). Numerics as the per-head kernel (attention.cu): f32 online softmax with
// expf, scores scaled after the dot product, the same window and sinks. CPU reference: ops::paged_attention.
#include <cooperative_groups.h>

#include <cmath>

#include "grouped_decode_attention.cuh"
#include "op_common.cuh"
#include "qkv_head.cuh"

namespace sy::cuda {

namespace {

namespace cg = cooperative_groups;

constexpr int kCluster = 8;  // blocks per (query, key head): the largest portable cluster
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxGroup = 16;  // query heads per key head: kWarps warps of up to 4 heads

struct GqaParams {
  int64_t heads, kv_heads, group;
  int64_t ks, khs, vs, vhs;  // element strides of the pools (row, head)
  int64_t block_size;
  float scale;
  int window;
  bool keys_ready;  // AttentionArgs::cached_keys_ready: keys before each query's position are cached already
};

// Shared memory of one block: a step's key and value rows (bf16) and the group's partials (m, l, acc[d]).
constexpr size_t smem_bytes(int d, int heads_per_warp, int64_t group) {
  return sizeof(__nv_bfloat16) * 2 * (32 / heads_per_warp) * d + sizeof(float) * group * (d + 2);
}

// One step of the transposing butterfly over a warp's 32 sums: at offset kO a lane keeps the half of its 2 kO
// sums that its bit kO selects and adds its partner's share of that half (the offset a template argument, so
// every index is a constant and the sums stay in registers).
template <int kO>
__device__ __forceinline__ void butterfly_step(float (&s)[32], int lane) {
  const bool upper = (lane & kO) != 0;
#pragma unroll
  for (int x = 0; x < kO; ++x) {
    const float send = upper ? s[x] : s[x + kO];
    const float keep = upper ? s[x + kO] : s[x];
    s[x] = keep + __shfl_xor_sync(0xffffffffu, send, kO);
  }
}

// A lane's kPer consecutive dims of a staged bf16 row, as floats.
template <int kPer>
__device__ __forceinline__ void lane_dims(const __nv_bfloat16* row, float (&f)[kPer]) {
#pragma unroll
  for (int e = 0; e < kPer; e += 2) {
    const float2 pair = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(row + e));
    f[e] = pair.x;
    f[e + 1] = pair.y;
  }
}

// kD: the head dim of keys and values (64 or 128); kHeads: query heads per warp (1, 2 or 4), so a step covers
// kStep = 32 / kHeads keys and a warp's (head, key) sums fill its 32 lanes. Grid: t * kv_heads * kCluster
// blocks in clusters of kCluster; cluster c is (query c / kv_heads, key head c % kv_heads), block b of it
// takes the b-th of kCluster equal runs of the query's visible keys.
// kFromQkv (paged_attention_qkv with grouped_decode; a decode pass): q is unused; every block forms the
// group's query heads from src.qkv as qkv_epilogue does (detail::transform_head: the same values), and the
// block whose run ends at the query's own position forms that token's key and value too (rounded as the
// pool stores them), writes them to the pools and takes that key's pieces from shared memory.
template <int kD, int kHeads, bool kFromQkv = false>
__global__ void __launch_bounds__(kThreads) grouped_decode_kernel(const float* q, const __nv_bfloat16* k,
                                                                  const __nv_bfloat16* v, const int64_t* positions,
                                                                  const int64_t* table_start, const int32_t* tables,
                                                                  const float* sinks, GqaParams p, float* out,
                                                                  detail::QkvSource src) {
  constexpr int kStep = 32 / kHeads;
  constexpr int kPer = kD / 32;       // dims per lane
  constexpr int kRowPieces = kD / 8;  // 16-byte pieces of a row
  constexpr int kPieces = 2 * kStep * kRowPieces;  // a step's key pieces, then its value pieces
  constexpr int kPiecesPerThread = (kPieces + kThreads - 1) / kThreads;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* kt = reinterpret_cast<__nv_bfloat16*>(smem);  // [kStep][kD]
  __nv_bfloat16* vt = kt + kStep * kD;                          // [kStep][kD]
  float* partial = reinterpret_cast<float*>(vt + kStep * kD);   // [group][kD + 2]: m, l, acc
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t pair = blockIdx.x / kCluster;  // query * kv_heads + key head
  const int64_t i = pair / p.kv_heads, kh = pair % p.kv_heads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // A decode-chain kernel (see launch_chained). The position and table offset are the step's inputs
  // (uploaded before it), read before the wait; so are the block's first two steps of cached keys and values where
  // p.keys_ready says every key before the query's position was cached by an earlier pass (a decode pass: only
  // the query's own key and value are this pass's, written by the kernel before this one). Otherwise the
  // keys are read after the wait (a prefill chunk writes some of its own).
  detail::chain_release();
  const int64_t pos = positions[i];
  const int32_t* table = tables + table_start[i];
  const int64_t first = p.window > 0 ? max(int64_t{0}, pos - p.window + 1) : 0;
  const int64_t len = pos >= 0 ? pos - first + 1 : 0;
  const int64_t run = (len + kCluster - 1) / kCluster;
  const int64_t lo = first + rank * run, hi = min(pos, lo + run - 1);  // this block's keys (maybe none)
  // The fused form's query heads, own key and value, and the epilogue's staged tables (before the wait: the
  // norms, and the rotary table at the query's position, are no kernel's output).
  constexpr int kF = kFromQkv ? 1 : 0;
  __shared__ float q_s[kF * kMaxGroup * kD + 1], kv_s[kF * 2 * kD + 1];
  __shared__ float q_norm_s[kF * kD + 1], k_norm_s[kF * kD + 1], cos_s[kF * kD + 1], sin_s[kF * kD + 1];
  const bool owner = kFromQkv && lo <= hi && hi == pos;  // this block's run holds the query's own key
  const int64_t own_row = owner ? src.rows[i] : 0;
  if (kFromQkv) {
    detail::stage_qkv_tables(src.q_norm, src.k_norm, src.inv_freq, static_cast<float>(pos), src.head, q_norm_s,
                             k_norm_s, cos_s, sin_s);
  }
  // The 16-byte piece `part` of the own key's (or value's) row, from shared memory, as the pool holds it.
  auto own_piece = [&](bool is_v, int part) {
    uint4 u;
    __nv_bfloat162* h2 = reinterpret_cast<__nv_bfloat162*>(&u);
    const float* f = kv_s + (is_v ? kD : 0) + part * 8;
#pragma unroll
    for (int e = 0; e < 4; ++e) h2[e] = __floats2bfloat162_rn(f[2 * e], f[2 * e + 1]);
    return u;
  };

  uint4 pre[kPiecesPerThread];  // the next step's pieces, loaded while the current one is computed
  auto piece_of = [&](int c, bool& is_v, int& key, int& part) {
    const int idx = threadIdx.x + c * kThreads;
    is_v = idx >= kStep * kRowPieces;
    const int rel = is_v ? idx - kStep * kRowPieces : idx;
    key = rel / kRowPieces;
    part = rel % kRowPieces;
    return idx < kPieces;
  };
  // The pieces of the step from key j0 whose keys lie in [j_begin, j_end] (and at most hi) into dst; with
  // `clear` the others become zero, without they keep what they hold.
  auto fetch_keys = [&](uint4(&dst)[kPiecesPerThread], int64_t j0, int64_t j_begin, int64_t j_end, bool clear) {
#pragma unroll
    for (int c = 0; c < kPiecesPerThread; ++c) {
      bool is_v;
      int key, part;
      if (clear) dst[c] = make_uint4(0, 0, 0, 0);
      if (piece_of(c, is_v, key, part) && j0 + key <= hi && j0 + key >= j_begin && j0 + key <= j_end) {
        const int64_t j = j0 + key;
        if (kFromQkv && j == pos) {  // formed by this block (owner), not yet in the pool when it was read
          dst[c] = own_piece(is_v, part);
          continue;
        }
        const int64_t row = int64_t{table[j / p.block_size]} * p.block_size + j % p.block_size;
        const __nv_bfloat16* from = is_v ? v + row * p.vs + kh * p.vhs : k + row * p.ks + kh * p.khs;
        dst[c] = *reinterpret_cast<const uint4*>(from + part * 8);
      }
    }
  };
  auto fetch = [&](int64_t j0) { fetch_keys(pre, j0, j0, hi, true); };
  // The first two steps' cached keys before the wait (the second into pre2, moved to pre when the loop gets
  // there); the key at the query's own position, if one of them holds it, after.
  const bool early = p.keys_ready && lo <= hi, early2 = early && lo + kStep <= hi;
  uint4 pre2[kPiecesPerThread];
  if (early) fetch_keys(pre, lo, lo, pos - 1, true);
  if (early2) fetch_keys(pre2, lo + kStep, lo + kStep, pos - 1, true);
  detail::chain_wait();
  if (kFromQkv) {
    // The group's query heads (every block), and the own key and value (the owner): one warp per head.
    const detail::QkvHeadParams& hp = src.head;
    const int64_t qk_cols = static_cast<int64_t>(hp.heads + hp.kv_heads) * hp.d;
    const float* row = src.qkv + i * (qk_cols + static_cast<int64_t>(hp.kv_heads) * hp.dv);
    __syncthreads();  // the staged tables
    for (int x = warp; x < p.group + 2; x += kWarps) {
      if (x < p.group) {
        detail::transform_head(row, src.bias, (kh * p.group + x) * hp.d, hp.d, src.q_norm ? q_norm_s : nullptr,
                               true, cos_s, sin_s, hp, q_s + x * kD);
      } else if (owner) {
        const bool is_v = x == p.group + 1;
        float* buf = kv_s + (is_v ? kD : 0);
        detail::transform_head(row, src.bias, is_v ? qk_cols + kh * hp.dv : (hp.heads + kh) * hp.d, kD,
                               !is_v && src.k_norm ? k_norm_s : nullptr, !is_v, cos_s, sin_s, hp, buf);
        for (int j = lane; j < kD; j += 32) buf[j] = __bfloat162float(__float2bfloat16(buf[j]));
        __syncwarp();
        __nv_bfloat16* pool = static_cast<__nv_bfloat16*>(is_v ? src.values : src.keys) +
                              own_row * (is_v ? p.vs : p.ks) + kh * (is_v ? p.vhs : p.khs);
        for (int j = lane; j < kD; j += 32) pool[j] = __float2bfloat16(buf[j]);
      }
    }
    __syncthreads();  // q_s and kv_s
  }
  if (early && pos < lo + kStep) {
    fetch_keys(pre, lo, pos, pos, false);
  } else if (early2 && pos < lo + 2 * kStep) {
    fetch_keys(pre2, lo + kStep, pos, pos, false);
  } else if (!early && lo <= hi) {
    fetch(lo);
  }

  float qv[kHeads][kPer];  // the warp's query heads (group-local w * kHeads + u; past the group: zeros)
#pragma unroll
  for (int u = 0; u < kHeads; ++u) {
    const int64_t hl = warp * kHeads + u;
    const float* qrow = kFromQkv ? q_s + min(hl, p.group - 1) * kD + lane * kPer
                                 : q + (i * p.heads + kh * p.group + min(hl, p.group - 1)) * kD + lane * kPer;
#pragma unroll
    for (int e = 0; e < kPer; ++e) qv[u][e] = hl < p.group ? qrow[e] : 0.f;
  }

  auto stage = [&]() {
#pragma unroll
    for (int c = 0; c < kPiecesPerThread; ++c) {
      bool is_v;
      int key, part;
      if (piece_of(c, is_v, key, part)) *reinterpret_cast<uint4*>((is_v ? vt : kt) + key * kD + part * 8) = pre[c];
    }
  };

  float m[kHeads], l[kHeads], acc[kHeads][kPer];
#pragma unroll
  for (int u = 0; u < kHeads; ++u) {
    m[u] = -INFINITY;
    l[u] = 0.f;
#pragma unroll
    for (int e = 0; e < kPer; ++e) acc[u][e] = 0.f;
  }
  const int my_head = lane / kStep, my_key = lane % kStep;  // the (head, key) sum lane l ends with
  for (int64_t j0 = lo; j0 <= hi; j0 += kStep) {
    stage();
    __syncthreads();
    if (j0 + kStep <= hi) {
      if (early2 && j0 == lo) {
#pragma unroll
        for (int c = 0; c < kPiecesPerThread; ++c) pre[c] = pre2[c];
      } else {
        fetch(j0 + kStep);
      }
    }
    // Each lane's share of every (head, key) dot product, index u * kStep + key.
    float s[32];
#pragma unroll
    for (int key = 0; key < kStep; ++key) {
      float kf[kPer];
      lane_dims<kPer>(kt + key * kD + lane * kPer, kf);
#pragma unroll
      for (int u = 0; u < kHeads; ++u) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < kPer; ++e) d += qv[u][e] * kf[e];
        s[u * kStep + key] = d;
      }
    }
    // Transposing butterfly: after offset 1, s[0] of lane l is sum l.
    butterfly_step<16>(s, lane);
    butterfly_step<8>(s, lane);
    butterfly_step<4>(s, lane);
    butterfly_step<2>(s, lane);
    butterfly_step<1>(s, lane);
    const bool ok = j0 + my_key <= hi && warp * kHeads + my_head < p.group;
    const float score = ok ? s[0] * p.scale : -INFINITY;
    float step_max = score;
#pragma unroll
    for (int o = kStep / 2; o >= 1; o >>= 1) step_max = fmaxf(step_max, __shfl_xor_sync(0xffffffffu, step_max, o));
    float m_old = m[0];
#pragma unroll
    for (int u = 1; u < kHeads; ++u) m_old = my_head == u ? m[u] : m_old;
    const float m_new = fmaxf(m_old, step_max);
    const float prob = ok ? expf(score - m_new) : 0.f;
    float step_sum = prob;
#pragma unroll
    for (int o = kStep / 2; o >= 1; o >>= 1) step_sum += __shfl_xor_sync(0xffffffffu, step_sum, o);
#pragma unroll
    for (int u = 0; u < kHeads; ++u) {
      const float mu = __shfl_sync(0xffffffffu, m_new, u * kStep);
      const float su = __shfl_sync(0xffffffffu, step_sum, u * kStep);
      const float corr = mu == -INFINITY ? 1.f : expf(m[u] - mu);  // 0 on the head's first keys (m = -inf)
      l[u] = l[u] * corr + su;
      m[u] = mu;
#pragma unroll
      for (int e = 0; e < kPer; ++e) acc[u][e] *= corr;
    }
#pragma unroll
    for (int key = 0; key < kStep; ++key) {
      float vf[kPer];
      lane_dims<kPer>(vt + key * kD + lane * kPer, vf);
#pragma unroll
      for (int u = 0; u < kHeads; ++u) {
        const float pk = __shfl_sync(0xffffffffu, prob, u * kStep + key);
#pragma unroll
        for (int e = 0; e < kPer; ++e) acc[u][e] += pk * vf[e];
      }
    }
    __syncthreads();  // the tiles are restaged by the next step
  }
#pragma unroll
  for (int u = 0; u < kHeads; ++u) {
    const int64_t hl = warp * kHeads + u;
    if (hl >= p.group) continue;
    float* pp = partial + hl * (kD + 2);
    if (lane == 0) {
      pp[0] = m[u];
      pp[1] = l[u];
    }
#pragma unroll
    for (int e = 0; e < kPer; ++e) pp[2 + lane * kPer + e] = acc[u][e];
  }
  cluster.sync();
  // Block b merges the group's heads b, b + kCluster, ...: the common max with the sink, each block's factor
  // exp(m_b - max) (0 for a block that saw no key), the denominator, then the weighted sum per dim.
  for (int64_t hl = rank; hl < p.group; hl += kCluster) {
    const int64_t head = kh * p.group + hl;
    const float sink = sinks ? sinks[head] : -INFINITY;
    float gm = sink, f[kCluster];
#pragma unroll
    for (int b = 0; b < kCluster; ++b) gm = fmaxf(gm, cluster.map_shared_rank(partial, b)[hl * (kD + 2)]);
    float denom = sinks ? expf(sink - gm) : 0.f;
#pragma unroll
    for (int b = 0; b < kCluster; ++b) {
      const float* pb = cluster.map_shared_rank(partial, b) + hl * (kD + 2);
      f[b] = pb[0] == -INFINITY ? 0.f : expf(pb[0] - gm);
      denom += pb[1] * f[b];
    }
    float* dst = out + (i * p.heads + head) * kD;
    for (int d = threadIdx.x; d < kD; d += kThreads) {
      float o = 0.f;
#pragma unroll
      for (int b = 0; b < kCluster; ++b) o += cluster.map_shared_rank(partial, b)[hl * (kD + 2) + 2 + d] * f[b];
      dst[d] = pos >= 0 ? o / denom : NAN;
    }
  }
  cluster.sync();  // no block leaves while another reads its partials
}

template <int kD, int kHeads>
void launch(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, const Tensor& table_start,
            const Tensor& block_tables, const float* sinks, const GqaParams& p, Tensor& out,
            const detail::QkvSource* src) {
  const size_t smem = smem_bytes(kD, kHeads, p.group);
  using bf16 = __nv_bfloat16;
  const dim3 grid(static_cast<unsigned>(q.size(0) * p.kv_heads * kCluster));
  detail::launch_ex(src ? grouped_decode_kernel<kD, kHeads, true> : grouped_decode_kernel<kD, kHeads, false>, grid,
                    dim3(kThreads), smem, kCluster, /*chained=*/true, q.f32(), static_cast<const bf16*>(k.raw()),
                    static_cast<const bf16*>(v.raw()), positions.i64(), table_start.i64(), block_tables.i32(), sinks,
                    p, out.f32(), src ? *src : detail::QkvSource{});
  SY_CUDA_CHECK_LAUNCH();
}

template <int kD>
void launch_for_group(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                      const Tensor& table_start, const Tensor& block_tables, const float* sinks, const GqaParams& p,
                      Tensor& out, const detail::QkvSource* src) {
  if (p.group <= kWarps) {
    launch<kD, 1>(q, k, v, positions, table_start, block_tables, sinks, p, out, src);
  } else if (p.group <= 2 * kWarps) {
    launch<kD, 2>(q, k, v, positions, table_start, block_tables, sinks, p, out, src);
  } else {
    launch<kD, 4>(q, k, v, positions, table_start, block_tables, sinks, p, out, src);
  }
}

bool aligned16(const Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.raw()) % 16 == 0 && t.strides()[0] % 8 == 0 && t.strides()[1] % 8 == 0 &&
         t.strides()[2] == 1;
}

}  // namespace

bool grouped_decode_fits(const Tensor& q, const Tensor& k, const Tensor& v) {
  if (q.dim() != 3 || k.dim() != 3 || v.dim() != 3) return false;
  const int64_t heads = q.size(1), kv_heads = k.size(1), d = q.size(2);
  return k.dtype() == DType::kBF16 && v.dtype() == DType::kBF16 && (d == 64 || d == 128) && k.size(2) == d &&
         v.size(2) == d && kv_heads > 0 && heads % kv_heads == 0 && heads / kv_heads <= kMaxGroup &&
         q.is_contiguous() && aligned16(k) && aligned16(v) &&
         q.size(0) * kv_heads * kCluster <= 0x7fffffff;
}

namespace detail {

void grouped_decode_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                              const Tensor& table_start, const Tensor& block_tables, int64_t block_size,
                              const AttentionArgs& args, Tensor& out, const QkvSource* src) {
  SY_REQUIRE(grouped_decode_fits(q, k, v) && out.is_contiguous(), InvalidArgument, "cuda paged_attention (grouped)",
             "q ", q.describe(), " k ", k.describe(), " v ", v.describe(), " out ", out.describe(),
             " (bf16 pools, head dims 64 or 128 alike, at most ", kMaxGroup, " query heads per key head, 16-byte ",
             "aligned rows)");
  if (q.size(0) == 0) return;
  GqaParams p{q.size(1),      k.size(1),      q.size(1) / k.size(1), k.strides()[0], k.strides()[1],
              v.strides()[0], v.strides()[1], block_size,            args.scale,     args.window,
              args.cached_keys_ready || src != nullptr};
  const float* sinks = args.sinks.defined() ? args.sinks.f32() : nullptr;
  if (q.size(2) == 64) {
    launch_for_group<64>(q, k, v, positions, table_start, block_tables, sinks, p, out, src);
  } else {
    launch_for_group<128>(q, k, v, positions, table_start, block_tables, sinks, p, out, src);
  }
}

}  // namespace detail

}  // namespace sy::cuda
