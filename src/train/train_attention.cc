// Training forward and backward of the attention blocks (GQA/MHA with optional q/k norms, clip and sinks;
// DeepSeek MLA in its expanded form). Forward keeps what backward needs in AttentionCache.
#include "train_blocks.h"

#include <algorithm>
#include <cstring>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops_backward.h"

namespace sy::train {

namespace {

// Clamps to [-c, c] in place and records which elements were clamped.
void clamp_with_mask(Tensor& t, float c, std::vector<uint8_t>& mask) {
  mask.assign(static_cast<size_t>(t.numel()), 0);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (p[i] > c || p[i] < -c) {
      mask[i] = 1;
      p[i] = std::clamp(p[i], -c, c);
    }
  }
}

void zero_masked(Tensor& g, const std::vector<uint8_t>& mask) {
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (mask[i]) g.f32()[i] = 0.f;
  }
}

ops::AttentionOptions attention_options(const ModelConfig& cfg, const AttentionWeights& w, int layer) {
  ops::AttentionOptions o;
  o.scale = static_cast<float>(cfg.attention.softmax_scale);
  o.window = cfg.layer_sliding_window[layer];
  o.sinks = w.sinks.defined() ? &w.sinks : nullptr;
  return o;
}

// Runs attention sequence by sequence: q (N, heads, dk), k/v (N, kv_heads, d) -> out (N, heads, dv).
void attention_per_sequence(const Tensor& q, const Tensor& k, const Tensor& v, const BatchLayout& batch,
                            const ops::AttentionOptions& o, Tensor& out) {
  for (int64_t b = 0; b < batch.num_seqs(); ++b) {
    const int64_t s0 = batch.seq_begin[b], s1 = batch.seq_begin[b + 1];
    Tensor ob = out.slice(0, s0, s1);
    const std::vector<int64_t> key_start = batch.seq_key_start(b);
    ops::AttentionOptions ob_opts = o;
    ob_opts.key_start = &key_start;
    ops::attention(q.slice(0, s0, s1), k.slice(0, s0, s1), v.slice(0, s0, s1), batch.seq_key_index(b), s1 - s0,
                   ob_opts, ob);
  }
}

void attention_backward_per_sequence(const Tensor& q, const Tensor& k, const Tensor& v, const BatchLayout& batch,
                                     const ops::AttentionOptions& o, const Tensor& dout, Tensor& dq, Tensor& dk,
                                     Tensor& dv, Tensor* dsinks) {
  for (int64_t b = 0; b < batch.num_seqs(); ++b) {
    const int64_t s0 = batch.seq_begin[b], s1 = batch.seq_begin[b + 1];
    Tensor dqb = dq.slice(0, s0, s1), dkb = dk.slice(0, s0, s1), dvb = dv.slice(0, s0, s1);
    const std::vector<int64_t> key_start = batch.seq_key_start(b);
    ops::AttentionOptions ob_opts = o;
    ob_opts.key_start = &key_start;
    ops::attention_backward(q.slice(0, s0, s1), k.slice(0, s0, s1), v.slice(0, s0, s1), batch.seq_key_index(b),
                            s1 - s0, ob_opts, dout.slice(0, s0, s1), dqb, dkb, dvb, dsinks);
  }
}

Tensor like(const Tensor& t) { return Tensor::empty(t.shape(), DType::kF32); }

}  // namespace

Tensor gqa_forward(const ModelConfig& cfg, const AttentionWeights& w, int layer, const Tensor& h,
                   const BatchLayout& batch, const ops::RopeTable& rope, AttentionCache& c) {
  const AttentionConfig& a = cfg.attention;
  const int64_t n = h.size(0);
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  c.q_lin = ops::linear(h, w.q, w.q_bias);
  c.k_lin = ops::linear(h, w.k, w.k_bias);
  c.v_lin = ops::linear(h, w.v, w.v_bias);
  c.q_pre = c.q_lin.clone();
  c.k_pre = c.k_lin.clone();
  c.v = c.v_lin.clone();
  if (a.qk_norm == QkNorm::kFull) {
    ops::rms_norm(c.q_lin, w.q_norm, eps, c.q_pre);
    ops::rms_norm(c.k_lin, w.k_norm, eps, c.k_pre);
  }
  if (a.clip_qkv > 0) {
    const float clip = static_cast<float>(a.clip_qkv);
    clamp_with_mask(c.q_pre, clip, c.q_clip);
    clamp_with_mask(c.k_pre, clip, c.k_clip);
    clamp_with_mask(c.v, clip, c.v_clip);
  }
  c.q = c.q_pre.clone().reshape({n, a.num_heads, a.head_dim});
  c.k = c.k_pre.clone().reshape({n, a.num_kv_heads, a.head_dim});
  c.v = c.v.reshape({n, a.num_kv_heads, a.head_dim});
  if (a.qk_norm == QkNorm::kPerHead) {
    Tensor qf = c.q.reshape({n * a.num_heads, a.head_dim}), kf = c.k.reshape({n * a.num_kv_heads, a.head_dim});
    ops::rms_norm(c.q_pre.reshape({n * a.num_heads, a.head_dim}), w.q_norm, eps, qf);
    ops::rms_norm(c.k_pre.reshape({n * a.num_kv_heads, a.head_dim}), w.k_norm, eps, kf);
  }
  ops::apply_rope(c.q, batch.positions, rope);
  ops::apply_rope(c.k, batch.positions, rope);
  Tensor out = Tensor::empty({n, a.num_heads, a.head_dim}, DType::kF32);
  attention_per_sequence(c.q, c.k, c.v, batch, attention_options(cfg, w, layer), out);
  c.out = out.reshape({n, int64_t{a.num_heads} * a.head_dim});
  return ops::linear(c.out, w.o, w.o_bias);
}

Tensor gqa_backward(const ModelConfig& cfg, const AttentionWeights& w, AttentionWeights& g, int layer, const Tensor& h,
                    const BatchLayout& batch, const ops::RopeTable& rope, const AttentionCache& c, const Tensor& dy) {
  const AttentionConfig& a = cfg.attention;
  const int64_t n = h.size(0);
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  Tensor dout = like(c.out);
  ops::linear_backward(c.out, w.o, dy, &dout, &g.o, g.o_bias.defined() ? &g.o_bias : nullptr);
  Tensor dq = like(c.q), dk = Tensor::zeros(c.k.shape(), DType::kF32), dv = Tensor::zeros(c.v.shape(), DType::kF32);
  attention_backward_per_sequence(c.q, c.k, c.v, batch, attention_options(cfg, w, layer),
                                  dout.reshape({n, a.num_heads, a.head_dim}), dq, dk, dv,
                                  g.sinks.defined() ? &g.sinks : nullptr);
  ops::apply_rope_backward(dq, batch.positions, rope);
  ops::apply_rope_backward(dk, batch.positions, rope);
  Tensor dq_pre = dq.reshape({n, int64_t{a.num_heads} * a.head_dim});
  Tensor dk_pre = dk.reshape({n, int64_t{a.num_kv_heads} * a.head_dim});
  if (a.qk_norm == QkNorm::kPerHead) {
    Tensor tq = like(dq_pre), tk = like(dk_pre);
    Tensor tqf = tq.reshape({n * a.num_heads, a.head_dim}), tkf = tk.reshape({n * a.num_kv_heads, a.head_dim});
    ops::rms_norm_backward(c.q_pre.reshape({n * a.num_heads, a.head_dim}), w.q_norm, eps,
                           dq.reshape({n * a.num_heads, a.head_dim}), tqf, g.q_norm);
    ops::rms_norm_backward(c.k_pre.reshape({n * a.num_kv_heads, a.head_dim}), w.k_norm, eps,
                           dk.reshape({n * a.num_kv_heads, a.head_dim}), tkf, g.k_norm);
    dq_pre = tq;
    dk_pre = tk;
  }
  Tensor dv_lin = dv.reshape({n, int64_t{a.num_kv_heads} * a.head_dim});
  if (a.clip_qkv > 0) {
    zero_masked(dq_pre, c.q_clip);
    zero_masked(dk_pre, c.k_clip);
    zero_masked(dv_lin, c.v_clip);
  }
  Tensor dq_lin = dq_pre, dk_lin = dk_pre;
  if (a.qk_norm == QkNorm::kFull) {
    dq_lin = like(dq_pre);
    dk_lin = like(dk_pre);
    ops::rms_norm_backward(c.q_lin, w.q_norm, eps, dq_pre, dq_lin, g.q_norm);
    ops::rms_norm_backward(c.k_lin, w.k_norm, eps, dk_pre, dk_lin, g.k_norm);
  }
  Tensor dh = like(h), tmp = like(h);
  ops::linear_backward(h, w.q, dq_lin, &dh, &g.q, g.q_bias.defined() ? &g.q_bias : nullptr);
  ops::linear_backward(h, w.k, dk_lin, &tmp, &g.k, g.k_bias.defined() ? &g.k_bias : nullptr);
  ops::add_inplace(dh, tmp);
  ops::linear_backward(h, w.v, dv_lin, &tmp, &g.v, g.v_bias.defined() ? &g.v_bias : nullptr);
  ops::add_inplace(dh, tmp);
  return dh;
}

namespace {
constexpr float kMlaNormEps = 1e-6f;  // transformers hard-codes it for q_a_layernorm and kv_a_layernorm
}

Tensor mla_forward(const ModelConfig& cfg, const AttentionWeights& w, int layer, const Tensor& h,
                   const BatchLayout& batch, const ops::RopeTable& rope, AttentionCache& c) {
  const AttentionConfig& a = cfg.attention;
  const int64_t n = h.size(0), heads = a.num_heads, nope = a.qk_nope_head_dim, r = a.qk_rope_head_dim;
  const int64_t dq = nope + r, dv = a.v_head_dim, rank = a.kv_lora_rank;
  Tensor q;
  if (w.q_a.defined()) {
    c.qa = ops::linear(h, w.q_a);
    c.qa_n = like(c.qa);
    ops::rms_norm(c.qa, w.q_a_norm, kMlaNormEps, c.qa_n);
    q = ops::linear(c.qa_n, w.q_b);
  } else {
    q = ops::linear(h, w.q);
  }
  c.q = q.reshape({n, heads, dq});
  Tensor q_pe = c.q.slice(2, nope, dq);
  ops::apply_rope(q_pe, batch.positions, rope);
  c.kv_a = ops::linear(h, w.kv_a, w.kv_a_bias);
  c.latent = Tensor::empty({n, rank}, DType::kF32);
  Tensor k_pe = Tensor::empty({n, 1, r}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(c.latent.f32() + i * rank, c.kv_a.f32() + i * (rank + r), sizeof(float) * rank);
    std::memcpy(k_pe.f32() + i * r, c.kv_a.f32() + i * (rank + r) + rank, sizeof(float) * r);
  }
  c.latent_n = like(c.latent);
  ops::rms_norm(c.latent, w.kv_a_norm, kMlaNormEps, c.latent_n);
  c.kv = ops::linear(c.latent_n, w.kv_b).reshape({n, heads, nope + dv});
  ops::apply_rope(k_pe, batch.positions, rope);
  c.k = Tensor::empty({n, heads, dq}, DType::kF32);
  c.v = Tensor::empty({n, heads, dv}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t hd = 0; hd < heads; ++hd) {
      const float* src = c.kv.f32() + (i * heads + hd) * (nope + dv);
      float* kd = c.k.f32() + (i * heads + hd) * dq;
      std::memcpy(kd, src, sizeof(float) * nope);
      std::memcpy(kd + nope, k_pe.f32() + i * r, sizeof(float) * r);
      std::memcpy(c.v.f32() + (i * heads + hd) * dv, src + nope, sizeof(float) * dv);
    }
  }
  Tensor out = Tensor::empty({n, heads, dv}, DType::kF32);
  attention_per_sequence(c.q, c.k, c.v, batch, attention_options(cfg, w, layer), out);
  c.out = out.reshape({n, heads * dv});
  return ops::linear(c.out, w.o, w.o_bias);
}

Tensor mla_backward(const ModelConfig& cfg, const AttentionWeights& w, AttentionWeights& g, int layer, const Tensor& h,
                    const BatchLayout& batch, const ops::RopeTable& rope, const AttentionCache& c, const Tensor& dy) {
  const AttentionConfig& a = cfg.attention;
  const int64_t n = h.size(0), heads = a.num_heads, nope = a.qk_nope_head_dim, r = a.qk_rope_head_dim;
  const int64_t dqd = nope + r, dvd = a.v_head_dim, rank = a.kv_lora_rank;
  Tensor dout = like(c.out);
  ops::linear_backward(c.out, w.o, dy, &dout, &g.o, g.o_bias.defined() ? &g.o_bias : nullptr);
  Tensor dq = like(c.q), dk = Tensor::zeros(c.k.shape(), DType::kF32), dv = Tensor::zeros(c.v.shape(), DType::kF32);
  attention_backward_per_sequence(c.q, c.k, c.v, batch, attention_options(cfg, w, layer),
                                  dout.reshape({n, heads, dvd}), dq, dk, dv, nullptr);
  // Split key/value gradients back into kv_b outputs and the shared rope key.
  Tensor dkv = Tensor::empty({n, heads, nope + dvd}, DType::kF32);
  Tensor dk_pe = Tensor::zeros({n, 1, r}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t hd = 0; hd < heads; ++hd) {
      const float* dkr = dk.f32() + (i * heads + hd) * dqd;
      float* dst = dkv.f32() + (i * heads + hd) * (nope + dvd);
      std::memcpy(dst, dkr, sizeof(float) * nope);
      std::memcpy(dst + nope, dv.f32() + (i * heads + hd) * dvd, sizeof(float) * dvd);
      ops::axpy(dk_pe.f32() + i * r, 1.f, dkr + nope, r);
    }
  }
  ops::apply_rope_backward(dk_pe, batch.positions, rope);
  Tensor dq_pe = dq.slice(2, nope, dqd);
  ops::apply_rope_backward(dq_pe, batch.positions, rope);
  Tensor dlatent_n = like(c.latent_n), dlatent = like(c.latent);
  ops::linear_backward(c.latent_n, w.kv_b, dkv.reshape({n, heads * (nope + dvd)}), &dlatent_n, &g.kv_b, nullptr);
  ops::rms_norm_backward(c.latent, w.kv_a_norm, kMlaNormEps, dlatent_n, dlatent, g.kv_a_norm);
  Tensor dkv_a = Tensor::empty({n, rank + r}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dkv_a.f32() + i * (rank + r), dlatent.f32() + i * rank, sizeof(float) * rank);
    std::memcpy(dkv_a.f32() + i * (rank + r) + rank, dk_pe.f32() + i * r, sizeof(float) * r);
  }
  Tensor dh = like(h), tmp = like(h);
  ops::linear_backward(h, w.kv_a, dkv_a, &dh, &g.kv_a, g.kv_a_bias.defined() ? &g.kv_a_bias : nullptr);
  Tensor dq_flat = dq.reshape({n, heads * dqd});
  if (w.q_a.defined()) {
    Tensor dqa_n = like(c.qa_n), dqa = like(c.qa);
    ops::linear_backward(c.qa_n, w.q_b, dq_flat, &dqa_n, &g.q_b, nullptr);
    ops::rms_norm_backward(c.qa, w.q_a_norm, kMlaNormEps, dqa_n, dqa, g.q_a_norm);
    ops::linear_backward(h, w.q_a, dqa, &tmp, &g.q_a, nullptr);
  } else {
    ops::linear_backward(h, w.q, dq_flat, &tmp, &g.q, nullptr);
  }
  ops::add_inplace(dh, tmp);
  return dh;
}

}  // namespace sy::train
