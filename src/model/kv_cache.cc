// KvCache: per-layer f32 key/value buffers of one sequence, grown by doubling.
#include "switchyard/model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "switchyard/core/error.h"

namespace sy {

namespace {
Shape key_shape(const ModelConfig& c, int64_t rows) {
  const AttentionConfig& a = c.attention;
  return {rows, a.mla ? a.num_heads : a.num_kv_heads, a.head_dim};
}
Shape value_shape(const ModelConfig& c, int64_t rows) {
  const AttentionConfig& a = c.attention;
  return {rows, a.mla ? a.num_heads : a.num_kv_heads, a.v_head_dim};
}
Tensor grow(const Tensor& old, Shape shape, int64_t keep_rows) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  if (keep_rows > 0) {
    std::memcpy(t.raw(), old.raw(), static_cast<size_t>(keep_rows * old.numel() / old.size(0)) * sizeof(float));
  }
  return t;
}
}  // namespace

KvCache::KvCache(const ModelConfig& config, int64_t capacity) {
  capacity_ = std::max<int64_t>(capacity, 1);
  for (int i = 0; i < config.num_layers; ++i) {
    k_.push_back(Tensor::empty(key_shape(config, capacity_), DType::kF32));
    v_.push_back(Tensor::empty(value_shape(config, capacity_), DType::kF32));
  }
}

void KvCache::reserve(int64_t n) {
  if (n <= capacity_) return;
  int64_t cap = std::max(n, capacity_ * 2);
  for (size_t i = 0; i < k_.size(); ++i) {
    Shape ks = k_[i].shape(), vs = v_[i].shape();
    ks[0] = vs[0] = cap;
    k_[i] = grow(k_[i], ks, length_);
    v_[i] = grow(v_[i], vs, length_);
  }
  capacity_ = cap;
}

void KvCache::set_length(int64_t n) {
  SY_CHECK(n >= 0 && n <= capacity_, "KvCache::set_length ", n, " of capacity ", capacity_);
  length_ = n;
}

}  // namespace sy
