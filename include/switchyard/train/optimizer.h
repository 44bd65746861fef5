// AdamW with decoupled weight decay (as torch.optim.AdamW computes it, step for step in f32), global
// gradient-norm clipping (as torch.nn.utils.clip_grad_norm_), and learning-rate schedules.
#pragma once

#include <map>
#include <string>

#include "switchyard/core/tensor.h"

namespace sy::train {

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

class AdamW {
 public:
  explicit AdamW(const AdamWOptions& options) : options_(options) {}
  // One update of every parameter with a gradient; `lr` overrides options.lr (schedules).
  void step(std::map<std::string, Tensor>& params, const std::map<std::string, Tensor>& grads, double lr);
  int64_t steps() const { return steps_; }
  // State for checkpoints: "exp_avg.NAME" and "exp_avg_sq.NAME" tensors, and the step count.
  std::map<std::string, Tensor> state() const;
  void load_state(const std::map<std::string, Tensor>& state, int64_t steps);
  const AdamWOptions& options() const { return options_; }

 private:
  AdamWOptions options_;
  int64_t steps_ = 0;
  std::map<std::string, Tensor> exp_avg_, exp_avg_sq_;
};

// Scales all gradients so that their global L2 norm is at most max_norm (no-op when max_norm <= 0).
// Returns the norm before clipping.
double clip_grad_norm(std::map<std::string, Tensor>& grads, double max_norm);

enum class LrSchedule { kConstant, kCosine, kWsd };
struct LrOptions {
  LrSchedule schedule = LrSchedule::kConstant;
  double lr = 1e-3, min_lr = 0.0;
  int64_t warmup = 0, total_steps = 1;
  double decay_fraction = 0.1;  // WSD: the last fraction of steps decays linearly to min_lr
};
// Learning rate at 0-based step `step`: linear warmup over `warmup` steps, then the schedule.
double learning_rate(const LrOptions& o, int64_t step);

}  // namespace sy::train
