// Rotary position embeddings: inverse-frequency tables for default, linear, dynamic, llama3 and YaRN scaling
// (as Hugging Face's rope utilities compute them), and the in-place rotation (half-split or interleaved pairs).
#include <algorithm>
#include <cmath>

#include "cpu_common.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"

namespace sy::ops {

namespace {
double yarn_get_mscale(double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }
}  // namespace

RopeTable make_rope_table(const RopeConfig& rope, int head_dim, int64_t max_position) {
  RopeTable t;
  t.rotary_dim = static_cast<int>(head_dim * rope.partial_rotary_factor);
  t.rotary_dim -= t.rotary_dim % 2;
  t.interleaved = rope.interleaved;
  const int half = t.rotary_dim / 2;
  const double dim = t.rotary_dim;
  // Base frequencies in float as transformers computes them: 1 / base^(2i/dim).
  std::vector<double> base(half);
  for (int i = 0; i < half; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    base[i] = 1.0 / std::pow(rope.theta, static_cast<double>(exponent));
  }
  t.inv_freq.resize(half);
  switch (rope.type) {
    case RopeType::kDefault:
      for (int i = 0; i < half; ++i) t.inv_freq[i] = static_cast<float>(base[i]);
      break;
    case RopeType::kLinear:
      for (int i = 0; i < half; ++i) t.inv_freq[i] = static_cast<float>(base[i] / rope.factor);
      break;
    case RopeType::kDynamic: {
      // At load time the sequence fits the original context, so the frequencies are the defaults.
      for (int i = 0; i < half; ++i) t.inv_freq[i] = static_cast<float>(base[i]);
      break;
    }
    case RopeType::kLlama3: {
      const double old_ctx = rope.original_max_position > 0 ? rope.original_max_position : 8192.0;
      const double low_wavelen = old_ctx / rope.low_freq_factor;
      const double high_wavelen = old_ctx / rope.high_freq_factor;
      for (int i = 0; i < half; ++i) {
        double wavelen = 2 * M_PI / base[i];
        double f = base[i];
        if (wavelen > low_wavelen) {
          f = base[i] / rope.factor;
        } else if (wavelen >= high_wavelen) {
          double smooth = (old_ctx / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
          f = (1 - smooth) * base[i] / rope.factor + smooth * base[i];
        }
        t.inv_freq[i] = static_cast<float>(f);
      }
      break;
    }
    case RopeType::kYarn: {
      const double factor = rope.factor;
      const double orig = rope.original_max_position > 0 ? rope.original_max_position
                                                          : static_cast<double>(max_position);
      if (rope.attention_factor > 0) {
        t.attention_scaling = static_cast<float>(rope.attention_factor);
      } else if (rope.mscale > 0 && rope.mscale_all_dim > 0) {
        t.attention_scaling = static_cast<float>(yarn_get_mscale(factor, rope.mscale) / yarn_get_mscale(factor, rope.mscale_all_dim));
      } else {
        t.attention_scaling = static_cast<float>(yarn_get_mscale(factor, 1.0));
      }
      auto correction_dim = [&](double rotations) {
        return dim * std::log(orig / (rotations * 2 * M_PI)) / (2 * std::log(rope.theta));
      };
      double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
      if (rope.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, dim - 1);
      if (low == high) high += 0.001;
      for (int i = 0; i < half; ++i) {
        double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        double extrapolation_factor = 1.0 - ramp;
        double interpolation = base[i] / factor, extrapolation = base[i];
        t.inv_freq[i] = static_cast<float>(interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor);
      }
      break;
    }
  }
  return t;
}

void apply_rope(Tensor& x, const std::vector<int64_t>& positions, const RopeTable& table) {
  cpu::require_cpu("rope", x);
  SY_CHECK(x.dtype() == DType::kF32 && x.dim() == 3 && x.size(0) == static_cast<int64_t>(positions.size()),
           "rope: x ", x.describe(), " for ", positions.size(), " positions");
  const int64_t t = x.size(0), heads = x.size(1), d = x.size(2);
  SY_CHECK(table.rotary_dim <= d, "rope: rotary dim ", table.rotary_dim, " > head dim ", d);
  const int half = table.rotary_dim / 2;
  const int64_t s0 = x.strides()[0], s1 = x.strides()[1];
  SY_CHECK(x.strides()[2] == 1, "rope: last dimension must be contiguous");
  float* base = x.f32();
  parallel_for(t, [&](int64_t a, int64_t b) {
    std::vector<float> cs(half), sn(half);
    for (int64_t i = a; i < b; ++i) {
      for (int f = 0; f < half; ++f) {
        float angle = static_cast<float>(positions[i]) * table.inv_freq[f];
        cs[f] = static_cast<float>(std::cos(static_cast<double>(angle))) * table.attention_scaling;
        sn[f] = static_cast<float>(std::sin(static_cast<double>(angle))) * table.attention_scaling;
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = base + i * s0 + h * s1;
        for (int f = 0; f < half; ++f) {
          int64_t i0 = table.interleaved ? 2 * f : f;
          int64_t i1 = table.interleaved ? 2 * f + 1 : f + half;
          float x0 = v[i0], x1 = v[i1];
          v[i0] = x0 * cs[f] - x1 * sn[f];
          v[i1] = x1 * cs[f] + x0 * sn[f];
        }
      }
    }
  });
}

}  // namespace sy::ops
