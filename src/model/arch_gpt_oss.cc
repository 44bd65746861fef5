// gpt-oss: attention with q/k/v/o biases and per-head sinks, alternating sliding/full layers, router with a
// bias (mlp.router), and fused experts stored input-major: mlp.experts.gate_up_proj (E, H, 2I) whose columns
// interleave gate (even) and up (odd), gate_up_proj_bias (E, 2I), down_proj (E, I, H), down_proj_bias (E, H).
// Those are rearranged once at load into the engine's (out, in) per-expert layout (a copy, same dtype).
// The trainer holds them per expert already (mlp.experts.<e>.{gate,up,down}_proj.{weight,bias}, see
// src/train/param_layout.h); that layout is loaded as views.
#include <cstring>

#include "arch.h"

namespace sy::model_detail {

namespace {

// dst (rows, cols) with dst[r, c] = src[c * src_row_stride + r * step + phase]: a strided transpose that
// also picks every `step`-th input column starting at `phase`.
Tensor gather_transposed(const Tensor& src, int64_t rows, int64_t cols, int64_t src_row_stride, int64_t step,
                         int64_t phase) {
  const size_t es = dtype_size(src.dtype());
  Tensor dst = Tensor::empty({rows, cols}, src.dtype());
  const char* s = static_cast<const char*>(src.raw());
  char* d = static_cast<char*>(dst.raw());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      std::memcpy(d + (r * cols + c) * es, s + (c * src_row_stride + r * step + phase) * es, es);
    }
  }
  return dst;
}

// Every `step`-th element of a 1-D tensor from `phase`.
Tensor gather_strided(const Tensor& src, int64_t n, int64_t step, int64_t phase) {
  return gather_transposed(src, n, 1, 0, step, phase).reshape({n});
}

}  // namespace

ModelWeights load_gpt_oss(WeightSource& src, const ModelConfig& cfg) {
  ModelWeights w = load_embeddings_and_head(src, cfg);
  const int64_t e = cfg.moe.num_experts, h = cfg.hidden_size, inter = cfg.moe.expert_intermediate;
  for (int i = 0; i < cfg.num_layers; ++i) {
    LayerWeights& lw = w.layers[i];
    const std::string mlp = layer_prefix(i) + "mlp";
    load_layer_norms(src, cfg, i, lw);
    lw.attention = load_gqa_attention(src, cfg, i);
    lw.is_moe = true;
    lw.moe.router = src.get(mlp + ".router.weight", {e, h});
    lw.moe.router_bias = src.get(mlp + ".router.bias", {e});
    if (src.has(mlp + ".experts.0.gate_proj.weight")) {  // per-expert training layout
      lw.moe.experts.resize(static_cast<size_t>(e));
      for (int64_t x = 0; x < e; ++x) {
        if (!src.wants_expert(x)) continue;
        lw.moe.experts[x] = load_gated_mlp(src, mlp + ".experts." + std::to_string(x), h, inter, {}, /*bias=*/true);
      }
      continue;
    }
    Tensor gate_up = src.get(mlp + ".experts.gate_up_proj", {e, h, 2 * inter});
    Tensor gate_up_bias = src.get(mlp + ".experts.gate_up_proj_bias", {e, 2 * inter});
    Tensor down = src.get(mlp + ".experts.down_proj", {e, inter, h});
    Tensor down_bias = src.get(mlp + ".experts.down_proj_bias", {e, h});
    lw.moe.experts.resize(static_cast<size_t>(e));
    for (int64_t x = 0; x < e; ++x) {
      if (!src.wants_expert(x)) continue;  // expert parallelism: another rank's expert, not copied
      moe::GatedMlpWeights& ew = lw.moe.experts[x];
      Tensor gu = gate_up.select(x);  // (H, 2I)
      ew.gate = gather_transposed(gu, inter, h, 2 * inter, 2, 0);
      ew.up = gather_transposed(gu, inter, h, 2 * inter, 2, 1);
      ew.down = gather_transposed(down.select(x), h, inter, h, 1, 0);
      Tensor gub = gate_up_bias.select(x);
      ew.gate_bias = gather_strided(gub, inter, 2, 0);
      ew.up_bias = gather_strided(gub, inter, 2, 1);
      ew.down_bias = down_bias.select(x);
    }
  }
  return w;
}

}  // namespace sy::model_detail
