// PagedKvPool: the keys and values of many sequences in fixed-size blocks, for the server's batched forward.
// Per layer, keys (num_blocks*block_size, heads, key_dim) and values (num_blocks*block_size, heads, value_dim)
// shaped by kv_layout (f32 on the CPU, bf16 on the GPU); a sequence owns a block table naming the blocks that
// hold its rows in order. Which block belongs to whom (and prefix sharing) is the serve layer's BlockManager;
// this class is only the storage.
#pragma once

#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"
#include "switchyard/model/kv_layout.h"

namespace sy {

class PagedKvPool {
 public:
  // Throws InvalidArgument for non-positive sizes. Device::kCuda pools need a CUDA build and device.
  PagedKvPool(const ModelConfig& config, int64_t num_blocks, int64_t block_size, Device device = Device::kCpu);
  // Element type of a pool on `device`: f32 on the CPU (bit-exact with the contiguous cache), bf16 on the GPU
  // (half the bytes per cached token and per decode step; attention accumulates in f32).
  static DType dtype(Device device) { return device == Device::kCuda ? DType::kBF16 : DType::kF32; }
  // Bytes one block takes over all layers on `device`.
  static int64_t bytes_per_block(const ModelConfig& config, int64_t block_size, Device device = Device::kCpu);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  Tensor& keys(int layer) { return k_[layer]; }
  Tensor& values(int layer) { return v_[layer]; }  // a view of the keys when layout().values_in_keys
  const KvLayout& layout() const { return layout_; }

 private:
  KvLayout layout_;
  std::vector<Tensor> k_, v_;
  int64_t num_blocks_ = 0;
  int64_t block_size_ = 0;
};

// One sequence of Model::forward_batch: `ids` are appended after the `start` tokens whose keys and values
// are already in the pool; block_table covers at least start + ids.size() rows.
struct BatchSequence {
  std::vector<int64_t> ids;
  int64_t start = 0;
  std::vector<int32_t> block_table;
  bool want_logits = true;  // logits of the last new token
};

}  // namespace sy
