// DispatchLayout: where every (token, slot) assignment goes, computed before any data moves.
// Rows are the assignments sorted by expert (stable in token order): rows [offsets[e], offsets[e+1]) belong
// to expert e. Permute gathers token rows into that order; combine scatters expert outputs back with the
// routing weights. In this single-process form every expert is local (EP = 1).
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/moe/router.h"

namespace sy::moe {

struct DispatchLayout {
  int num_experts = 0;
  int64_t num_tokens = 0;
  int top_k = 0;
  std::vector<int64_t> tokens_per_expert;  // (experts,)
  std::vector<int64_t> offsets;            // (experts + 1,): prefix sums of tokens_per_expert
  std::vector<int64_t> row_assignment;     // (rows,): [r] = t * top_k + s of the assignment in row r
  std::vector<int64_t> assignment_row;     // (tokens * top_k,): inverse of row_assignment
  int64_t num_rows() const { return static_cast<int64_t>(row_assignment.size()); }
};

DispatchLayout make_dispatch_layout(const Routing& routing, int num_experts);

// permuted[r, :] = x[row_assignment[r] / top_k, :].  x: (tokens, hidden) f32 -> (rows, hidden).
Tensor permute_tokens(const Tensor& x, const DispatchLayout& layout);

// out[t, :] += sum_s weight[t, s] * expert_out[assignment_row[t * top_k + s], :], summed in slot order.
// expert_out: (rows, hidden); out: (tokens, hidden).
void combine_tokens(const Tensor& expert_out, const DispatchLayout& layout, const Routing& routing, Tensor& out);

}  // namespace sy::moe
