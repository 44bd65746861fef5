// Expert MLPs over a DispatchLayout: one GEMM per projection per expert with tokens; see experts.h.
#include "switchyard/moe/experts.h"

#include <cstring>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops.h"

namespace sy::moe {

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

Tensor run_expert_blocks(const Tensor& permuted, const std::vector<int64_t>& offsets, const GatedMlpWeights* experts,
                         const ActivationOptions& act) {
  const int64_t h = permuted.size(1);
  const int64_t rows = offsets.empty() ? 0 : offsets.back();
  SY_CHECK(permuted.size(0) == rows, "run_experts: ", permuted.size(0), " rows for offsets ending at ", rows);
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
