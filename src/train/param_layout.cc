// Checkpoint <-> training layout of parameters (see param_layout.h): gpt-oss's fused experts split per
// expert and fused back.
#include "param_layout.h"

#include "switchyard/core/error.h"

namespace sy::train {

namespace {

std::string layer_mlp(int layer) { return "model.layers." + std::to_string(layer) + ".mlp.experts"; }
std::string expert_name(int layer, int64_t e, const char* proj, const char* kind) {
  return layer_mlp(layer) + "." + std::to_string(e) + "." + proj + "." + kind;
}

Tensor take(std::map<std::string, Tensor>& tensors, const std::string& name, const Shape& shape) {
  auto it = tensors.find(name);
  SY_REQUIRE(it != tensors.end(), FormatError, "train", "gpt-oss checkpoint lacks \"", name, "\"");
  SY_REQUIRE(it->second.shape() == shape && it->second.dtype() == DType::kF32, FormatError, "train", "\"", name,
             "\" has shape ", shape_str(it->second.shape()), ", expected ", shape_str(shape), " (f32)");
  Tensor t = it->second.contiguous();
  tensors.erase(it);
  return t;
}

}  // namespace

std::map<std::string, Tensor> to_training_layout(const ModelConfig& cfg, std::map<std::string, Tensor> tensors) {
  if (cfg.arch != Architecture::kGptOss) return tensors;
  const int64_t experts = cfg.moe.num_experts, h = cfg.hidden_size, inter = cfg.moe.expert_intermediate;
  for (int l = 0; l < cfg.num_layers; ++l) {
    const std::string base = layer_mlp(l);
    Tensor gate_up = take(tensors, base + ".gate_up_proj", {experts, h, 2 * inter});
    Tensor gate_up_bias = take(tensors, base + ".gate_up_proj_bias", {experts, 2 * inter});
    Tensor down = take(tensors, base + ".down_proj", {experts, inter, h});
    Tensor down_bias = take(tensors, base + ".down_proj_bias", {experts, h});
    for (int64_t e = 0; e < experts; ++e) {
      Tensor gate = Tensor::empty({inter, h}, DType::kF32), up = Tensor::empty({inter, h}, DType::kF32);
      Tensor down_w = Tensor::empty({h, inter}, DType::kF32);
      Tensor gate_b = Tensor::empty({inter}, DType::kF32), up_b = Tensor::empty({inter}, DType::kF32);
      const float* gu = gate_up.f32() + e * h * 2 * inter;   // (H, 2I)
      const float* gub = gate_up_bias.f32() + e * 2 * inter;  // (2I,)
      const float* dn = down.f32() + e * inter * h;           // (I, H)
      for (int64_t i = 0; i < inter; ++i) {
        for (int64_t c = 0; c < h; ++c) {
          gate.f32()[i * h + c] = gu[c * 2 * inter + 2 * i];
          up.f32()[i * h + c] = gu[c * 2 * inter + 2 * i + 1];
          down_w.f32()[c * inter + i] = dn[i * h + c];
        }
        gate_b.f32()[i] = gub[2 * i];
        up_b.f32()[i] = gub[2 * i + 1];
      }
      tensors[expert_name(l, e, "gate_proj", "weight")] = gate;
      tensors[expert_name(l, e, "up_proj", "weight")] = up;
      tensors[expert_name(l, e, "down_proj", "weight")] = down_w;
      tensors[expert_name(l, e, "gate_proj", "bias")] = gate_b;
      tensors[expert_name(l, e, "up_proj", "bias")] = up_b;
      tensors[expert_name(l, e, "down_proj", "bias")] = down_bias.select(e).clone();
    }
  }
  return tensors;
}

std::map<std::string, Tensor> to_checkpoint_layout(const ModelConfig& cfg, const std::map<std::string, Tensor>& tensors) {
  if (cfg.arch != Architecture::kGptOss) return tensors;
  std::map<std::string, Tensor> out = tensors;
  const int64_t experts = cfg.moe.num_experts, h = cfg.hidden_size, inter = cfg.moe.expert_intermediate;
  for (int l = 0; l < cfg.num_layers; ++l) {
    const std::string base = layer_mlp(l);
    Tensor gate_up = Tensor::empty({experts, h, 2 * inter}, DType::kF32);
    Tensor gate_up_bias = Tensor::empty({experts, 2 * inter}, DType::kF32);
    Tensor down = Tensor::empty({experts, inter, h}, DType::kF32);
    Tensor down_bias = Tensor::empty({experts, h}, DType::kF32);
    for (int64_t e = 0; e < experts; ++e) {
      const Tensor gate = take(out, expert_name(l, e, "gate_proj", "weight"), {inter, h});
      const Tensor up = take(out, expert_name(l, e, "up_proj", "weight"), {inter, h});
      const Tensor down_w = take(out, expert_name(l, e, "down_proj", "weight"), {h, inter});
      const Tensor gate_b = take(out, expert_name(l, e, "gate_proj", "bias"), {inter});
      const Tensor up_b = take(out, expert_name(l, e, "up_proj", "bias"), {inter});
      const Tensor down_b = take(out, expert_name(l, e, "down_proj", "bias"), {h});
      float* gu = gate_up.f32() + e * h * 2 * inter;
      float* gub = gate_up_bias.f32() + e * 2 * inter;
      float* dn = down.f32() + e * inter * h;
      for (int64_t i = 0; i < inter; ++i) {
        for (int64_t c = 0; c < h; ++c) {
          gu[c * 2 * inter + 2 * i] = gate.f32()[i * h + c];
          gu[c * 2 * inter + 2 * i + 1] = up.f32()[i * h + c];
          dn[i * h + c] = down_w.f32()[c * inter + i];
        }
        gub[2 * i] = gate_b.f32()[i];
        gub[2 * i + 1] = up_b.f32()[i];
      }
      std::copy(down_b.f32(), down_b.f32() + h, down_bias.f32() + e * h);
    }
    out[base + ".gate_up_proj"] = gate_up;
    out[base + ".gate_up_proj_bias"] = gate_up_bias;
    out[base + ".down_proj"] = down;
    out[base + ".down_proj_bias"] = down_bias;
  }
  return out;
}

}  // namespace sy::train
