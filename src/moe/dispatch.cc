// DispatchLayout construction (counting sort by expert), permute and combine; see dispatch.h.
#include "switchyard/moe/dispatch.h"

#include <cstring>

#include "switchyard/core/error.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"

namespace sy::moe {

DispatchLayout make_dispatch_layout(const Routing& routing, int num_experts) {
  DispatchLayout l;
  l.num_experts = num_experts;
  l.num_tokens = routing.num_tokens;
  l.top_k = routing.top_k;
  const int64_t assignments = routing.num_tokens * routing.top_k;
  l.tokens_per_expert.assign(num_experts, 0);
  for (int64_t a = 0; a < assignments; ++a) {
    int32_t e = routing.expert[a];
    SY_CHECK(e >= 0 && e < num_experts, "dispatch: expert ", e, " of ", num_experts);
    l.tokens_per_expert[e]++;
  }
  l.offsets.assign(num_experts + 1, 0);
  for (int e = 0; e < num_experts; ++e) l.offsets[e + 1] = l.offsets[e] + l.tokens_per_expert[e];
  l.row_assignment.resize(assignments);
  l.assignment_row.resize(assignments);
  std::vector<int64_t> cursor(l.offsets.begin(), l.offsets.end() - 1);
  for (int64_t a = 0; a < assignments; ++a) {
    int64_t row = cursor[routing.expert[a]]++;
    l.row_assignment[row] = a;
    l.assignment_row[a] = row;
  }
  return l;
}

Tensor permute_tokens(const Tensor& x, const DispatchLayout& layout) {
  SY_CHECK(x.dtype() == DType::kF32 && x.is_contiguous() && x.dim() == 2 && x.size(0) == layout.num_tokens,
           "permute: x ", x.describe());
  const int64_t h = x.size(1), rows = layout.num_rows();
  Tensor out = Tensor::empty({rows, h}, DType::kF32);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t token = layout.row_assignment[r] / layout.top_k;
    std::memcpy(out.f32() + r * h, x.f32() + token * h, static_cast<size_t>(h) * sizeof(float));
  }
  return out;
}

void combine_tokens(const Tensor& expert_out, const DispatchLayout& layout, const Routing& routing, Tensor& out) {
  SY_CHECK(out.dtype() == DType::kF32 && out.is_contiguous() && out.size(0) == layout.num_tokens,
           "combine: out ", out.describe());
  const int64_t h = out.size(1);
  SY_CHECK(expert_out.size(0) == layout.num_rows() && expert_out.size(1) == h, "combine: expert_out ",
           expert_out.describe());
  parallel_for(layout.num_tokens, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      for (int s = 0; s < layout.top_k; ++s) {
        int64_t a = t * layout.top_k + s;
        ops::axpy(out.f32() + t * h, routing.weight[a], expert_out.f32() + layout.assignment_row[a] * h, h);
      }
    }
  });
}

}  // namespace sy::moe
