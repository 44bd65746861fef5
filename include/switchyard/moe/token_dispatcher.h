// TokenDispatcher: moves routed tokens to the ranks that own their experts and the expert outputs back, over
// an expert-parallel communicator (EP ranks; rank r owns experts [r*E/EP, (r+1)*E/EP)). Layout first:
// plan() decides drops, counts rows per expert and per rank, exchanges the counts and takes prefix sums,
// moving no token data; then dispatch() moves rows and combine() brings outputs back with the same handle.
//   strategies: all-to-all (rows go only where they are needed) or all-gather (every rank receives every
//               token and keeps the rows of its experts; combine is a reduce-scatter of partial sums);
//   regimes:    dropless, or capacity dropping: capacity = ceil(tokens * top_k / experts * factor) rows per
//               expert per source rank, dropping the lowest-probability or the latest assignments, with
//               optional padding to exactly `capacity` rows (static shapes);
//   payload:    f32 rows, or int8 rows with one f32 scale per row (dispatch only; combine stays f32).
// With EP = 1 (or a local communicator) it is the single-process MoE path. Not here: routing (router.h),
// expert math (experts.h), GPU buffers.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/moe/router.h"
#include "switchyard/parallel/comm.h"

namespace sy::moe {

enum class DispatchStrategy { kAllToAll, kAllGather };
enum class DropPolicy { kProbability, kPosition };

struct DispatcherOptions {
  DispatchStrategy strategy = DispatchStrategy::kAllToAll;
  double capacity_factor = 0.0;  // <= 0: dropless
  DropPolicy drop_policy = DropPolicy::kProbability;
  bool pad_to_capacity = false;  // capacity mode only
  bool int8_payload = false;     // quantize dispatched rows to int8 with a per-row scale
};

// ceil(num_tokens * top_k / num_experts * factor); num_tokens are one rank's tokens.
int64_t expert_capacity(int64_t num_tokens, int top_k, int num_experts, double factor);

// One source rank's assignments in send order: sorted by expert, stable in token order, after drops.
struct SendLayout {
  std::vector<int64_t> row_assignment;  // (rows,): [r] = t * top_k + s sent in row r, or -1 for a padding row
  std::vector<int64_t> expert_offsets;  // (experts + 1,): rows [off[e], off[e+1]) go to expert e
  std::vector<int64_t> assignment_row;  // (tokens * top_k,): row of assignment a, or -1 when dropped
};
// expert, weight: (tokens, top_k) as in Routing.
SendLayout make_send_layout(const int32_t* expert, const float* weight, int64_t num_tokens, int top_k, int num_experts,
                            const DispatcherOptions& options);

// Everything dispatch and combine need, computed by plan(). Element meanings:
struct DispatchHandle {
  int64_t num_tokens = 0;  // this rank's tokens
  int top_k = 0;
  std::vector<float> weight;   // (tokens, top_k): combine weights of this rank's tokens
  SendLayout send;             // this rank's rows in send order
  std::vector<int64_t> send_counts;     // (ranks,): rows this rank sends to rank r
  std::vector<int64_t> recv_counts;     // (ranks,): rows this rank receives from rank r
  std::vector<int64_t> recv_per_expert; // (ranks, local experts): [s, l] rows from rank s for local expert l
  std::vector<int64_t> expert_offsets;  // (local experts + 1,): prefix sums of the expert-major received rows
  // all-gather only: every rank's token count, expert ids and weights, and the send layouts of all ranks.
  std::vector<int64_t> tokens_per_rank;      // (ranks,)
  std::vector<SendLayout> rank_layouts;      // (ranks,)
  std::vector<int32_t> all_expert;           // (all tokens, top_k)
  std::vector<float> all_weight;             // (all tokens, top_k)
  int64_t num_expert_rows() const { return expert_offsets.empty() ? 0 : expert_offsets.back(); }
  // tokens_per_local_expert[l] = expert_offsets[l+1] - expert_offsets[l] (padding rows included).
  std::vector<int64_t> tokens_per_local_expert() const;
};

class TokenDispatcher {
 public:
  // comm: the EP group. num_experts must be a multiple of comm.size(). Throws InvalidArgument.
  TokenDispatcher(parallel::Comm& comm, int num_experts, const DispatcherOptions& options = {});

  int num_experts() const { return num_experts_; }
  int num_local_experts() const { return num_local_; }
  int first_local_expert() const { return first_local_; }
  const DispatcherOptions& options() const { return options_; }

  // Step 1 (layout): drops, counts, exchanged counts, prefix sums. Collective over the EP group.
  DispatchHandle plan(const Routing& routing) const;
  // Step 2 (data). x: (tokens, hidden) f32 -> (expert rows, hidden) f32 ordered local expert by local expert,
  // within an expert source rank by source rank, within a rank in token order; padding rows are zero.
  Tensor dispatch(const Tensor& x, const DispatchHandle& handle) const;
  // expert_out: (expert rows, hidden) f32 in dispatch's order -> (tokens, hidden): each token's kept slots,
  // weighted and summed in slot order (dropped slots contribute nothing).
  Tensor combine(const Tensor& expert_out, const DispatchHandle& handle) const;

 private:
  parallel::Comm& comm_;
  int num_experts_, num_local_, first_local_;
  DispatcherOptions options_;
  // Staging buffers reused across calls (contents are scratch), so that steady-state dispatch does not
  // fault in fresh pages for every step. A dispatcher is used by one thread at a time.
  mutable std::vector<uint8_t> send_bytes_, recv_bytes_, token_bytes_;
  mutable std::vector<float> send_rows_, back_rows_;
};

}  // namespace sy::moe
