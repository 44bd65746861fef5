// The analytical cost model: FLOPs per layer, time per micro-batch on each pipeline stage, pipeline bubbles,
// communication per collective over hierarchical groups, and memory per device. Pure arithmetic on
// PlanModel + ClusterSpec + TrainJob + Layout; it never runs kernels.
#pragma once

#include <string>
#include <vector>

#include "switchyard/plan/cluster.h"
#include "switchyard/plan/layout.h"
#include "switchyard/plan/model.h"

namespace sy::plan {

// Forward FLOPs of one layer for one sequence of s tokens, split by part. Causal attention counts the
// s(s+1)/2 visible scores ("executed"); the model-FLOPs convention of Megatron and Korthikanti et al. counts
// all s^2 ("model"): both are given so that MFU matches the published convention.
struct LayerFlops {
  double attn_proj = 0;         // QKV (or MLA down/up) and output projections
  double attn_core_causal = 0;  // QK^T and AV over the causal triangle
  double attn_core_full = 0;    // QK^T and AV over the full s x s square
  double mlp = 0;               // dense MLP (0 in a MoE layer)
  double router = 0;
  double routed_experts = 0;    // top_k experts per token
  double shared_experts = 0;
  double total_model() const { return attn_proj + attn_core_full + mlp + router + routed_experts + shared_experts; }
  double total_causal() const { return attn_proj + attn_core_causal + mlp + router + routed_experts + shared_experts; }
};
LayerFlops layer_flops(const PlanModel& m, int layer, int seq_len);
// LM head forward FLOPs for one sequence.
double head_flops(const PlanModel& m, int seq_len);
// Model FLOPs of one training step (forward + backward = 3 x forward, no recompute, full-square attention):
// the numerator of MFU.
double model_flops_per_step(const PlanModel& m, int seq_len, int global_batch);

// Activation bytes one layer keeps for backward for one micro-batch on one device.
struct ActivationOptions {
  int tp = 1, cp = 1, etp = 1, ep = 1;
  bool sequence_parallel = true;
  Recompute recompute = Recompute::kNone;
  double imbalance = 1.0;
};
double layer_activation_bytes(const PlanModel& m, int layer, int seq_len, int mbs, const ActivationOptions& o);

struct TimeBreakdown {  // seconds per step on the slowest pipeline stage (critical path)
  double gemm = 0, attention = 0, memory_bound = 0, recompute = 0;
  double tp_comm = 0, cp_comm = 0, ep_comm = 0, pp_comm = 0;
  double bubble = 0, dp_comm = 0, optimizer = 0;
};
struct MemoryBreakdown {  // bytes on the fullest device
  double weights = 0, grads = 0, optimizer = 0, activations = 0, logits = 0, dispatch = 0, reserved = 0;
  double total() const { return weights + grads + optimizer + activations + logits + dispatch + reserved; }
};

struct Estimate {
  bool feasible = false;            // legal and fits in memory
  std::vector<Violation> violations;
  Layout layout;
  double step_time_s = 0;
  double mfu = 0;                   // model FLOPs / (step time * devices * peak)
  double hfu = 0;                   // executed FLOPs (recompute, causal) / (step time * devices * peak)
  double tflops_per_gpu = 0;        // model FLOP/s per device, TFLOP/s
  double tokens_per_s_per_gpu = 0;
  double memory_gib_per_gpu = 0;
  int memory_stage = 0;             // the stage whose memory is reported
  TimeBreakdown time;
  MemoryBreakdown memory;
};

// Precomputed per-model quantities, so that one estimate costs microseconds (the search needs >100k/s).
class CostModel {
 public:
  CostModel(PlanModel model, ClusterSpec cluster, TrainJob job);
  // Checks the layout and estimates it; a layout over memory capacity is reported infeasible with the
  // "memory" rule (its estimate is still filled in).
  // With explain=false the memory violation carries its rule only (the search needs no message).
  Estimate evaluate(Layout layout, bool explain = true) const;
  const PlanModel& model() const { return model_; }
  const ClusterSpec& cluster() const { return cluster_; }
  const TrainJob& job() const { return job_; }
  double model_flops_per_step() const { return model_flops_step_; }

 private:
  double gemm_time(double m, double n, double k) const;
  double shape_factor(double dim) const;

  PlanModel model_;
  ClusterSpec cluster_;
  TrainJob job_;
  ParamCounts params_;
  int first_dense_ = -1, first_moe_ = -1;  // representative layer of each kind (-1: none)
  LayerFlops dense_flops_, moe_flops_;      // one sequence
  std::vector<int> moe_prefix_;             // MoE layers among the first i layers
  double head_flops_ = 0;
  double exec_flops_per_seq_ = 0;           // causal attention, no recompute
  double model_flops_step_ = 0;
  std::vector<double> log2_dims_, factors_;  // shape table in log2 space
};

}  // namespace sy::plan
