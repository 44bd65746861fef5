// Training forward and backward of the feed-forward blocks: dense gated MLP and the MoE block (router,
// permute, per-expert GEMMs, combine, optional shared expert with its sigmoid gate). The gate activation is
// SwiGLU or gpt-oss's clamped SwiGLU (moe::ActivationOptions).
#include <cmath>
#include <cstring>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops_backward.h"
#include "switchyard/moe/experts.h"
#include "train_blocks.h"

namespace sy::train {

namespace {
Tensor like(const Tensor& t) { return Tensor::empty(t.shape(), DType::kF32); }
Tensor* opt(Tensor& t) { return t.defined() ? &t : nullptr; }

void activation_backward(const moe::ActivationOptions& a, const Tensor& gate, const Tensor& up, const Tensor& dact,
                         Tensor& dgate, Tensor& dup) {
  if (a.kind == moe::Activation::kSwiGlu) ops::silu_mul_backward(gate, up, dact, dgate, dup);
  else ops::clamped_swiglu_backward(gate, up, a.alpha, a.limit, dact, dgate, dup);
}
}  // namespace

void apply_activation(const moe::ActivationOptions& a, const Tensor& gate, const Tensor& up, Tensor& act) {
  if (!act.defined()) act = like(gate);
  if (a.kind == moe::Activation::kSwiGlu) ops::silu_mul(gate, up, act);
  else ops::clamped_swiglu(gate, up, a.alpha, a.limit, act);
}

Tensor mlp_forward(const moe::GatedMlpWeights& w, const moe::ActivationOptions& a, const Tensor& h, Tensor& gate,
                   Tensor& up, Tensor& act) {
  gate = ops::linear(h, w.gate, w.gate_bias);
  up = ops::linear(h, w.up, w.up_bias);
  act = Tensor();
  apply_activation(a, gate, up, act);
  return ops::linear(act, w.down, w.down_bias);
}

Tensor mlp_backward(const moe::GatedMlpWeights& w, const moe::ActivationOptions& a, moe::GatedMlpWeights& g,
                    const Tensor& h, const Tensor& gate, const Tensor& up, const Tensor& act, const Tensor& dy) {
  Tensor dact = like(act), dgate = like(gate), dup = like(up), dh = like(h), tmp = like(h);
  ops::linear_backward(act, w.down, dy, &dact, &g.down, opt(g.down_bias));
  activation_backward(a, gate, up, dact, dgate, dup);
  ops::linear_backward(h, w.gate, dgate, &dh, &g.gate, opt(g.gate_bias));
  ops::linear_backward(h, w.up, dup, &tmp, &g.up, opt(g.up_bias));
  ops::add_inplace(dh, tmp);
  return dh;
}

Tensor moe_forward(const ModelConfig& cfg, const MoeWeights& w, const Tensor& h, FfnCache& c) {
  const MoeConfig& m = cfg.moe;
  const int64_t n = h.size(0), hidden = h.size(1), inter = m.expert_intermediate;
  const moe::ActivationOptions act_opts = moe::activation_for(m);
  c.logits = ops::linear(h, w.router, w.router_bias);
  c.routing = moe::route(c.logits, w.score_bias, m);
  c.layout = moe::make_dispatch_layout(c.routing, m.num_experts);
  c.permuted = moe::permute_tokens(h, c.layout);
  const int64_t rows = c.layout.num_rows();
  c.e_gate = Tensor::empty({rows, inter}, DType::kF32);
  c.e_up = Tensor::empty({rows, inter}, DType::kF32);
  c.e_act = Tensor::empty({rows, inter}, DType::kF32);
  c.e_out = Tensor::empty({rows, hidden}, DType::kF32);
  for (int e = 0; e < m.num_experts; ++e) {
    const int64_t b = c.layout.offsets[e], end = c.layout.offsets[e + 1];
    if (b == end) continue;
    const moe::GatedMlpWeights& ew = w.experts[e];
    Tensor x = c.permuted.slice(0, b, end);
    Tensor gate = c.e_gate.slice(0, b, end), up = c.e_up.slice(0, b, end), act = c.e_act.slice(0, b, end);
    Tensor out = c.e_out.slice(0, b, end);
    ops::linear(x, ew.gate, ew.gate_bias, gate);
    ops::linear(x, ew.up, ew.up_bias, up);
    apply_activation(act_opts, gate, up, act);
    ops::linear(act, ew.down, ew.down_bias, out);
  }
  Tensor y = Tensor::zeros({n, hidden}, DType::kF32);
  moe::combine_tokens(c.e_out, c.layout, c.routing, y);
  if (w.shared.gate.defined()) {
    c.s_out = mlp_forward(w.shared, moe::ActivationOptions{}, h, c.s_gate, c.s_up, c.s_act);
    if (w.shared_gate.defined()) {
      c.s_gate_logit = ops::linear(h, w.shared_gate);  // (N, 1)
      for (int64_t i = 0; i < n; ++i) {
        float s = 1.f / (1.f + std::exp(-c.s_gate_logit.f32()[i]));
        ops::axpy(y.f32() + i * hidden, s, c.s_out.f32() + i * hidden, hidden);
      }
    } else {
      ops::add_inplace(y, c.s_out);
    }
  }
  return y;
}

Tensor moe_backward(const ModelConfig& cfg, const MoeWeights& w, MoeWeights& g, const Tensor& h, const FfnCache& c,
                    const Tensor& dy, const Tensor& dlogits_extra) {
  const MoeConfig& m = cfg.moe;
  const int64_t n = h.size(0), hidden = h.size(1), k = c.routing.top_k, rows = c.layout.num_rows();
  const moe::ActivationOptions act_opts = moe::activation_for(m);
  // Combine backward: routing-weight gradients and per-row expert-output gradients.
  std::vector<float> dweight(static_cast<size_t>(n * k));
  Tensor de_out = Tensor::empty({rows, hidden}, DType::kF32);
  for (int64_t a = 0; a < n * k; ++a) {
    const int64_t t = a / k, r = c.layout.assignment_row[a];
    const float* dyt = dy.f32() + t * hidden;
    dweight[a] = ops::dot(dyt, c.e_out.f32() + r * hidden, hidden);
    float* dst = de_out.f32() + r * hidden;
    for (int64_t j = 0; j < hidden; ++j) dst[j] = c.routing.weight[a] * dyt[j];
  }
  Tensor dpermuted = Tensor::empty({rows, hidden}, DType::kF32);
  for (int e = 0; e < m.num_experts; ++e) {
    const int64_t b = c.layout.offsets[e], end = c.layout.offsets[e + 1];
    if (b == end) continue;
    const moe::GatedMlpWeights& ew = w.experts[e];
    moe::GatedMlpWeights& eg = g.experts[e];
    Tensor x = c.permuted.slice(0, b, end), gate = c.e_gate.slice(0, b, end), up = c.e_up.slice(0, b, end);
    Tensor act = c.e_act.slice(0, b, end);
    Tensor dact = like(act), dgate = like(gate), dup = like(up), tmp = like(x);
    Tensor dx = dpermuted.slice(0, b, end);
    ops::linear_backward(act, ew.down, de_out.slice(0, b, end), &dact, &eg.down, opt(eg.down_bias));
    activation_backward(act_opts, gate, up, dact, dgate, dup);
    ops::linear_backward(x, ew.gate, dgate, &dx, &eg.gate, opt(eg.gate_bias));
    ops::linear_backward(x, ew.up, dup, &tmp, &eg.up, opt(eg.up_bias));
    ops::add_inplace(dx, tmp);
  }
  Tensor dh = Tensor::zeros({n, hidden}, DType::kF32);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = c.layout.row_assignment[r] / k;
    ops::axpy(dh.f32() + t * hidden, 1.f, dpermuted.f32() + r * hidden, hidden);
  }
  // Router.
  Tensor dlogits = moe::route_backward(c.logits, m, c.routing, dweight);
  if (dlogits_extra.defined()) ops::add_inplace(dlogits, dlogits_extra);
  Tensor tmp = like(h);
  ops::linear_backward(h, w.router, dlogits, &tmp, &g.router, opt(g.router_bias));
  ops::add_inplace(dh, tmp);
  // Shared expert.
  if (w.shared.gate.defined()) {
    Tensor ds_out = dy;
    if (w.shared_gate.defined()) {
      ds_out = like(dy);
      Tensor dgl = Tensor::empty({n, 1}, DType::kF32);
      for (int64_t i = 0; i < n; ++i) {
        const float s = 1.f / (1.f + std::exp(-c.s_gate_logit.f32()[i]));
        const float* dyt = dy.f32() + i * hidden;
        for (int64_t j = 0; j < hidden; ++j) ds_out.f32()[i * hidden + j] = s * dyt[j];
        dgl.f32()[i] = ops::dot(dyt, c.s_out.f32() + i * hidden, hidden) * s * (1.f - s);
      }
      ops::linear_backward(h, w.shared_gate, dgl, &tmp, &g.shared_gate, nullptr);
      ops::add_inplace(dh, tmp);
    }
    Tensor dsh = mlp_backward(w.shared, moe::ActivationOptions{}, g.shared, h, c.s_gate, c.s_up, c.s_act, ds_out);
    ops::add_inplace(dh, dsh);
  }
  return dh;
}

void moe_restore_selective(const ModelConfig& cfg, const MoeWeights& w, const Tensor& h, FfnCache& c) {
  const moe::ActivationOptions act_opts = moe::activation_for(cfg.moe);
  c.permuted = moe::permute_tokens(h, c.layout);
  c.e_act = Tensor();
  apply_activation(act_opts, c.e_gate, c.e_up, c.e_act);
  if (w.shared.gate.defined()) {
    c.s_act = Tensor();
    apply_activation(moe::ActivationOptions{}, c.s_gate, c.s_up, c.s_act);
  }
}

}  // namespace sy::train
