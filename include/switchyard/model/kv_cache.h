// KV cache of one sequence: per layer, keys (capacity, kv_heads, k_dim) and values (capacity, kv_heads, v_dim)
// in f32, rows in position order. MLA caches the expanded per-head keys and values (not the latent).
// Grows by doubling. Not paged: the server's paged cache is a separate structure.
#pragma once

#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"

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

 private:
  std::vector<Tensor> k_, v_;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

}  // namespace sy
