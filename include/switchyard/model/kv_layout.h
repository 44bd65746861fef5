// What the KV cache holds per token and layer, for a model on a device. GQA/MHA: kv_heads keys and values.
// MLA (CPU and GPU): the absorbed form, one shared row [normalised kv latent (kv_lora_rank) | rotary key
// (rope)] whose first kv_lora_rank columns are also the values (DeepSeek-V3: 576 values per token and layer
// instead of 128 heads x 320). The device argument leaves room for a backend-specific layout.
#pragma once

#include <cstdint>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"

namespace sy {

struct KvLayout {
  int64_t heads = 0;       // key (and value) heads per cached row
  int64_t key_dim = 0;     // per head
  int64_t value_dim = 0;   // per head
  bool values_in_keys = false;  // values are the first value_dim columns of the keys (no value storage)
};

KvLayout kv_layout(const ModelConfig& config, Device device);

}  // namespace sy
