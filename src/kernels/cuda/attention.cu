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
#include "op_common.cuh"

namespace sy::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kMaxDv = 512;  // value dims per head: 8 per lane up to 256, else 16 per lane (MLA's latent)

struct AttnParams {
  int64_t heads, kv_heads, dk, dv, kv_len;
  int64_t ks, khs, vs, vhs;  // element strides of k and v (token, head)
  float scale;
  int window;
};

// Paged KV (paged_attention): key j of query i lives at pool row tables[table_start[i] + j / bs] * bs + j % bs.
struct PagedRows {
  const int64_t* table_start = nullptr;
  const int32_t* tables = nullptr;
  int64_t block_size = 0;
};

// Splits of one query's keys: split s of S covers keys [lo + s*chunk, lo + (s+1)*chunk) with
// chunk = ceil((pos - lo + 1) / S), computed on the device so the launch shape does not depend on positions
// (decode steps are replayed from CUDA graphs while positions grow).
template <typename KV, bool kPaged, int kDvPerLane>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(const float* q, const KV* k, const KV* v,
                                                               const int64_t* positions, const float* sinks,
                                                               AttnParams p, PagedRows paged, float* out,
                                                               float* partial, int* bad) {
  detail::chain_entry();  // a decode-chain kernel: see launch_chained
  __shared__ float warp_m[kWarps], warp_l[kWarps];
  __shared__ float warp_acc[kWarps][kDvPerLane * 32];
  const int64_t item = blockIdx.x;  // query * heads + head
  const int split = blockIdx.y, splits = gridDim.y;
  const int64_t i = item / p.heads, h = item % p.heads, kh = h / (p.heads / p.kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t pos = positions[i];
  if (pos < 0 || (!kPaged && pos >= p.kv_len)) {
    if (threadIdx.x == 0 && bad) *bad = 1;
    float* dst = splits == 1 ? out + item * p.dv : partial + (item * splits + split) * (p.dv + 2) + 2;
    for (int64_t c = threadIdx.x; c < p.dv; c += blockDim.x) dst[c] = NAN;
    if (splits > 1 && threadIdx.x == 0) dst[-2] = dst[-1] = NAN;
    return;
  }
  const int64_t first = p.window > 0 ? max(int64_t{0}, pos - p.window + 1) : 0;
  const int64_t chunk = (pos - first + splits) / splits;
  const int64_t lo = first + split * chunk, hi = min(pos, lo + chunk - 1);
  const float* qrow = q + item * p.dk;
  float m = -INFINITY, l = 0.f, acc[kDvPerLane];
#pragma unroll
  for (int c = 0; c < kDvPerLane; ++c) acc[c] = 0.f;
  const int32_t* table = kPaged ? paged.tables + paged.table_start[i] : nullptr;
  for (int64_t j = lo + warp; j <= hi; j += kWarps) {
    const int64_t r = kPaged ? int64_t{table[j / paged.block_size]} * paged.block_size + j % paged.block_size : j;
    const KV* krow = k + r * p.ks + kh * p.khs;
    float s = 0.f;
    for (int64_t d = lane; d < p.dk; d += 32) s += qrow[d] * detail::load_f(krow, d);
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
      acc[c] = acc[c] * corr + (d < p.dv ? e * detail::load_f(vrow, d) : 0.f);
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
    for (int s = 0; s < splits; ++s) o += part[s * (dv + 2) + 2 + d] * factor[s];
    out[item * dv + d] = o / denom;
  }
}

int multiprocessors() {
  static const int count = [] {
    int device = 0, n = 0;
    SY_CUDA_CHECK(cudaGetDevice(&device));
    SY_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return n;
  }();
  return count;
}

// Key splits per (query, head): enough blocks for about eight per multiprocessor, at most 64 splits.
int key_splits(int64_t items) {
  const int64_t target = int64_t{multiprocessors()} * 8;
  if (items >= target) return 1;
  return static_cast<int>(std::min<int64_t>(64, (target + items - 1) / items));
}

template <typename KV, bool kPaged>
void launch_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                      const AttentionArgs& args, const AttnParams& p, const PagedRows& paged, int splits,
                      Tensor& out, int* bad) {
  const int64_t items = q.size(0) * p.heads;
  const float* sinks = args.sinks.defined() ? args.sinks.f32() : nullptr;
  const dim3 grid(static_cast<unsigned>(items), static_cast<unsigned>(splits));
  const auto* kp = static_cast<const KV*>(k.raw());
  const auto* vp = static_cast<const KV*>(v.raw());
  Tensor partial;
  if (splits > 1) partial = Tensor::empty({items, splits, p.dv + 2}, DType::kF32, Device::kCuda);
  float* part = splits > 1 ? partial.f32() : nullptr;
  if (p.dv <= 8 * 32) {
    detail::launch_chained(attention_kernel<KV, kPaged, 8>, grid, kWarps * 32, 0, q.f32(), kp, vp, positions.i64(),
                           sinks, p, paged, out.f32(), part, bad);
  } else {
    detail::launch_chained(attention_kernel<KV, kPaged, 16>, grid, kWarps * 32, 0, q.f32(), kp, vp, positions.i64(),
                           sinks, p, paged, out.f32(), part, bad);
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
               args.scale, args.window};
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
               args.scale, args.window};
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

}  // namespace sy::cuda
