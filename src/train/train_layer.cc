// One decoder layer's training forward, and activation recompute: what each Recompute mode drops after the
// forward pass and how backward rebuilds it. Rebuilding runs the same kernels on the same kept inputs, so
// the gradients do not depend on the mode (tests check bit equality).
#include "train_blocks.h"

#include "switchyard/core/error.h"

namespace sy::train {

Recompute parse_recompute(const std::string& name) {
  if (name == "none") return Recompute::kNone;
  if (name == "selective") return Recompute::kSelective;
  if (name == "full") return Recompute::kFull;
  throw make_error<InvalidArgument>("train", "unknown recompute mode \"", name, "\" (expected none, selective or full)");
}

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::kNone: return "none";
    case Recompute::kSelective: return "selective";
    case Recompute::kFull: return "full";
  }
  return "?";
}

Tensor layer_forward(const ModelConfig& cfg, const LayerWeights& w, int layer, const Tensor& x_in,
                     const BatchLayout& batch, const ops::RopeTable& rope, LayerCache& c) {
  const int64_t n = x_in.size(0), hidden = x_in.size(1);
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  c.x_in = x_in;
  c.h1 = Tensor::empty({n, hidden}, DType::kF32);
  ops::rms_norm(x_in, w.input_norm, eps, c.h1);
  Tensor attn = cfg.attention.mla ? mla_forward(cfg, w.attention, layer, c.h1, batch, rope, c.attn)
                                  : gqa_forward(cfg, w.attention, layer, c.h1, batch, rope, c.attn);
  c.x_mid = x_in.clone();
  ops::add_inplace(c.x_mid, attn);
  c.h2 = Tensor::empty({n, hidden}, DType::kF32);
  ops::rms_norm(c.x_mid, w.post_attention_norm, eps, c.h2);
  Tensor ffn = w.is_moe ? moe_forward(cfg, w.moe, c.h2, c.ffn)
                        : mlp_forward(w.mlp, moe::ActivationOptions{}, c.h2, c.ffn.gate, c.ffn.up, c.ffn.act);
  Tensor x_out = c.x_mid.clone();
  ops::add_inplace(x_out, ffn);
  return x_out;
}

void drop_for_recompute(LayerCache& c, Recompute r) {
  if (r == Recompute::kNone) return;
  if (r == Recompute::kFull) {
    Tensor x_in = c.x_in;
    c = LayerCache{};
    c.x_in = x_in;
    return;
  }
  // Selective: norm outputs, activation products and the permuted copy of the expert inputs. The GEMM
  // outputs (gate/up pre-activations, expert outputs) and the attention activations stay.
  c.h1 = Tensor();
  c.h2 = Tensor();
  c.ffn.act = Tensor();
  c.ffn.permuted = Tensor();
  c.ffn.e_act = Tensor();
  c.ffn.s_act = Tensor();
}

void restore_for_backward(const ModelConfig& cfg, const LayerWeights& w, int layer, const BatchLayout& batch,
                          const ops::RopeTable& rope, LayerCache& c, Recompute r) {
  if (r == Recompute::kNone) return;
  if (r == Recompute::kFull) {
    layer_forward(cfg, w, layer, c.x_in, batch, rope, c);
    return;
  }
  const int64_t n = c.x_in.size(0), hidden = c.x_in.size(1);
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  c.h1 = Tensor::empty({n, hidden}, DType::kF32);
  ops::rms_norm(c.x_in, w.input_norm, eps, c.h1);
  c.h2 = Tensor::empty({n, hidden}, DType::kF32);
  ops::rms_norm(c.x_mid, w.post_attention_norm, eps, c.h2);
  if (w.is_moe) moe_restore_selective(cfg, w.moe, c.h2, c.ffn);
  else apply_activation(moe::ActivationOptions{}, c.ffn.gate, c.ffn.up, c.ffn.act);
}

namespace {
int64_t bytes_of(const Tensor& t) { return t.defined() ? t.numel() * static_cast<int64_t>(dtype_size(t.dtype())) : 0; }
template <typename T>
int64_t bytes_of(const std::vector<T>& v) {
  return static_cast<int64_t>(v.size() * sizeof(T));
}
}  // namespace

int64_t cache_bytes(const LayerCache& c) {
  const AttentionCache& a = c.attn;
  const FfnCache& f = c.ffn;
  int64_t b = bytes_of(c.x_in) + bytes_of(c.h1) + bytes_of(c.x_mid) + bytes_of(c.h2);
  for (const Tensor* t : {&a.q_lin, &a.k_lin, &a.v_lin, &a.q_pre, &a.k_pre, &a.q, &a.k, &a.v, &a.out, &a.qa, &a.qa_n,
                          &a.kv_a, &a.latent, &a.latent_n, &a.kv}) {
    b += bytes_of(*t);
  }
  b += bytes_of(a.q_clip) + bytes_of(a.k_clip) + bytes_of(a.v_clip);
  for (const Tensor* t : {&f.gate, &f.up, &f.act, &f.logits, &f.permuted, &f.e_gate, &f.e_up, &f.e_act, &f.e_out,
                          &f.s_gate, &f.s_up, &f.s_act, &f.s_out, &f.s_gate_logit}) {
    b += bytes_of(*t);
  }
  b += bytes_of(f.routing.expert) + bytes_of(f.routing.weight) + bytes_of(f.layout.tokens_per_expert) +
       bytes_of(f.layout.offsets) + bytes_of(f.layout.row_assignment) + bytes_of(f.layout.assignment_row);
  return b;
}

}  // namespace sy::train
