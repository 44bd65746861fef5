// KV cache of one sequence: per layer, keys (capacity, heads, key_dim) and values (capacity, heads, value_dim)
// in f32, rows in position order, shaped by kv_layout (CPU). MLA caches the absorbed form: values are a view
// of the keys' latent columns (write only the keys). Grows by doubling. Not paged: the server's paged cache
// is a separate structure.
#pragma once

#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"
#include "switchyard/model/kv_layout.h"

namespace sy {

class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t capacity);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Makes room for `n` rows in total, keeping the cached ones.
  void reserve(int64_t n);
  void set_length(int64_t n);
  void clear() { length_ = 0; }
  Tensor& keys(int layer) { return k_[layer]; }
  Tensor& values(int layer) { return v_[layer]; }
  const KvLayout& layout() const { return layout_; }

 private:
  KvLayout layout_;
  std::vector<Tensor> k_, v_;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

}  // namespace sy
