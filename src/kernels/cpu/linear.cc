// linear: y = x W^T + b with f32 activations and f32/bf16/f16 weights (W stored (out, in) as in PyTorch).
// Work is split over output features on the Switchyard thread pool; OpenBLAS runs single-threaded inside
// each slice so that only one threading system is active.
//   f32 weights:            OpenBLAS sgemm (sgemv for one row).
//   bf16/f16, few rows:     a fused convert-and-dot GEMV that streams each weight row once (decode).
//   bf16/f16, 9-1024 rows:  a fused convert-and-FMA micro-kernel (4 rows of x by 5 weight rows per tile):
//                           prefill chunks and their per-expert batches (AVX-512 builds).
//   bf16/f16, more rows:    convert a block of weight rows to f32, then sgemm on it (large prefills).
#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "cpu_common.h"
#include "switchyard/core/env.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"

namespace sy::ops {

namespace {

constexpr int64_t kSmallBatch = 8;    // rows of x handled by the fused GEMV
constexpr int64_t kConvertBlock = 64;  // weight rows converted per sgemm call
// Rows of x up to which the fused micro-kernel is used: it beat converting and sgemm at every size measured
// on the 2-core EPYC VM (n 1024, k 2048, 2 threads, 2026-12-05; docs/benchmarks.md): 3.5x at 16 rows, 1.7x
// at 64, 1.5x at 128, 1.2x at 256-1024. Larger products keep the blocked sgemm, unmeasured against it.
constexpr int64_t kFusedMaxRows = 1024;

// SY_FUSED_PREFILL_GEMM=0 sends 9-1024-row products back to convert-and-sgemm (A/B runs, a fallback).
bool fused_prefill_enabled() {
  static const bool enabled = env_flag("SY_FUSED_PREFILL_GEMM", true);
  return enabled;
}

void single_threaded_blas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

#if defined(__AVX512F__)
inline __m512 load16_as_f32(const uint16_t* p, DType dt) {
  __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (dt == DType::kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  return _mm512_cvtph_ps(raw);
}
#endif

// One activation row (decode): one weight row at a time with four independent accumulators along the row, and
// a software prefetch 1 KB ahead. Streaming a single row keeps one sequential read stream per thread, which
// the hardware prefetchers follow at full speed; interleaving four rows (four streams) measured ~25% slower
// on the EPYC VM (docs/benchmarks.md).
void gemv_half_single(const float* x, const uint16_t* w, DType dt, int64_t k, int64_t n0, int64_t n1, float* y) {
  for (int64_t j = n0; j < n1; ++j) {
    const uint16_t* row = w + j * k;
    int64_t kk = 0;
    float acc = 0.f;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    for (; kk + 64 <= k; kk += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(row + kk) + 1024, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + kk) + 1024 + 64, _MM_HINT_T0);
      a0 = _mm512_fmadd_ps(load16_as_f32(row + kk, dt), _mm512_loadu_ps(x + kk), a0);
      a1 = _mm512_fmadd_ps(load16_as_f32(row + kk + 16, dt), _mm512_loadu_ps(x + kk + 16), a1);
      a2 = _mm512_fmadd_ps(load16_as_f32(row + kk + 32, dt), _mm512_loadu_ps(x + kk + 32), a2);
      a3 = _mm512_fmadd_ps(load16_as_f32(row + kk + 48, dt), _mm512_loadu_ps(x + kk + 48), a3);
    }
    for (; kk + 16 <= k; kk += 16) a0 = _mm512_fmadd_ps(load16_as_f32(row + kk, dt), _mm512_loadu_ps(x + kk), a0);
    acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#endif
    for (; kk < k; ++kk) acc += (dt == DType::kBF16 ? bf16_to_f32(row[kk]) : f16_to_f32(row[kk])) * x[kk];
    y[j] = acc;
  }
}

// y[i, j] for i < m (m <= kSmallBatch), j in [n0, n1): one pass over each weight row.
void gemv_half(const float* x, int64_t m, const uint16_t* w, DType dt, int64_t k, int64_t n0, int64_t n1,
               float* y, int64_t n) {
  if (m == 1) {
    gemv_half_single(x, w, dt, k, n0, n1, y);
    return;
  }
  for (int64_t j = n0; j < n1; ++j) {
    const uint16_t* row = w + j * k;
    int64_t kk = 0;
    float out[kSmallBatch] = {};
#if defined(__AVX512F__)
    __m512 acc[kSmallBatch];
    for (int64_t i = 0; i < m; ++i) acc[i] = _mm512_setzero_ps();
    for (; kk + 16 <= k; kk += 16) {
      __m512 wv = load16_as_f32(row + kk, dt);
      for (int64_t i = 0; i < m; ++i) acc[i] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + i * k + kk), acc[i]);
    }
    for (int64_t i = 0; i < m; ++i) out[i] = _mm512_reduce_add_ps(acc[i]);
#endif
    for (; kk < k; ++kk) {
      float wv = dt == DType::kBF16 ? bf16_to_f32(row[kk]) : f16_to_f32(row[kk]);
      for (int64_t i = 0; i < m; ++i) out[i] += wv * x[i * k + kk];
    }
    for (int64_t i = 0; i < m; ++i) y[i * n + j] = out[i];
  }
}

#if defined(__AVX512F__)
// The first `rem` (1..15) elements of 16 as f32, the rest zero. Copied through a zero-padded buffer rather
// than read with a masked load, so that nothing past the row is touched even nominally (sanitizers check the
// whole width of a masked load).
inline __m512 load16_as_f32_tail(const uint16_t* p, DType dt, int rem) {
  alignas(32) uint16_t buf[16] = {};
  std::memcpy(buf, p, static_cast<size_t>(rem) * sizeof(uint16_t));
  return load16_as_f32(buf, dt);
}
inline __m512 load16_f32_tail(const float* p, int rem) {
  alignas(64) float buf[16] = {};
  std::memcpy(buf, p, static_cast<size_t>(rem) * sizeof(float));
  return _mm512_load_ps(buf);
}

// y[i, c] for kRows rows of x and kCols weight rows: the weights converted to f32 in registers as they stream,
// each x vector feeding kCols FMAs and each weight vector kRows (kRows * kCols accumulators). 4 x 5 measured
// fastest of 2x8 .. 12x2 on the EPYC VM (210 against 155 GFLOP/s for 8 x 2 on two cores, 2026-12-05).
template <int kRows, int kCols>
void fused_tile(const float* x, const uint16_t* w, DType dt, int64_t k, float* y, int64_t y_stride) {
  __m512 acc[kRows][kCols];
  for (int i = 0; i < kRows; ++i) {
    for (int c = 0; c < kCols; ++c) acc[i][c] = _mm512_setzero_ps();
  }
  int64_t kk = 0;
  for (; kk + 16 <= k; kk += 16) {
    __m512 wv[kCols];
    for (int c = 0; c < kCols; ++c) wv[c] = load16_as_f32(w + c * k + kk, dt);
    for (int i = 0; i < kRows; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * k + kk);
      for (int c = 0; c < kCols; ++c) acc[i][c] = _mm512_fmadd_ps(wv[c], xv, acc[i][c]);
    }
  }
  if (kk < k) {  // the last 1-15 columns, zero-padded
    const int rem = static_cast<int>(k - kk);
    __m512 wv[kCols];
    for (int c = 0; c < kCols; ++c) wv[c] = load16_as_f32_tail(w + c * k + kk, dt, rem);
    for (int i = 0; i < kRows; ++i) {
      const __m512 xv = load16_f32_tail(x + i * k + kk, rem);
      for (int c = 0; c < kCols; ++c) acc[i][c] = _mm512_fmadd_ps(wv[c], xv, acc[i][c]);
    }
  }
  for (int i = 0; i < kRows; ++i) {
    for (int c = 0; c < kCols; ++c) y[i * y_stride + c] = _mm512_reduce_add_ps(acc[i][c]);
  }
}

constexpr int kTileCols = 5;  // weight rows per tile

// kRows rows of x against weight rows [n0, n1), in tiles of kTileCols weight rows (the last 1-4 narrower).
template <int kRows>
void fused_rows(const float* x, const uint16_t* w, DType dt, int64_t k, int64_t n0, int64_t n1, float* y, int64_t n) {
  int64_t j = n0;
  for (; j + kTileCols <= n1; j += kTileCols) fused_tile<kRows, kTileCols>(x, w + j * k, dt, k, y + j, n);
  switch (n1 - j) {
    case 4: fused_tile<kRows, 4>(x, w + j * k, dt, k, y + j, n); break;
    case 3: fused_tile<kRows, 3>(x, w + j * k, dt, k, y + j, n); break;
    case 2: fused_tile<kRows, 2>(x, w + j * k, dt, k, y + j, n); break;
    case 1: fused_tile<kRows, 1>(x, w + j * k, dt, k, y + j, n); break;
    default: break;
  }
}

// y[i, j] for i < m (kSmallBatch < m <= kFusedMaxRows), j in [n0, n1): passes of 4 rows of x, each rereading
// the slice's weight rows (from cache: parallel_for hands out slices of 64 rows and more).
void gemm_half_fused(const float* x, int64_t m, const uint16_t* w, DType dt, int64_t k, int64_t n0, int64_t n1,
                     float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) fused_rows<4>(x + i * k, w, dt, k, n0, n1, y + i * n, n);
  switch (m - i) {  // the last 1-3 rows
    case 3: fused_rows<3>(x + i * k, w, dt, k, n0, n1, y + i * n, n); break;
    case 2: fused_rows<2>(x + i * k, w, dt, k, n0, n1, y + i * n, n); break;
    case 1: fused_rows<1>(x + i * k, w, dt, k, n0, n1, y + i * n, n); break;
    default: break;
  }
}
#endif

// Converted-block path: W rows [n0, n1) -> f32 scratch -> sgemm.
void gemm_half(const float* x, int64_t m, const uint16_t* w, DType dt, int64_t k, int64_t n0, int64_t n1,
               float* y, int64_t n) {
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(kConvertBlock * k));
  for (int64_t b = n0; b < n1; b += kConvertBlock) {
    int64_t rows = std::min(kConvertBlock, n1 - b);
    for (int64_t r = 0; r < rows; ++r) cpu::convert_row_to_f32(w + (b + r) * k, dt, scratch.data() + r * k, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(rows),
                static_cast<int>(k), 1.f, x, static_cast<int>(k), scratch.data(), static_cast<int>(k), 0.f, y + b,
                static_cast<int>(n));
  }
}

}  // namespace

namespace {

void check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& y) {
  cpu::require_cpu(op, x);
  cpu::require_cpu(op, w);
  cpu::require_f32_contiguous(op, "x", x);
  cpu::require_f32_contiguous(op, "y", y);
  SY_CHECK(x.dim() == 2 && w.dim() == 2 && y.dim() == 2, op, ": x ", x.describe(), " w ", w.describe());
  SY_CHECK(w.is_contiguous(), op, ": weight must be contiguous, got ", w.describe());
  SY_CHECK(w.dtype() == DType::kF32 || w.dtype() == DType::kBF16 || w.dtype() == DType::kF16, op,
           ": unsupported weight dtype ", w.describe());
  SY_CHECK(w.size(1) == x.size(1) && y.size(0) == x.size(0) && y.size(1) == w.size(0), op, ": x ", x.describe(),
           " w ", w.describe(), " y ", y.describe());
}

// Columns [n0, n1) of y = x W^T on the calling thread. x: (m, k); y: (m, n) with n = w's rows.
void linear_slice(const float* xp, int64_t m, const Tensor& w, int64_t k, int64_t n0, int64_t n1, float* yp,
                  int64_t n) {
  const DType dt = w.dtype();
  if (dt == DType::kF32) {
    const float* wp = w.f32();
    if (m == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n1 - n0), static_cast<int>(k), 1.f, wp + n0 * k,
                  static_cast<int>(k), xp, 1, 0.f, yp + n0, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n1 - n0),
                  static_cast<int>(k), 1.f, xp, static_cast<int>(k), wp + n0 * k, static_cast<int>(k), 0.f, yp + n0,
                  static_cast<int>(n));
    }
    return;
  }
  const uint16_t* wp = w.u16();
  if (m <= kSmallBatch) {
    gemv_half(xp, m, wp, dt, k, n0, n1, yp, n);
    return;
  }
#if defined(__AVX512F__)
  if (m <= kFusedMaxRows && fused_prefill_enabled()) {
    gemm_half_fused(xp, m, wp, dt, k, n0, n1, yp, n);
    return;
  }
#endif
  gemm_half(xp, m, wp, dt, k, n0, n1, yp, n);
}

}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  check_linear("linear", x, w, y);
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  if (m == 0 || n == 0) return;
  single_threaded_blas();
  // Slices of output features, in multiples of 16 so that threads write separate cache lines.
  const int64_t grain = std::max<int64_t>(16, (m > kSmallBatch ? kConvertBlock : 16));
  parallel_for(n, [&](int64_t n0, int64_t n1) { linear_slice(x.f32(), m, w, k, n0, n1, y.f32(), n); }, grain);
  if (bias.defined()) {
    SY_CHECK(bias.numel() == n, "linear: bias ", bias.describe(), " for ", n, " outputs");
    std::vector<float> b(static_cast<size_t>(n));
    cpu::convert_row_to_f32(bias.raw(), bias.dtype(), b.data(), n);
    float* yp = y.f32();
    for (int64_t i = 0; i < m; ++i) {
      float* row = yp + i * n;
      for (int64_t j = 0; j < n; ++j) row[j] += b[j];
    }
  }
}

void linear_columns(const Tensor& x, const Tensor& w, int64_t n0, int64_t n1, Tensor& y) {
  check_linear("linear_columns", x, w, y);
  SY_CHECK(0 <= n0 && n0 <= n1 && n1 <= w.size(0), "linear_columns: columns [", n0, ", ", n1, ") of ", w.size(0));
  if (x.size(0) == 0 || n0 == n1) return;
  single_threaded_blas();
  linear_slice(x.f32(), x.size(0), w, x.size(1), n0, n1, y.f32(), w.size(0));
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  Tensor y = Tensor::empty({x.size(0), w.size(0)}, DType::kF32);
  linear(x, w, bias, y);
  return y;
}

}  // namespace sy::ops
