// AdamW, gradient clipping and learning-rate schedules; see optimizer.h.
#include "switchyard/train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "switchyard/core/error.h"

namespace sy::train {

void AdamW::step(std::map<std::string, Tensor>& params, const std::map<std::string, Tensor>& grads, double lr) {
  ++steps_;
  const float b1 = static_cast<float>(options_.beta1), b2 = static_cast<float>(options_.beta2);
  const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(steps_));
  const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(steps_));
  const float step_size = static_cast<float>(lr / bias1);
  const float bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  const float decay = static_cast<float>(1.0 - lr * options_.weight_decay);
  const float eps = static_cast<float>(options_.eps);
  for (auto& [name, p] : params) {
    auto git = grads.find(name);
    if (git == grads.end()) continue;
    const Tensor& g = git->second;
    Tensor& m = exp_avg_[name];
    Tensor& v = exp_avg_sq_[name];
    if (!m.defined()) {
      m = Tensor::zeros(p.shape(), DType::kF32);
      v = Tensor::zeros(p.shape(), DType::kF32);
    }
    float* pp = p.f32();
    const float* gp = g.f32();
    float* mp = m.f32();
    float* vp = v.f32();
    for (int64_t i = 0; i < p.numel(); ++i) {
      pp[i] *= decay;
      mp[i] = mp[i] + (1.f - b1) * (gp[i] - mp[i]);  // torch lerp_(g, 1 - b1) for weights < 0.5
      vp[i] = vp[i] * b2 + (1.f - b2) * gp[i] * gp[i];
      const float denom = std::sqrt(vp[i]) / bias2_sqrt + eps;
      pp[i] -= step_size * mp[i] / denom;
    }
  }
}

std::map<std::string, Tensor> AdamW::state() const {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : exp_avg_) out["exp_avg." + name] = t;
  for (const auto& [name, t] : exp_avg_sq_) out["exp_avg_sq." + name] = t;
  return out;
}

void AdamW::load_state(const std::map<std::string, Tensor>& state, int64_t steps) {
  exp_avg_.clear();
  exp_avg_sq_.clear();
  for (const auto& [key, t] : state) {
    if (key.rfind("exp_avg_sq.", 0) == 0) exp_avg_sq_[key.substr(11)] = t.to(DType::kF32);
    else if (key.rfind("exp_avg.", 0) == 0) exp_avg_[key.substr(8)] = t.to(DType::kF32);
    else throw make_error<FormatError>("train", "unexpected optimizer state tensor \"", key, "\"");
  }
  steps_ = steps;
}

double clip_grad_norm(std::map<std::string, Tensor>& grads, double max_norm) {
  // As torch: the norm of the per-tensor norms, each computed in f32.
  double total_sq = 0;
  for (const auto& [name, g] : grads) {
    double sq = 0;
    for (int64_t i = 0; i < g.numel(); ++i) sq += double(g.f32()[i]) * g.f32()[i];
    float norm = static_cast<float>(std::sqrt(sq));
    total_sq += double(norm) * norm;
  }
  const double total = std::sqrt(total_sq);
  if (max_norm > 0) {
    const float coef = static_cast<float>(std::min(1.0, max_norm / (total + 1e-6)));
    for (auto& [name, g] : grads) {
      for (int64_t i = 0; i < g.numel(); ++i) g.f32()[i] *= coef;
    }
  }
  return total;
}

double learning_rate(const LrOptions& o, int64_t step) {
  if (o.warmup > 0 && step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, o.total_steps - o.warmup));
  const double progress = std::clamp(static_cast<double>(step - o.warmup) / span, 0.0, 1.0);
  switch (o.schedule) {
    case LrSchedule::kConstant: return o.lr;
    case LrSchedule::kCosine: return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(M_PI * progress));
    case LrSchedule::kWsd: {
      const double decay_start = 1.0 - o.decay_fraction;
      if (progress <= decay_start) return o.lr;
      return o.lr + (o.min_lr - o.lr) * (progress - decay_start) / std::max(o.decay_fraction, 1e-12);
    }
  }
  return o.lr;
}

}  // namespace sy::train
