// CUDA causal prefill attention (GQA, sliding window, sinks), correctness first: one 4-warp block per
// (query, head); each warp walks every 4th visible key with an online softmax in f32, then the warps merge.
// Not here (speed work left, issue 4): flash-style tiling over query blocks with tensor cores (or cuDNN's fused
// attention), bf16 K/V, packed variable-length documents (key_start), paged KV cache decode, MLA.
#include <cmath>
#include <initializer_list>

#include "op_common.cuh"

namespace sy::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kMaxDvPerLane = 8;  // dv <= 256

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

template <bool kPaged>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(const float* q, const float* k, const float* v,
                                                               const int64_t* positions, const float* sinks,
                                                               AttnParams p, PagedRows paged, float* out,
                                                               int* bad) {
  __shared__ float warp_m[kWarps], warp_l[kWarps];
  __shared__ float warp_acc[kWarps][kMaxDvPerLane * 32];
  const int64_t item = blockIdx.x;  // query * heads + head
  const int64_t i = item / p.heads, h = item % p.heads, kh = h / (p.heads / p.kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t pos = positions[i];
  if (pos < 0 || (!kPaged && pos >= p.kv_len)) {
    if (threadIdx.x == 0 && bad) *bad = 1;
    for (int64_t c = threadIdx.x; c < p.dv; c += blockDim.x) out[item * p.dv + c] = NAN;
    return;
  }
  const int64_t lo = p.window > 0 ? max(int64_t{0}, pos - p.window + 1) : 0;
  const float* qrow = q + item * p.dk;
  float m = -INFINITY, l = 0.f, acc[kMaxDvPerLane];
#pragma unroll
  for (int c = 0; c < kMaxDvPerLane; ++c) acc[c] = 0.f;
  const int32_t* table = kPaged ? paged.tables + paged.table_start[i] : nullptr;
  for (int64_t j = lo + warp; j <= pos; j += kWarps) {
    const int64_t r = kPaged ? int64_t{table[j / paged.block_size]} * paged.block_size + j % paged.block_size : j;
    const float* krow = k + r * p.ks + kh * p.khs;
    float s = 0.f;
    for (int64_t d = lane; d < p.dk; d += 32) s += qrow[d] * krow[d];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    s *= p.scale;
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float e = expf(s - m_new);
    l = l * corr + e;
    const float* vrow = v + r * p.vs + kh * p.vhs;
#pragma unroll
    for (int c = 0; c < kMaxDvPerLane; ++c) {
      const int64_t d = lane + 32 * c;
      acc[c] = acc[c] * corr + (d < p.dv ? e * vrow[d] : 0.f);
    }
    m = m_new;
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
#pragma unroll
  for (int c = 0; c < kMaxDvPerLane; ++c) warp_acc[warp][lane + 32 * c] = acc[c];
  __syncthreads();
  float gm = sinks ? sinks[h] : -INFINITY;
  for (int w = 0; w < kWarps; ++w) gm = fmaxf(gm, warp_m[w]);
  float denom = sinks ? expf(sinks[h] - gm) : 0.f;
  float f[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    f[w] = warp_m[w] == -INFINITY ? 0.f : expf(warp_m[w] - gm);  // a warp that saw no key adds nothing
    denom += warp_l[w] * f[w];
  }
  for (int64_t d = threadIdx.x; d < p.dv; d += blockDim.x) {
    float o = 0.f;
    for (int w = 0; w < kWarps; ++w) o += warp_acc[w][d] * f[w];
    out[item * p.dv + d] = o / denom;
  }
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
                 out.size(2) == dv && positions.numel() == t && dv <= 32 * kMaxDvPerLane,
             InvalidArgument, "cuda attention", "q ", q.describe(), " k ", k.describe(), " v ", v.describe(),
             " out ", out.describe(), " kv_len ", kv_len, " (dv at most ", 32 * kMaxDvPerLane, ")");
  if (args.sinks.defined()) {
    detail::require_device("cuda attention", "sinks", args.sinks);
    detail::require_dtype("cuda attention", "sinks", args.sinks, DType::kF32);
    SY_REQUIRE(args.sinks.numel() == heads, InvalidArgument, "cuda attention", "sinks ", args.sinks.describe());
  }
  if (t == 0 || heads == 0) return;
  AttnParams p{heads, kv_heads, dk, dv, kv_len, k.strides()[0], k.strides()[1], v.strides()[0], v.strides()[1],
               args.scale, args.window};
  Tensor bad = Tensor::zeros({1}, DType::kI32, Device::kCuda);
  attention_kernel<false><<<static_cast<unsigned>(t * heads), kWarps * 32, 0, stream()>>>(
      q.f32(), k.f32(), v.f32(), positions.i64(), args.sinks.defined() ? args.sinks.f32() : nullptr, p, PagedRows{},
      out.f32(), bad.i32());
  SY_CUDA_CHECK_LAUNCH();
  SY_REQUIRE(to_host(bad).i32()[0] == 0, InvalidArgument, "cuda attention", "a position lies outside the ",
             kv_len, " cached keys");
}

void paged_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                     const Tensor& table_start, const Tensor& block_tables, int64_t block_size,
                     const AttentionArgs& args, Tensor& out) {
  const char* op = "cuda paged_attention";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&q, &k, &v, &out}) {
    detail::require_device(op, "operand", *t);
    detail::require_dtype(op, "operand", *t, DType::kF32);
  }
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
                 dv <= 32 * kMaxDvPerLane,
             InvalidArgument, op, "q ", q.describe(), " k ", k.describe(), " v ", v.describe(), " out ",
             out.describe(), " block size ", block_size);
  if (args.sinks.defined()) {
    detail::require_device(op, "sinks", args.sinks);
    detail::require_dtype(op, "sinks", args.sinks, DType::kF32);
    SY_REQUIRE(args.sinks.numel() == heads, InvalidArgument, op, "sinks ", args.sinks.describe());
  }
  if (t == 0 || heads == 0) return;
  AttnParams p{heads, kv_heads, dk, dv, k.size(0), k.strides()[0], k.strides()[1], v.strides()[0], v.strides()[1],
               args.scale, args.window};
  PagedRows paged{table_start.i64(), block_tables.i32(), block_size};
  attention_kernel<true><<<static_cast<unsigned>(t * heads), kWarps * 32, 0, stream()>>>(
      q.f32(), k.f32(), v.f32(), positions.i64(), args.sinks.defined() ? args.sinks.f32() : nullptr, p, paged,
      out.f32(), nullptr);
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
