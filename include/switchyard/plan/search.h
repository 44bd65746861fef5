// Layout search: enumerate the legal MoE Parallel Folding layouts of a job, drop those over memory, rank the
// rest by step time. Single-threaded and allocation-light so that it evaluates >100k layouts per second.
#pragma once

#include <functional>
#include <vector>

#include "switchyard/plan/cost_model.h"

namespace sy::plan {

struct SearchOptions {
  int top_k = 5;
  int max_tp = 0;    // 0: GPUs per node
  int max_cp = 16;
  int max_mbs = 8;
  std::vector<Recompute> recompute = {Recompute::kNone, Recompute::kSelective, Recompute::kFull};
  // Called now and then with the fraction done (0..1); used by the CLI for a progress bar.
  std::function<void(double)> progress;
};

struct SearchResult {
  std::vector<Estimate> best;     // feasible layouts, fastest first
  long long evaluated = 0;        // layouts whose cost was estimated
  long long feasible = 0;         // of those, legal and within memory
  double seconds = 0;             // wall time of the search
};

SearchResult search_layouts(const CostModel& cost, const SearchOptions& options);

}  // namespace sy::plan
