// Expert MLPs over a DispatchLayout: one GEMM per projection per expert with tokens, or, for decode-sized groups,
// every expert's gate and up in one parallel loop and every down in a second; see experts.h.
#include "switchyard/moe/experts.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "switchyard/core/env.h"
#include "switchyard/core/error.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"

namespace sy::moe {

namespace {
// SY_GROUPED_EXPERTS=0 runs decode-sized expert groups one product at a time again (A/B runs, a fallback).
bool grouped_experts_enabled() {
  static const bool enabled = env_flag("SY_GROUPED_EXPERTS", true);
  return enabled;
}
}  // namespace

ActivationOptions activation_for(const MoeConfig& moe) {
  ActivationOptions a;
  if (moe.swiglu_limit > 0) {
    a.kind = Activation::kClampedSwiGlu;
    a.limit = static_cast<float>(moe.swiglu_limit);
    a.alpha = static_cast<float>(moe.swiglu_alpha);
  }
  return a;
}

Tensor gated_mlp(const Tensor& x, const GatedMlpWeights& w, const ActivationOptions& act) {
  Tensor gate = ops::linear(x, w.gate, w.gate_bias);
  Tensor up = ops::linear(x, w.up, w.up_bias);
  if (act.kind == Activation::kSwiGlu) ops::silu_mul(gate, up, gate);
  else ops::clamped_swiglu(gate, up, act.alpha, act.limit, gate);
  return ops::linear(gate, w.down, w.down_bias);
}

Tensor run_experts(const Tensor& permuted, const DispatchLayout& layout, const std::vector<GatedMlpWeights>& experts,
                   const ActivationOptions& act) {
  SY_CHECK(static_cast<int>(experts.size()) == layout.num_experts, "run_experts: ", experts.size(), " experts for ",
           layout.num_experts);
  return run_expert_blocks(permuted, layout.offsets, experts.data(), act);
}

namespace {

constexpr int64_t kGroupedMaxRows = 8;  // rows per expert up to which the experts share parallel loops (decode)
constexpr int64_t kGroupedGrain = 64;   // output columns per thread at least

// One product y = x W^T (+ bias) of a group run in one parallel loop.
struct Product {
  Tensor x, w, bias, y;
};

// Every product's output columns in one parallel loop over their concatenation (a thread's share may span
// several products), then the biases. At decode sizes the pool is woken once for all the experts' gate and up
// projections instead of twice per expert, and each thread streams one long run of weight rows.
void run_products(std::vector<Product>& products) {
  std::vector<int64_t> first(products.size() + 1, 0);  // first concatenated column of each product
  for (size_t p = 0; p < products.size(); ++p) first[p + 1] = first[p] + products[p].w.size(0);
  parallel_for(first.back(), [&](int64_t lo, int64_t hi) {
    size_t p = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), lo) - first.begin()) - 1;
    while (lo < hi) {
      const int64_t end = std::min(hi, first[p + 1]);
      ops::linear_columns(products[p].x, products[p].w, lo - first[p], end - first[p], products[p].y);
      lo = end;
      ++p;
    }
  }, kGroupedGrain);
  for (Product& pr : products) {
    if (!pr.bias.defined()) continue;
    const int64_t n = pr.w.size(0);
    Tensor b = pr.bias.to(DType::kF32);
    for (int64_t i = 0; i < pr.y.size(0); ++i) ops::axpy(pr.y.f32() + i * n, 1.f, b.f32(), n);
  }
}

// run_expert_blocks for decode-sized groups (every expert <= kGroupedMaxRows rows): the same kernels on the same
// rows (bit-identical results), two parallel loops in all.
Tensor run_grouped(const Tensor& permuted, const std::vector<int64_t>& offsets, const GatedMlpWeights* experts,
                   const ActivationOptions& act) {
  const int64_t h = permuted.size(1), rows = offsets.back();
  Tensor out = Tensor::empty({rows, h}, DType::kF32);
  std::vector<size_t> active;
  std::vector<Product> gate_up, down;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    const int64_t begin = offsets[e], end = offsets[e + 1];
    if (begin == end) continue;
    SY_CHECK(experts[e].gate.defined(), "run_experts: expert ", e, " has tokens but no weights loaded");
    const GatedMlpWeights& w = experts[e];
    const Tensor x = permuted.slice(0, begin, end);
    const int64_t inter = w.gate.size(0);
    gate_up.push_back({x, w.gate, w.gate_bias, Tensor::empty({end - begin, inter}, DType::kF32)});
    gate_up.push_back({x, w.up, w.up_bias, Tensor::empty({end - begin, w.up.size(0)}, DType::kF32)});
    active.push_back(e);
  }
  run_products(gate_up);
  for (size_t i = 0; i < active.size(); ++i) {
    Tensor& g = gate_up[2 * i].y;
    const Tensor& u = gate_up[2 * i + 1].y;
    if (act.kind == Activation::kSwiGlu) ops::silu_mul(g, u, g);
    else ops::clamped_swiglu(g, u, act.alpha, act.limit, g);
    const GatedMlpWeights& w = experts[active[i]];
    down.push_back({g, w.down, w.down_bias, out.slice(0, offsets[active[i]], offsets[active[i] + 1])});
  }
  run_products(down);
  return out;
}

}  // namespace

Tensor run_expert_blocks(const Tensor& permuted, const std::vector<int64_t>& offsets, const GatedMlpWeights* experts,
                         const ActivationOptions& act) {
  const int64_t h = permuted.size(1);
  const int64_t rows = offsets.empty() ? 0 : offsets.back();
  SY_CHECK(permuted.size(0) == rows, "run_experts: ", permuted.size(0), " rows for offsets ending at ", rows);
  bool decode_sized = rows > 0 && grouped_experts_enabled();
  for (size_t e = 0; e + 1 < offsets.size(); ++e) decode_sized = decode_sized && offsets[e + 1] - offsets[e] <= kGroupedMaxRows;
  if (decode_sized) return run_grouped(permuted, offsets, experts, act);
  Tensor out = Tensor::empty({rows, h}, DType::kF32);
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    const int64_t begin = offsets[e], end = offsets[e + 1];
    if (begin == end) continue;
    SY_CHECK(experts[e].gate.defined(), "run_experts: expert ", e, " has tokens but no weights loaded");
    Tensor y = gated_mlp(permuted.slice(0, begin, end), experts[e], act);
    std::memcpy(out.f32() + begin * h, y.f32(), static_cast<size_t>((end - begin) * h) * sizeof(float));
  }
  return out;
}

}  // namespace sy::moe
