// KvCache: per-layer f32 key/value buffers of one sequence (shaped by kv_layout), grown by doubling.
#include "switchyard/model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "switchyard/core/error.h"

namespace sy {

namespace {
Tensor grow(const Tensor& old, Shape shape, int64_t keep_rows) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  if (keep_rows > 0) {
    std::memcpy(t.raw(), old.raw(), static_cast<size_t>(keep_rows * old.numel() / old.size(0)) * sizeof(float));
  }
  return t;
}
}  // namespace

KvCache::KvCache(const ModelConfig& config, int64_t capacity) : layout_(kv_layout(config, Device::kCpu)) {
  capacity_ = std::max<int64_t>(capacity, 1);
  for (int i = 0; i < config.num_layers; ++i) {
    k_.push_back(Tensor::empty({capacity_, layout_.heads, layout_.key_dim}, DType::kF32));
    v_.push_back(layout_.values_in_keys ? k_.back().slice(2, 0, layout_.value_dim)
                                        : Tensor::empty({capacity_, layout_.heads, layout_.value_dim}, DType::kF32));
  }
}

void KvCache::reserve(int64_t n) {
  if (n <= capacity_) return;
  int64_t cap = std::max(n, capacity_ * 2);
  for (size_t i = 0; i < k_.size(); ++i) {
    Shape ks = k_[i].shape(), vs = v_[i].shape();
    ks[0] = vs[0] = cap;
    k_[i] = grow(k_[i], ks, length_);
    v_[i] = layout_.values_in_keys ? k_[i].slice(2, 0, layout_.value_dim) : grow(v_[i], vs, length_);
  }
  capacity_ = cap;
}

void KvCache::set_length(int64_t n) {
  SY_CHECK(n >= 0 && n <= capacity_, "KvCache::set_length ", n, " of capacity ", capacity_);
  length_ = n;
}

}  // namespace sy
