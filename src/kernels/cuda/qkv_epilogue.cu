// The GQA projections' epilogue in one launch: from the rows of the fused q|k|v GEMM, per token (block column
// x) and head (one warp each, kWarps heads per block row y), the bias, the clip, the per-head RMSNorm of q
// and k, RoPE on q and k, then q, k and v out as f32 and the new key and value rows into the KV pool. It
// replaces add_bias, clamp_inplace, two rms_norm, two apply_rope and two scatter_rows launches per layer with
// the same operations in the same order (f32 results equal to rounding: the norm's sum of squares adds in
// another order), since a decode step is a chain of small launches whose count sets its latency.
#include <cmath>
#include <initializer_list>

#include "qkv_head.cuh"

namespace sy::cuda {

namespace {

constexpr int kWarps = 4;  // heads per block: Qwen3-30B-A3B's 32 + 4 + 4 take 10 blocks a token

template <typename KV>
__global__ void __launch_bounds__(kWarps * 32) qkv_epilogue_kernel(
    const float* qkv, const float* bias, const float* q_norm, const float* k_norm, const int64_t* positions,
    const float* inv_freq, const int64_t* rows, detail::QkvHeadParams p, int max_dim, float* q3, float* k3,
    float* v3, KV* keys, KV* values) {
  // A decode-chain kernel (see launch_chained). Before the wait, what no kernel of the chain writes: the
  // token's position and pool row (uploaded before the step), the norm weights, and the token's rotary
  // cosines and sines, into shared memory; after it only the q|k|v row is loaded.
  detail::chain_release();
  extern __shared__ float scratch[];  // one head row per warp, then q_norm, k_norm (d each), cos, sin (half each)
  float* q_norm_s = scratch + kWarps * max_dim;
  float* k_norm_s = q_norm_s + p.d;
  float* cos_s = k_norm_s + p.d;
  float* sin_s = cos_s + p.half;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* buf = scratch + warp * max_dim;
  const int64_t i = blockIdx.x;
  const int64_t qk_cols = static_cast<int64_t>(p.heads + p.kv_heads) * p.d;
  const float* row = qkv + i * (qk_cols + static_cast<int64_t>(p.kv_heads) * p.dv);
  const int64_t pool_row = rows[i];
  detail::stage_qkv_tables(q_norm, k_norm, inv_freq, static_cast<float>(positions[i]), p, q_norm_s, k_norm_s, cos_s,
                           sin_s);
  detail::chain_wait();
  __syncthreads();  // the staged tables
  for (int hh = blockIdx.y * kWarps + warp; hh < p.heads + 2 * p.kv_heads; hh += gridDim.y * kWarps) {
    const bool is_q = hh < p.heads, is_k = !is_q && hh < p.heads + p.kv_heads, is_v = !is_q && !is_k;
    const int width = is_v ? p.dv : p.d;
    const int64_t col0 = is_v ? qk_cols + static_cast<int64_t>(hh - p.heads - p.kv_heads) * p.dv
                              : static_cast<int64_t>(hh) * p.d;
    const float* norm = is_q ? (q_norm ? q_norm_s : nullptr) : (is_k && k_norm ? k_norm_s : nullptr);
    detail::transform_head(row, bias, col0, width, norm, !is_v, cos_s, sin_s, p, buf);
    if (is_q) {
      float* dst = q3 + (i * p.heads + hh) * p.d;
      for (int j = lane; j < width; j += 32) dst[j] = buf[j];
    } else {
      const int kh = is_k ? hh - p.heads : hh - p.heads - p.kv_heads;
      float* dst = (is_k ? k3 : v3) + (i * p.kv_heads + kh) * width;
      KV* pool = (is_k ? keys : values) + (pool_row * p.kv_heads + kh) * width;
      for (int j = lane; j < width; j += 32) {
        dst[j] = buf[j];
        detail::store_f(pool, j, buf[j]);
      }
    }
    __syncwarp();  // buf is reused by the warp's next head
  }
}

}  // namespace

void qkv_epilogue(const Tensor& qkv, const QkvEpilogueArgs& args, const Tensor& positions, const DeviceRope& rope,
                  const Tensor& rows, Tensor& q3, Tensor& k3, Tensor& v3, Tensor& keys, Tensor& values) {
  const char* op = "cuda qkv_epilogue";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&qkv, &q3, &k3, &v3}) {
    detail::require_device(op, "operand", *t);
    detail::require_dtype(op, "operand", *t, DType::kF32);
  }
  detail::require_device(op, "keys", keys);
  detail::require_device(op, "values", values);
  detail::require_dtype(op, "keys", keys, DType::kF32, DType::kBF16);
  SY_REQUIRE(values.dtype() == keys.dtype(), InvalidArgument, op, "keys ", keys.describe(), " values ",
             values.describe());
  detail::require_device(op, "positions", positions);
  detail::require_dtype(op, "positions", positions, DType::kI64, DType::kI64);
  detail::require_device(op, "rows", rows);
  detail::require_dtype(op, "rows", rows, DType::kI64, DType::kI64);
  const int64_t n = qkv.dim() == 2 ? qkv.size(0) : -1;
  const int64_t heads = q3.dim() == 3 ? q3.size(1) : 0, d = q3.dim() == 3 ? q3.size(2) : 0;
  const int64_t kv_heads = k3.dim() == 3 ? k3.size(1) : 0, dv = v3.dim() == 3 ? v3.size(2) : 0;
  SY_REQUIRE(n >= 0 && q3.dim() == 3 && k3.dim() == 3 && v3.dim() == 3 && q3.size(0) == n && k3.size(0) == n &&
                 v3.size(0) == n && k3.size(2) == d && v3.size(1) == kv_heads && kv_heads > 0 && heads > 0 &&
                 qkv.size(1) == (heads + kv_heads) * d + kv_heads * dv && positions.numel() == n &&
                 rows.numel() == n && keys.dim() == 3 && values.dim() == 3 && keys.size(1) == kv_heads &&
                 keys.size(2) == d && values.size(1) == kv_heads && values.size(2) == dv &&
                 rope.rotary_dim <= d && rope.rotary_dim % 2 == 0 && rope.inv_freq.defined() &&
                 rope.inv_freq.numel() == rope.rotary_dim / 2,
             InvalidArgument, op, "qkv ", qkv.describe(), " q ", q3.describe(), " k ", k3.describe(), " v ",
             v3.describe(), " keys ", keys.describe(), " values ", values.describe(), " rotary dim ",
             rope.rotary_dim);
  detail::check_qkv_epilogue_vectors(op, args, qkv.size(1), d);
  if (n == 0) return;
  const detail::QkvHeadParams p{static_cast<int>(heads), static_cast<int>(kv_heads), static_cast<int>(d),
                                static_cast<int>(dv), args.clip, args.eps, rope.rotary_dim / 2, rope.interleaved,
                                rope.attention_scaling};
  const int max_dim = static_cast<int>(d > dv ? d : dv);
  const size_t smem = sizeof(float) * (kWarps * max_dim + 2 * p.d + 2 * p.half);
  const float* bias = args.bias.defined() ? args.bias.f32() : nullptr;
  const float* qn = args.q_norm.defined() ? args.q_norm.f32() : nullptr;
  const float* kn = args.k_norm.defined() ? args.k_norm.f32() : nullptr;
  // A block per token and kWarps heads: at batch 1 the heads' dependent load, norm and rotary chains run side
  // by side on several SMs instead of one after another in one block.
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((heads + 2 * kv_heads + kWarps - 1) / kWarps));
  if (keys.dtype() == DType::kBF16) {
    detail::launch_chained(qkv_epilogue_kernel<__nv_bfloat16>, grid, kWarps * 32, smem, qkv.f32(),
                           bias, qn, kn, positions.i64(), rope.inv_freq.f32(), rows.i64(), p, max_dim, q3.f32(), k3.f32(),
                           v3.f32(), static_cast<__nv_bfloat16*>(keys.raw()), static_cast<__nv_bfloat16*>(values.raw()));
  } else {
    detail::launch_chained(qkv_epilogue_kernel<float>, grid, kWarps * 32, smem, qkv.f32(), bias,
                           qn, kn, positions.i64(), rope.inv_freq.f32(), rows.i64(), p, max_dim, q3.f32(), k3.f32(), v3.f32(),
                           keys.f32(), values.f32());
  }
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
