// WeightSource and the shared loaders for norms, gated MLPs and routed experts (hub and fused layouts).
#include "weight_source.h"

#include "switchyard/core/error.h"

namespace sy::model_detail {

Tensor WeightSource::get(const std::string& name, const Shape& shape) {
  if (creator_ && !checkpoint_.contains(name)) {
    used_.insert(name);
    return creator_->create(name, shape);
  }
  if (!checkpoint_.contains(name)) {
    throw make_error<FormatError>("model", "checkpoint ", checkpoint_.where(), " has no tensor \"", name,
                                  "\" (expected shape ", shape_str(shape), "); is config.json for this checkpoint?");
  }
  Tensor t = checkpoint_.tensor(name);
  if (t.shape() != shape) {
    throw make_error<FormatError>("model", "tensor \"", name, "\" in ", checkpoint_.where(), " has shape ",
                                  shape_str(t.shape()), " but config.json implies ", shape_str(shape));
  }
  DType dt = t.dtype();
  if (dt != DType::kF32 && dt != DType::kBF16 && dt != DType::kF16) {
    throw make_error<Unsupported>("model", "tensor \"", name, "\" has dtype ", dtype_name(dt),
                                  "; only f32, bf16 and f16 weights are supported");
  }
  used_.insert(name);
  return t;
}

Tensor WeightSource::optional(const std::string& name, const Shape& shape) {
  return has(name) ? get(name, shape) : Tensor();
}

std::vector<std::string> WeightSource::unused() const {
  std::vector<std::string> out;
  for (const std::string& n : checkpoint_.names()) {
    if (!used_.count(n)) out.push_back(n);
  }
  return out;
}

Tensor load_norm(WeightSource& src, const std::string& name, int64_t dim) { return src.get(name, {dim}); }

moe::GatedMlpWeights load_gated_mlp(WeightSource& src, const std::string& prefix, int64_t hidden, int64_t inter,
                                    const MlpNames& names, bool bias) {
  moe::GatedMlpWeights w;
  w.gate = src.get(prefix + "." + names.gate + ".weight", {inter, hidden});
  w.up = src.get(prefix + "." + names.up + ".weight", {inter, hidden});
  w.down = src.get(prefix + "." + names.down + ".weight", {hidden, inter});
  if (bias) {
    w.gate_bias = src.get(prefix + "." + names.gate + ".bias", {inter});
    w.up_bias = src.get(prefix + "." + names.up + ".bias", {inter});
    w.down_bias = src.get(prefix + "." + names.down + ".bias", {hidden});
  }
  return w;
}

std::vector<moe::GatedMlpWeights> load_experts(WeightSource& src, const std::string& prefix, const ModelConfig& cfg,
                                               const MlpNames& names) {
  const int64_t e = cfg.moe.num_experts, h = cfg.hidden_size, inter = cfg.moe.expert_intermediate;
  std::vector<moe::GatedMlpWeights> experts(static_cast<size_t>(e));
  if (src.has(prefix + ".gate_up_proj")) {
    // transformers-native fused layout: gate rows [0, I), up rows [I, 2I) of each expert.
    Tensor gate_up = src.get(prefix + ".gate_up_proj", {e, 2 * inter, h});
    Tensor down = src.get(prefix + ".down_proj", {e, h, inter});
    for (int64_t i = 0; i < e; ++i) {
      if (!src.wants_expert(i)) continue;  // the mapped bytes of other experts are never touched
      Tensor gu = gate_up.select(i);
      experts[i].gate = gu.slice(0, 0, inter);
      experts[i].up = gu.slice(0, inter, 2 * inter);
      experts[i].down = down.select(i);
    }
    return experts;
  }
  for (int64_t i = 0; i < e; ++i) {
    const std::string p = prefix + "." + std::to_string(i);
    if (src.wants_expert(i)) {
      experts[i] = load_gated_mlp(src, p, h, inter, names);
    } else {
      for (const std::string& n : {names.gate, names.up, names.down}) src.skip(p + "." + n + ".weight");
    }
  }
  return experts;
}

}  // namespace sy::model_detail
