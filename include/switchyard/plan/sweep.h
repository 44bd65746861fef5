// Model-shape sweep at a fixed parameter budget (as Pangu Ultra MoE chose its shape): vary layers, hidden
// size, expert count and top-k around a base model, set the expert width so that total parameters stay on
// budget, search the best layout of each shape, and rank shapes by training throughput.
// Throughput only: the sweep says nothing about model quality.
#pragma once

#include <functional>
#include <vector>

#include "switchyard/plan/search.h"

namespace sy::plan {

struct SweepOptions {
  double param_budget = 0;  // total parameters; 0: the base model's total
  std::vector<double> layer_scales = {0.75, 1.0, 1.25};
  std::vector<double> hidden_scales = {0.75, 1.0, 1.25};
  std::vector<double> expert_scales = {0.5, 1.0, 2.0};
  std::vector<double> topk_scales = {0.5, 1.0, 2.0};
  int top_k = 5;
  std::function<void(double)> progress;
};

struct ShapeResult {
  PlanModel model;    // the shape (its config), named like "L61-h7680-E256-k8-fe2048"
  ParamCounts params;
  Estimate best;      // its fastest feasible layout
};

struct SweepResult {
  std::vector<ShapeResult> best;  // fastest shapes first (tokens/s per device)
  int shapes = 0;                 // shapes tried (on budget)
  long long layouts = 0;          // layouts estimated in all
};

// Throws InvalidArgument when the base model is dense (nothing to trade at a fixed budget).
SweepResult sweep_shapes(const PlanModel& base, const ClusterSpec& cluster, const TrainJob& job, const SweepOptions& o);

}  // namespace sy::plan
