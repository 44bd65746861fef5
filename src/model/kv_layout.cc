// kv_layout: the cached row shape per token and layer (see kv_layout.h).
#include "switchyard/model/kv_layout.h"

namespace sy {

KvLayout kv_layout(const ModelConfig& config, Device /*device: every backend caches the same rows today*/) {
  const AttentionConfig& a = config.attention;
  if (!a.mla) return {a.num_kv_heads, a.head_dim, a.v_head_dim, false};
  return {1, int64_t{a.kv_lora_rank} + a.qk_rope_head_dim, a.kv_lora_rank, true};
}

}  // namespace sy
