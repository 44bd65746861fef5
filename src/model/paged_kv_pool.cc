// PagedKvPool: per-layer key/value block storage (f32 on the CPU, bf16 on the GPU).
#include "switchyard/model/paged_kv_pool.h"

#include "switchyard/core/error.h"

namespace sy {

PagedKvPool::PagedKvPool(const ModelConfig& config, int64_t num_blocks, int64_t block_size, Device device)
    : layout_(kv_layout(config, device)), num_blocks_(num_blocks), block_size_(block_size) {
  SY_REQUIRE(num_blocks > 0 && block_size > 0, InvalidArgument, "kv-pool", "need at least one block of at least one ",
             "token, got ", num_blocks, " blocks of ", block_size);
  const int64_t rows = num_blocks * block_size;
  for (int i = 0; i < config.num_layers; ++i) {
    k_.push_back(Tensor::empty({rows, layout_.heads, layout_.key_dim}, dtype(device), device));  // written before read
    const Shape value_shape = {rows, layout_.heads, layout_.value_dim};
    v_.push_back(layout_.values_in_keys ? k_.back().slice(2, 0, layout_.value_dim)
                                        : Tensor::empty(value_shape, dtype(device), device));
  }
}

int64_t PagedKvPool::bytes_per_block(const ModelConfig& config, int64_t block_size, Device device) {
  const KvLayout l = kv_layout(config, device);
  return int64_t{config.num_layers} * block_size * l.heads * (l.key_dim + (l.values_in_keys ? 0 : l.value_dim)) *
         static_cast<int64_t>(dtype_size(dtype(device)));
}

}  // namespace sy
