// Layout: one training layout of MoE Parallel Folding (Megatron Core): attention ranks TP x CP x DP x PP and
// MoE ranks ETP x EP x EDP x PP on the same world, plus schedule, micro-batch and recompute choices.
// Parsing of the --layout string and the legality rules live here; costs live in cost_model.h.
#pragma once

#include <string>
#include <vector>

#include "switchyard/plan/model.h"

namespace sy::plan {

enum class Recompute { kNone, kSelective, kFull };
const char* recompute_name(Recompute r);

// The training job the layouts are planned for.
struct TrainJob {
  int num_gpus = 0;
  int seq_len = 0;
  int global_batch = 0;      // sequences per optimizer step
  double imbalance = 1.0;    // routing skew: tokens on the busiest expert / mean (>= 1)
  double ep_overlap = 0.0;   // fraction of EP all-to-all hidden behind compute (0: Megatron default)
  double tp_overlap = 0.0;   // fraction of TP/SP collectives hidden behind GEMMs
  bool overlap_grad_reduce = true;  // DP/EDP gradient reduce-scatter overlapped with the last backward
  bool overlap_param_gather = true; // distributed optimizer parameter all-gather overlapped with forward
};

struct Layout {
  int tp = 1, cp = 1, pp = 1, vpp = 1;  // attention mapping (DP derived)
  int ep = 1, etp = 1;                  // MoE mapping (EDP derived)
  int mbs = 1;
  Recompute recompute = Recompute::kNone;
  bool distributed_optimizer = true;
  bool sequence_parallel = true;  // SP with TP>1 (Megatron requires it for MoE)
  bool fold = true;               // MoE Parallel Folding; false: legacy mapping (EP inside DP, ETP = TP, no CP)
  // Derived by derive(): data-parallel sizes and micro-batches per step.
  int dp = 0, edp = 0, num_microbatches = 0;
};

// Parses "tp=2,cp=1,pp=8,vpp=4,ep=8,etp=1,mbs=1,recompute=selective[,dist_opt=1,sp=1,fold=1]".
// Throws InvalidArgument for unknown keys, bad values, and for keys that name an illegal mapping axis.
Layout parse_layout(const std::string& text);
std::string format_layout(const Layout& l);

// One violated rule: a stable id (for tests and JSON) and a message saying what to change.
struct Violation {
  std::string rule;
  std::string message;
};

// Fills dp, edp and num_microbatches and returns every violated structural rule (empty: legal).
// Memory capacity is checked by the cost model, which knows the device.
std::vector<Violation> check_layout(const PlanModel& model, const TrainJob& job, Layout& layout);

// Layers of each (stage, chunk): chunk c of stage s holds the (c * pp + s)-th block of layers; blocks differ
// in size by at most one layer when the layer count does not divide pp * vpp (a custom pipeline layout).
// Returns, per virtual block b = c * pp + s, the [first, last) layer range.
std::vector<std::pair<int, int>> pipeline_blocks(int num_layers, int pp, int vpp);

}  // namespace sy::plan
