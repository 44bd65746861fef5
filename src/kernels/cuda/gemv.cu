// Dense bf16 GEMV for decode-sized batches: y = x W^T (+ b) (+ y) for at most kGemvMaxRows rows of x, the path
// cuda::linear takes below cuBLAS (set_dense_gemv_max_rows). A decode step's projections (q|k|v, o, a dense or
// shared MLP, the LM head) are weight streams: each weight is read once per step and the GEMM's tensor-core
// tiles, split-K passes and reduction launches buy nothing at one to four rows. Here a block owns kCols output
// columns and its four warps split the reduction: each lane streams 8-wide pieces of the kCols weight rows with
// 16-byte evict-first loads (the next piece's in flight while the current one is used) and multiplies them with
// the same 8 x values of every row (x read once per piece, not once per column); the warps' partial sums meet
// in shared memory in a fixed order. Weights are constants of a decode chain, so with programmatic launch the
// first pieces (or, with set_dense_gemv_preload, whole rows of up to 4 pieces per lane) are requested before
// the previous kernel has finished (chain_release / chain_wait). x may be
// f32: it is rounded to bf16 on load, the operand the cuBLAS path would see (its cast pass is gone too), and the
// products accumulate in f32 as cuBLAS's do, in another order. The normed form (rms_norm_linear) folds the
// RMSNorm that feeds a projection into the same pass: y = inv_rms(x) * (bf16(x * g) . w), each block summing
// the squares of the x values it reads anyway, so the norm's launch and its round trip through memory go.
#include "gemv.cuh"

#include <atomic>
#include <cstdint>

#include "op_common.cuh"

namespace sy::cuda {

namespace {

constexpr int kWarps = 4;  // splitting k: a 2048-wide row is two pieces per lane, the second in flight early
constexpr int kCols = 4;                     // output columns per block
constexpr int64_t kPiece = kWarps * 32 * 8;  // k values one step of the block covers (8 per lane)

std::atomic<int> g_max_rows{2};  // measured: level with cuBLAS at 2 rows, behind it at 4 (H100)
std::atomic<int> g_preload{1};   // set_dense_gemv_preload
std::atomic<int64_t> g_calls{0};

// The eight x values from x on, as the bf16 values a bf16 GEMM multiplies.
__device__ __forceinline__ void load_x8(const float* x, float (&v)[8]) {
  detail::load_f32x8(x, v);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = __bfloat162float(__float2bfloat16(v[i]));
}
__device__ __forceinline__ void load_x8(const __nv_bfloat16* x, float (&v)[8]) {
  detail::unpack_bf16x8(*reinterpret_cast<const uint4*>(x), v);
}

// The RMSNorm folded into a GEMV pass: its weight g (k,), f32 or bf16 (one set), and epsilon.
struct GemvNorm {
  const float* g_f = nullptr;
  const __nv_bfloat16* g_h = nullptr;
  float eps = 0.f;
};

// The eight x values from x on times g (from column `at`), rounded to bf16, and their squares added to ss.
__device__ __forceinline__ void load_x8_normed(const float* x, const GemvNorm& norm, int64_t at, float (&v)[8],
                                               float& ss) {
  float raw[8], g[8];
  detail::load_f32x8(x, raw);
  if (norm.g_f) {
    detail::load_f32x8(norm.g_f + at, g);
  } else {
    detail::unpack_bf16x8(*reinterpret_cast<const uint4*>(norm.g_h + at), g);
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    ss += raw[i] * raw[i];
    v[i] = __bfloat162float(__float2bfloat16(raw[i] * g[i]));
  }
}

// x: (m, k) X, w: (n, k) bf16, k % 8 == 0, rows 16-byte aligned; y: (m, n) Y. bias_f / bias_h: (n,) f32 or
// bf16 (at most one set). y = (accumulate ? y + x.w : x.w) + bias, rounded once into Y. kNorm (X f32): x.w
// becomes inv_rms(x) * (bf16(x * g) . w) with inv_rms(x) = 1 / sqrt(mean(x^2) + eps).
// kWhole 0: each lane streams its pieces of the weight rows, the first requested before the programmatic-launch
// wait and the next one in flight while the current one is used. kWhole 2 or 4 (k <= kWhole * kPiece): a
// lane's whole share of the rows, kWhole pieces, is requested before the wait: weights are constants, so a
// block made resident while the previous kernel still runs streams all of its weights meanwhile. Both forms
// multiply in the same order (the same results bit for bit); set_dense_gemv_preload picks one.
// The normed form is held to 96 registers (five blocks per SM, as the plain form gets by itself; unbounded it
// took 126, four blocks per SM); the plain form of four whole pieces to 128 (four blocks per SM: the 512 blocks
// of a 2048-wide o projection in one wave).
template <bool kNorm, int kWhole>
constexpr int kGemvMinBlocks = kNorm ? 5 : (kWhole > 2 ? 4 : 1);

template <typename X, typename Y, bool kNorm, int kWhole>
__global__ void __launch_bounds__(kWarps * 32, (kGemvMinBlocks<kNorm, kWhole>))
    gemv_kernel(const X* x, const __nv_bfloat16* w, const float* bias_f, const __nv_bfloat16* bias_h, Y* y, int m,
                int64_t n, int64_t k, bool accumulate, GemvNorm norm) {
  detail::chain_release();  // a decode-chain kernel: see launch_chained
  __shared__ float partial[kWarps][detail::kGemvMaxRows][kCols];
  __shared__ float partial_ss[kWarps][detail::kGemvMaxRows];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kCols;
  const int cols = static_cast<int>(n - col0 < kCols ? n - col0 : kCols);
  // Weight rows of the block's columns (past the last column: the last one again, its sums dropped).
  const __nv_bfloat16* wr[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c) wr[c] = w + (col0 + (c < cols ? c : cols - 1)) * k;
  int64_t at = (warp * 32 + lane) * 8;
  auto request = [&](uint4(&piece)[kCols], int64_t from) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      piece[c] = from < k ? __ldcs(reinterpret_cast<const uint4*>(wr[c] + from)) : make_uint4(0, 0, 0, 0);
    }
  };
  float acc[detail::kGemvMaxRows][kCols], ss[detail::kGemvMaxRows];
#pragma unroll
  for (int r = 0; r < detail::kGemvMaxRows; ++r) {
    ss[r] = 0.f;
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.f;
  }
  // The products of one piece (the weights at columns [from, from + 8) of the kCols rows) with every x row.
  auto use = [&](const uint4(&piece)[kCols], int64_t from) {
    float wf[kCols][8];
#pragma unroll
    for (int c = 0; c < kCols; ++c) detail::unpack_bf16x8(piece[c], wf[c]);
#pragma unroll
    for (int r = 0; r < detail::kGemvMaxRows; ++r) {
      if (r >= m) break;
      float xv[8];
      if constexpr (kNorm) {
        load_x8_normed(x + r * k + from, norm, from, xv, ss[r]);
      } else {
        load_x8(x + r * k + from, xv);
      }
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[r][c] += wf[c][i] * xv[i];
      }
    }
  };
  if constexpr (kWhole == 0) {
    uint4 cur[kCols];
    request(cur, at);
    detail::chain_wait();  // x (and an accumulated y) come from earlier kernels
    for (; at < k; at += kPiece) {
      uint4 next[kCols];
      request(next, at + kPiece);
      use(cur, at);
#pragma unroll
      for (int c = 0; c < kCols; ++c) cur[c] = next[c];
    }
  } else {
    uint4 piece[kWhole][kCols];
#pragma unroll
    for (int p = 0; p < kWhole; ++p) request(piece[p], at + p * kPiece);
    detail::chain_wait();  // x (and an accumulated y) come from earlier kernels
#pragma unroll
    for (int p = 0; p < kWhole; ++p) {
      if (at + p * kPiece < k) use(piece[p], at + p * kPiece);
    }
  }
#pragma unroll
  for (int r = 0; r < detail::kGemvMaxRows; ++r) {
    if (r >= m) break;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      float v = acc[r][c];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) partial[warp][r][c] = v;
    }
    if constexpr (kNorm) {
      float v = ss[r];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) partial_ss[warp][r] = v;
    }
  }
  __syncthreads();
  const int t = threadIdx.x, r = t / kCols, c = t % kCols;
  if (r >= m || c >= cols) return;
  float v = 0.f;
#pragma unroll
  for (int q = 0; q < kWarps; ++q) v += partial[q][r][c];  // the warps' k ranges in order
  if constexpr (kNorm) {
    float sum_sq = 0.f;
#pragma unroll
    for (int q = 0; q < kWarps; ++q) sum_sq += partial_ss[q][r];
    v *= 1.f / sqrtf(sum_sq / static_cast<float>(k) + norm.eps);
  }
  const int64_t out = r * n + col0 + c;
  if (accumulate) v += detail::load_f(y, out);
  if (bias_f) v += bias_f[col0 + c];
  if (bias_h) v += __bfloat162float(bias_h[col0 + c]);
  detail::store_f(y, out, v);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void set_dense_gemv_max_rows(int rows) {
  SY_REQUIRE(rows >= 0 && rows <= detail::kGemvMaxRows, InvalidArgument, "cuda set_dense_gemv_max_rows",
             "rows must be in [0, ", detail::kGemvMaxRows, "], got ", rows);
  g_max_rows.store(rows);
}

int dense_gemv_max_rows() { return g_max_rows.load(); }

void set_dense_gemv_preload(int pieces) {
  SY_REQUIRE(pieces == 1 || pieces == 2 || pieces == 4, InvalidArgument, "cuda set_dense_gemv_preload",
             "pieces must be 1, 2 or 4, got ", pieces);
  g_preload.store(pieces);
}

int dense_gemv_preload() { return g_preload.load(); }

int64_t dense_gemv_calls() { return g_calls.load(); }

namespace detail {

bool gemv_fits(const Tensor& x, const Tensor& w, const Tensor& y) {
  const int64_t m = x.size(0), k = x.size(1);
  return m >= 1 && m <= g_max_rows.load() && k % 8 == 0 && aligned16(x.raw()) && aligned16(w.raw()) &&
         y.is_contiguous() && x.is_contiguous() && w.is_contiguous();
}

namespace {

// One instantiation's launch: x (m, k) X, w (n, k) bf16, y (m, n) Y.
template <typename X, typename Y, bool kNorm, int kWhole>
void launch_one(const Tensor& x, const Tensor& w, const float* bias_f, const __nv_bfloat16* bias_h, Tensor& y,
                bool accumulate, GemvNorm norm) {
  const int64_t n = w.size(0);
  launch_chained(gemv_kernel<X, Y, kNorm, kWhole>, dim3(static_cast<unsigned>((n + kCols - 1) / kCols)),
                 kWarps * 32, 0, static_cast<const X*>(x.raw()), static_cast<const __nv_bfloat16*>(w.raw()), bias_f,
                 bias_h, static_cast<Y*>(y.raw()), static_cast<int>(x.size(0)), n, x.size(1), accumulate, norm);
}

// The form set_dense_gemv_preload picked: whole rows of up to 2 pieces (preload 2) or 4 (preload 4; the
// normed form stops at 2), streaming otherwise.
template <typename X, typename Y, bool kNorm>
void launch_typed(const Tensor& x, const Tensor& w, const float* bias_f, const __nv_bfloat16* bias_h, Tensor& y,
                  bool accumulate, GemvNorm norm) {
  const int preload = g_preload.load();
  const int64_t pieces = (x.size(1) + kPiece - 1) / kPiece;
  if (preload >= 2 && pieces <= 2) {
    launch_one<X, Y, kNorm, 2>(x, w, bias_f, bias_h, y, accumulate, norm);
    return;
  }
  if constexpr (!kNorm) {
    if (preload >= 4 && pieces <= 4) {
      launch_one<X, Y, kNorm, 4>(x, w, bias_f, bias_h, y, accumulate, norm);
      return;
    }
  }
  launch_one<X, Y, kNorm, 0>(x, w, bias_f, bias_h, y, accumulate, norm);
}

template <bool kNorm>
void launch_gemv(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate, GemvNorm norm) {
  g_calls.fetch_add(1);
  const float* bf = bias.defined() && bias.dtype() == DType::kF32 ? bias.f32() : nullptr;
  const auto* bh = bias.defined() && bias.dtype() == DType::kBF16 ? static_cast<const __nv_bfloat16*>(bias.raw())
                                                                   : nullptr;
  const bool yf = y.dtype() == DType::kF32;
  using bf16 = __nv_bfloat16;
  if (x.dtype() == DType::kF32) {
    yf ? launch_typed<float, float, kNorm>(x, w, bf, bh, y, accumulate, norm)
       : launch_typed<float, bf16, kNorm>(x, w, bf, bh, y, accumulate, norm);
  } else if constexpr (!kNorm) {  // the normed form takes f32 x only (checked by the caller)
    yf ? launch_typed<bf16, float, false>(x, w, bf, bh, y, accumulate, norm)
       : launch_typed<bf16, bf16, false>(x, w, bf, bh, y, accumulate, norm);
  }
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gemv(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate) {
  launch_gemv<false>(x, w, bias, y, accumulate, GemvNorm{});
}

bool gemv_normed_fits(const Tensor& x, const Tensor& norm_w, const Tensor& w, const Tensor& y) {
  return gemv_fits(x, w, y) && x.dtype() == DType::kF32 && aligned16(norm_w.raw()) && norm_w.is_contiguous();
}

void gemv_normed(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, const Tensor& bias, Tensor& y) {
  GemvNorm norm;
  norm.eps = eps;
  if (norm_w.dtype() == DType::kF32) {
    norm.g_f = norm_w.f32();
  } else {
    norm.g_h = static_cast<const __nv_bfloat16*>(norm_w.raw());
  }
  launch_gemv<true>(x, w, bias, y, false, norm);
}

}  // namespace detail

}  // namespace sy::cuda
