// Reproducible random bf16 tensors for the benchmarks' synthetic models (bench_decode, bench_gpu_decode).
#pragma once

#include <cmath>
#include <cstdint>

#include "switchyard/core/dtype.h"
#include "switchyard/core/tensor.h"
#include "switchyard/core/thread_pool.h"

// Counter-based generator: value i of stream `seed` depends only on (seed, i), so tensors are reproducible
// whatever the thread count. Sum of four 16-bit uniforms (Irwin-Hall), scaled to unit variance.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline sy::Tensor random_bf16(uint64_t seed, const sy::Shape& shape, float scale, float offset) {
  sy::Tensor t = sy::Tensor::empty(shape, sy::DType::kBF16);
  uint16_t* p = t.u16();
  const uint64_t key = mix64(seed * 0x9e3779b97f4a7c15ull + 1);
  // Sum of four uniforms in [0, 65536): mean 131070, variance 4 * 65536^2 / 12.
  const float mean = 4.f * 32767.5f, inv_sd = 1.f / (65536.f * std::sqrt(4.f / 12.f));
  sy::parallel_for(t.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint64_t r = mix64(key + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull);
      float s = static_cast<float>((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
      p[i] = sy::f32_to_bf16(offset + scale * (s - mean) * inv_sd);
    }
  }, 1 << 16);
  return t;
}


// (rows, cols) f32 activations with unit-variance entries (same generator).
inline sy::Tensor bench_random_f32(int64_t rows, int64_t cols, uint64_t seed = 7) {
  sy::Tensor b = random_bf16(seed, {rows, cols}, 1.f, 0.f);
  return b.to(sy::DType::kF32);
}
