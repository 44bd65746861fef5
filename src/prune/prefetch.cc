// madvise(MADV_WILLNEED) over the mapped weight ranges of a model; see prefetch.h.
#include "switchyard/prune/prefetch.h"

#include <sys/mman.h>
#include <unistd.h>


namespace sy::prune {

namespace {

int64_t advise(const Tensor& t) {
  if (!t.defined() || t.storage()->owned() || t.numel() == 0) return 0;
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  // A view's bytes span from its first element to its last (views here are contiguous or row slices).
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.raw());
  int64_t span = 1;
  for (int64_t d = 0; d < t.dim(); ++d) span += (t.size(d) - 1) * t.strides()[d];
  const uintptr_t end = begin + static_cast<uintptr_t>(span) * dtype_size(t.dtype());
  const uintptr_t lo = begin & ~(page - 1), hi = (end + page - 1) & ~(page - 1);
  ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_WILLNEED);
  return static_cast<int64_t>(hi - lo);
}

int64_t advise_mlp(const moe::GatedMlpWeights& w) {
  return advise(w.gate) + advise(w.up) + advise(w.down) + advise(w.gate_bias) + advise(w.up_bias) +
         advise(w.down_bias);
}

}  // namespace

int64_t prefetch_weights(const ModelWeights& w, const PrefetchOptions& options) {
  int64_t bytes = advise(w.embed) + advise(w.final_norm) + (w.lm_head.storage() == w.embed.storage() &&
                                                            w.lm_head.raw() == w.embed.raw() ? 0 : advise(w.lm_head));
  for (const LayerWeights& l : w.layers) {
    const AttentionWeights& a = l.attention;
    for (const Tensor* t : {&l.input_norm, &l.post_attention_norm, &a.q, &a.k, &a.v, &a.o, &a.q_bias, &a.k_bias,
                            &a.v_bias, &a.o_bias, &a.q_norm, &a.k_norm, &a.sinks, &a.q_a, &a.q_a_norm, &a.q_b,
                            &a.kv_a, &a.kv_a_bias, &a.kv_a_norm, &a.kv_b}) {
      bytes += advise(*t);
    }
    if (!l.is_moe) {
      bytes += advise_mlp(l.mlp);
      continue;
    }
    bytes += advise(l.moe.router) + advise(l.moe.router_bias) + advise(l.moe.score_bias) + advise(l.moe.shared_gate);
    bytes += advise_mlp(l.moe.shared);
    if (options.routed_experts) {
      for (const moe::GatedMlpWeights& e : l.moe.experts) bytes += advise_mlp(e);
    }
  }
  return bytes;
}

}  // namespace sy::prune
