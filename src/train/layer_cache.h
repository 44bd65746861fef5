// Activations a training forward keeps for the backward pass, per layer. Internal to src/train.
// Shapes use N = tokens of the whole batch (sequences concatenated), H = hidden size.
#pragma once

#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/moe/dispatch.h"
#include "switchyard/moe/router.h"

namespace sy::train {

// Token ranges of the sequences in a flattened batch, with each token's position in its sequence.
// With packed documents, positions restart at each document and key_start masks earlier documents.
struct BatchLayout {
  std::vector<int64_t> seq_begin;   // (B + 1,): tokens [seq_begin[b], seq_begin[b+1]) are sequence b
  std::vector<int64_t> positions;   // (N,): rope position of each token (within its document)
  std::vector<int64_t> key_start;   // (N,): first key (index within its sequence) each token may attend to
  int64_t num_tokens() const { return seq_begin.back(); }
  int64_t num_seqs() const { return static_cast<int64_t>(seq_begin.size()) - 1; }
  // Key indices 0..T_b-1 of sequence b (causality is by index within the sequence).
  std::vector<int64_t> seq_key_index(int64_t b) const {
    std::vector<int64_t> idx(static_cast<size_t>(seq_begin[b + 1] - seq_begin[b]));
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
    return idx;
  }
  std::vector<int64_t> seq_key_start(int64_t b) const {
    return {key_start.begin() + seq_begin[b], key_start.begin() + seq_begin[b + 1]};
  }
};

struct AttentionCache {
  // GQA: q_lin/k_lin are the projections (N, heads*d) before any norm; q_pre/k_pre the inputs of the
  // per-head norm (or of rope when there is none), after the full norm and clip; q, k (rotated) and v the
  // attention inputs (N, heads, d); clip masks mark clamped elements (1 = clamped).
  Tensor q_lin, k_lin, v_lin, q_pre, k_pre, q, k, v;
  std::vector<uint8_t> q_clip, k_clip, v_clip;
  Tensor out;  // (N, heads * v_dim) attention output before o_proj
  // MLA: qa (N, q_rank) before its norm, qa_n after; kv_a (N, kv_rank + rope); latent (N, kv_rank) before
  // its norm, latent_n after; kv (N, heads, nope + v_dim).
  Tensor qa, qa_n, kv_a, latent, latent_n, kv;
};

struct FfnCache {
  // Dense MLP or shared expert: gate and up pre-activations (N, I) and the activation product.
  Tensor gate, up, act;
  // MoE: router logits (N, E), routing, layout, permuted inputs (rows, H), per-row expert gate/up
  // pre-activations and activation (rows, I), expert outputs (rows, H).
  Tensor logits;
  moe::Routing routing;
  moe::DispatchLayout layout;
  Tensor permuted, e_gate, e_up, e_act, e_out;
  // Shared expert (MoE layers) and its sigmoid gate logit (N, 1).
  Tensor s_gate, s_up, s_act, s_out, s_gate_logit;
};

struct LayerCache {
  Tensor x_in;   // (N, H) residual stream entering the layer
  Tensor h1;     // (N, H) input norm output
  Tensor x_mid;  // (N, H) after the attention residual
  Tensor h2;     // (N, H) post-attention norm output
  AttentionCache attn;
  FfnCache ffn;
};

}  // namespace sy::train
