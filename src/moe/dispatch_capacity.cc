// Send layouts of the token dispatcher: capacity, drop decisions (by probability or by position), optional
// padding, and the sort of one rank's assignments by expert (stable in token order). Moves no data.
#include <algorithm>
#include <cmath>

#include "switchyard/core/error.h"
#include "switchyard/moe/token_dispatcher.h"

namespace sy::moe {

int64_t expert_capacity(int64_t num_tokens, int top_k, int num_experts, double factor) {
  SY_REQUIRE(factor > 0, InvalidArgument, "dispatch", "capacity factor must be > 0 (got ", factor, ")");
  return static_cast<int64_t>(std::ceil(static_cast<double>(num_tokens) * top_k / num_experts * factor));
}

SendLayout make_send_layout(const int32_t* expert, const float* weight, int64_t num_tokens, int top_k, int num_experts,
                            const DispatcherOptions& options) {
  const int64_t assignments = num_tokens * top_k;
  // by_expert[e]: assignments routed to e, in token order.
  std::vector<std::vector<int64_t>> by_expert(static_cast<size_t>(num_experts));
  for (int64_t a = 0; a < assignments; ++a) {
    const int32_t e = expert[a];
    SY_CHECK(e >= 0 && e < num_experts, "dispatch: expert ", e, " of ", num_experts);
    by_expert[e].push_back(a);
  }
  const bool capped = options.capacity_factor > 0;
  const int64_t capacity = capped ? expert_capacity(num_tokens, top_k, num_experts, options.capacity_factor) : 0;
  SendLayout l;
  l.expert_offsets.assign(num_experts + 1, 0);
  l.assignment_row.assign(assignments, -1);
  for (int e = 0; e < num_experts; ++e) {
    std::vector<int64_t>& kept = by_expert[e];
    if (capped && static_cast<int64_t>(kept.size()) > capacity) {
      if (options.drop_policy == DropPolicy::kProbability) {
        // Highest weights survive; among equal weights the earlier token.
        std::stable_sort(kept.begin(), kept.end(), [&](int64_t a, int64_t b) { return weight[a] > weight[b]; });
        kept.resize(capacity);
        std::sort(kept.begin(), kept.end());
      } else {
        kept.resize(capacity);
      }
    }
    for (int64_t a : kept) {
      l.assignment_row[a] = static_cast<int64_t>(l.row_assignment.size());
      l.row_assignment.push_back(a);
    }
    if (capped && options.pad_to_capacity) {
      for (int64_t i = static_cast<int64_t>(kept.size()); i < capacity; ++i) l.row_assignment.push_back(-1);
    }
    l.expert_offsets[e + 1] = static_cast<int64_t>(l.row_assignment.size());
  }
  return l;
}

}  // namespace sy::moe
