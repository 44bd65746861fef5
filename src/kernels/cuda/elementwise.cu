// CUDA rms_norm, apply_rope (both layouts) and silu_mul: memory-bound row kernels, f32 arithmetic.
// Not here: fusion with the neighbouring GEMMs, vectorised 16-byte loads (speed work left).
#include <cmath>

#include "op_common.cuh"

namespace sy::cuda {

using detail::load_f;

namespace {

// One block per row; block-wide sum of squares through shared memory. Writes y (f32) and/or yb (the same
// values rounded to bf16) where given. A thread's first kNormPer weights are loaded before the wait on the
// previous kernel (constants of the chain) and its first kNormPer x values are kept in registers, so after
// the sum only arithmetic and stores remain (a Qwen3-30B-A3B row: two of each per thread); wider rows read
// the rest as they go.
constexpr int kNormPer = 8;
template <typename W>
__global__ void rms_norm_kernel(const float* x, const W* w, float* y, __nv_bfloat16* yb, int64_t d, float eps) {
  __shared__ float partial[32];
  const int64_t row = blockIdx.x, step = blockDim.x, far = step * kNormPer;
  float wv[kNormPer], xv[kNormPer];
  detail::chain_release();  // a decode-chain kernel: see launch_chained
#pragma unroll
  for (int u = 0; u < kNormPer; ++u) {
    const int64_t j = threadIdx.x + u * step;
    wv[u] = j < d ? load_f(w, j) : 0.f;
  }
  detail::chain_wait();
  const float* xr = x + row * d;
  float ss = 0.f;
#pragma unroll
  for (int u = 0; u < kNormPer; ++u) {
    const int64_t j = threadIdx.x + u * step;
    xv[u] = j < d ? xr[j] : 0.f;
  }
#pragma unroll
  for (int u = 0; u < kNormPer; ++u) ss += xv[u] * xv[u];  // the padding adds exact zeros
  for (int64_t j = threadIdx.x + far; j < d; j += step) ss += xr[j] * xr[j];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float inv = 1.f / sqrtf(partial[0] / static_cast<float>(d) + eps);
  auto put = [&](int64_t j, float o) {
    if (y) y[row * d + j] = o;
    if (yb) yb[row * d + j] = __float2bfloat16(o);
  };
#pragma unroll
  for (int u = 0; u < kNormPer; ++u) {
    const int64_t j = threadIdx.x + u * step;
    if (j < d) put(j, xv[u] * inv * wv[u]);
  }
  for (int64_t j = threadIdx.x + far; j < d; j += step) put(j, xr[j] * inv * load_f(w, j));
}

// One thread per (token, head, frequency) pair. The angle is rounded to f32 as the CPU reference does, and its
// cosine and sine taken in f64, so both backends rotate by the same numbers.
__global__ void rope_kernel(float* x, const int64_t* positions, const float* inv_freq, int64_t t, int64_t heads,
                            int64_t d, int half, bool interleaved, float scaling) {
  const int64_t n = t * heads * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    const int f = static_cast<int>(idx % half);
    const int64_t th = idx / half;  // token * heads + head
    const int64_t i = th / heads;
    const float angle = static_cast<float>(positions[i]) * inv_freq[f];
    const float c = static_cast<float>(cos(static_cast<double>(angle))) * scaling;
    const float s = static_cast<float>(sin(static_cast<double>(angle))) * scaling;
    float* v = x + th * d;
    const int64_t i0 = interleaved ? 2 * f : f, i1 = interleaved ? 2 * f + 1 : f + half;
    const float x0 = v[i0], x1 = v[i1];
    v[i0] = x0 * c - x1 * s;
    v[i1] = x1 * c + x0 * s;
  }
}

template <typename T>
__global__ void silu_mul_kernel(const T* g, const T* u, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float gv = load_f(g, i);
    detail::store_f(out, i, gv / (1.f + expf(-gv)) * load_f(u, i));
  }
}

// gpt-oss: g = min(gate, limit); u = clamp(up, -limit, limit); out = (u + 1) * g * sigmoid(alpha g).
template <typename T>
__global__ void clamped_swiglu_kernel(const T* gate, const T* up, T* out, int64_t n, float alpha, float limit) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float g = fminf(load_f(gate, i), limit);
    const float u = fminf(fmaxf(load_f(up, i), -limit), limit);
    detail::store_f(out, i, (u + 1.f) * g / (1.f + expf(-alpha * g)));
  }
}

}  // namespace

void clamped_swiglu(const Tensor& gate, const Tensor& up, float alpha, float limit, Tensor& out) {
  detail::require_device("cuda clamped_swiglu", "gate", gate);
  detail::require_device("cuda clamped_swiglu", "up", up);
  detail::require_device("cuda clamped_swiglu", "out", out);
  detail::require_dtype("cuda clamped_swiglu", "gate", gate, DType::kF32, DType::kBF16);
  SY_REQUIRE(up.dtype() == gate.dtype() && out.dtype() == gate.dtype() && gate.shape() == up.shape() &&
                 gate.shape() == out.shape(),
             InvalidArgument, "cuda clamped_swiglu", "gate ", gate.describe(), " up ", up.describe(), " out ",
             out.describe());
  const int64_t n = gate.numel();
  if (n == 0) return;
  if (gate.dtype() == DType::kF32) {
    clamped_swiglu_kernel<<<detail::blocks_for(n, 256), 256, 0, stream()>>>(gate.f32(), up.f32(), out.f32(), n, alpha,
                                                                            limit);
  } else {
    using bf = __nv_bfloat16;
    clamped_swiglu_kernel<<<detail::blocks_for(n, 256), 256, 0, stream()>>>(
        static_cast<const bf*>(gate.raw()), static_cast<const bf*>(up.raw()), static_cast<bf*>(out.raw()), n, alpha,
        limit);
  }
  SY_CUDA_CHECK_LAUNCH();
}

namespace {

// y and/or yb (either may be null) = rms_norm(x) * w, one launch.
void launch_rms_norm(const Tensor& x, const Tensor& w, float eps, float* y, __nv_bfloat16* yb) {
  const int64_t m = x.size(0), d = x.size(1);
  if (m == 0) return;
  const int threads = d >= 1024 ? 1024 : 256;
  if (w.dtype() == DType::kF32) {
    detail::launch_chained(rms_norm_kernel<float>, static_cast<unsigned>(m), threads, 0, x.f32(), w.f32(), y, yb, d,
                           eps);
  } else {
    detail::launch_chained(rms_norm_kernel<__nv_bfloat16>, static_cast<unsigned>(m), threads, 0, x.f32(),
                           reinterpret_cast<const __nv_bfloat16*>(w.raw()), y, yb, d, eps);
  }
  SY_CUDA_CHECK_LAUNCH();
}

void check_rms_norm(const char* op, const Tensor& x, const Tensor& w) {
  detail::require_device(op, "x", x);
  detail::require_device(op, "w", w);
  detail::require_dtype(op, "x", x, DType::kF32);
  detail::require_dtype(op, "w", w, DType::kF32, DType::kBF16);
  SY_REQUIRE(x.dim() == 2 && w.numel() == x.size(1), InvalidArgument, op, "shapes x ", x.describe(), " w ",
             w.describe());
}

}  // namespace

void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  check_rms_norm("cuda rms_norm", x, w);
  detail::require_device("cuda rms_norm", "y", y);
  detail::require_dtype("cuda rms_norm", "y", y, DType::kF32);
  SY_REQUIRE(y.shape() == x.shape(), InvalidArgument, "cuda rms_norm", "x ", x.describe(), " y ", y.describe());
  launch_rms_norm(x, w, eps, y.f32(), nullptr);
}

void rms_norm_dual(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& yb) {
  const char* op = "cuda rms_norm_dual";
  check_rms_norm(op, x, w);
  detail::require_device(op, "yb", yb);
  detail::require_dtype(op, "yb", yb, DType::kBF16, DType::kBF16);
  SY_REQUIRE(yb.shape() == x.shape(), InvalidArgument, op, "x ", x.describe(), " yb ", yb.describe());
  if (y.defined()) {
    detail::require_device(op, "y", y);
    detail::require_dtype(op, "y", y, DType::kF32);
    SY_REQUIRE(y.shape() == x.shape(), InvalidArgument, op, "x ", x.describe(), " y ", y.describe());
  }
  launch_rms_norm(x, w, eps, y.defined() ? y.f32() : nullptr, static_cast<__nv_bfloat16*>(yb.raw()));
}

DeviceRope upload_rope(const ops::RopeTable& table) {
  SY_REQUIRE(static_cast<int>(table.inv_freq.size()) == table.rotary_dim / 2, InvalidArgument, "cuda rope",
             "rope table of rotary dim ", table.rotary_dim, " has ", table.inv_freq.size(), " frequencies");
  DeviceRope r;
  r.inv_freq = to_device(Tensor::from_vector({static_cast<int64_t>(table.inv_freq.size())}, table.inv_freq));
  r.rotary_dim = table.rotary_dim;
  r.interleaved = table.interleaved;
  r.attention_scaling = table.attention_scaling;
  return r;
}

void apply_rope(Tensor& x, const Tensor& positions, const DeviceRope& rope) {
  detail::require_device("cuda rope", "x", x);
  detail::require_device("cuda rope", "positions", positions);
  detail::require_dtype("cuda rope", "x", x, DType::kF32);
  detail::require_dtype("cuda rope", "positions", positions, DType::kI64, DType::kI64);
  SY_REQUIRE(x.dim() == 3 && positions.numel() == x.size(0) && rope.rotary_dim <= x.size(2) &&
                 rope.inv_freq.defined() && rope.inv_freq.numel() == rope.rotary_dim / 2,
             InvalidArgument, "cuda rope", "x ", x.describe(), " positions ", positions.describe(),
             " rotary dim ", rope.rotary_dim);
  const int half = rope.rotary_dim / 2;
  const int64_t n = x.size(0) * x.size(1) * half;
  if (n == 0) return;
  rope_kernel<<<detail::blocks_for(n, 256), 256, 0, stream()>>>(x.f32(), positions.i64(), rope.inv_freq.f32(),
                                                                 x.size(0), x.size(1), x.size(2), half,
                                                                 rope.interleaved, rope.attention_scaling);
  SY_CUDA_CHECK_LAUNCH();
}

void apply_rope(Tensor& x, const Tensor& positions, const ops::RopeTable& table) {
  apply_rope(x, positions, upload_rope(table));
}

void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  detail::require_device("cuda silu_mul", "gate", gate);
  detail::require_device("cuda silu_mul", "up", up);
  detail::require_device("cuda silu_mul", "out", out);
  detail::require_dtype("cuda silu_mul", "gate", gate, DType::kF32, DType::kBF16);
  SY_REQUIRE(up.dtype() == gate.dtype() && out.dtype() == gate.dtype() && gate.shape() == up.shape() &&
                 gate.shape() == out.shape(),
             InvalidArgument, "cuda silu_mul", "gate ", gate.describe(), " up ", up.describe(), " out ",
             out.describe());
  const int64_t n = gate.numel();
  if (n == 0) return;
  if (gate.dtype() == DType::kF32) {
    silu_mul_kernel<<<detail::blocks_for(n, 256), 256, 0, stream()>>>(gate.f32(), up.f32(), out.f32(), n);
  } else {
    using bf = __nv_bfloat16;
    silu_mul_kernel<<<detail::blocks_for(n, 256), 256, 0, stream()>>>(
        static_cast<const bf*>(gate.raw()), static_cast<const bf*>(up.raw()), static_cast<bf*>(out.raw()), n);
  }
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
