// A whole dispatch layout built by one thread block (decode-sized passes), shared by the layout op
// (dispatch.cu) and the fused decode router (router.cu): counts by shared-memory atomics (a count does not
// depend on their order), offsets by a block-wide scan with one expert per thread, and each assignment's row
// from the matches of its expert before it, so rows are grouped by expert and ordered by assignment index
// within one, as sy::moe::make_dispatch_layout orders them. Not a public header.
#pragma once

#include <cstdint>

namespace sy::cuda::detail {

constexpr int kBlockLayoutMaxExperts = 1024;
// Each assignment looks back over the ones before it, so the cost grows with the square: a decode step of 16
// tokens x top-8 is 128 assignments; at 1024 the look-back would cost what one launch saves.
constexpr int kBlockLayoutMaxAssignments = 256;

// Called by every thread of a block of whole warps with blockDim.x >= num_experts (<= 1024), assignments <=
// kBlockLayoutMaxAssignments. expert: (assignments,) ids; an id outside [0, num_experts) sets *bad (when
// given) and gets no row, as the two-kernel layout does. counts (E,), offsets (E + 1,), row_assignment and
// assignment_row (assignments,) are written in global memory.
__device__ inline void block_layout(const int32_t* expert, int assignments, int num_experts, int64_t* counts,
                                    int64_t* offsets, int64_t* row_assignment, int64_t* assignment_row, int* bad) {
  __shared__ int ids[kBlockLayoutMaxAssignments];
  __shared__ int count[kBlockLayoutMaxExperts];
  __shared__ int first_row[kBlockLayoutMaxExperts];
  __shared__ int warp_total[32];
  const int i = threadIdx.x, lane = i & 31, warp = i >> 5, warps = blockDim.x >> 5;
  if (i < num_experts) count[i] = 0;
  __syncthreads();
  for (int a = i; a < assignments; a += blockDim.x) {
    int x = expert[a];
    if (x < 0 || x >= num_experts) {
      if (bad) *bad = 1;
      x = -1;  // counted nowhere and given no row
    }
    ids[a] = x;
    if (x >= 0) atomicAdd(&count[x], 1);
  }
  __syncthreads();
  // Exclusive scan of the counts, thread i owning expert i.
  const int v = i < num_experts ? count[i] : 0;
  int incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const int total = lane < warps ? warp_total[lane] : 0;
    int before = total;
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, before, o);
      if (lane >= o) before += y;
    }
    if (lane < warps) warp_total[lane] = before - total;  // exclusive
  }
  __syncthreads();
  const int excl = incl - v + warp_total[warp];
  if (i < num_experts) {
    first_row[i] = excl;
    counts[i] = v;
    offsets[i] = excl;
    if (i == num_experts - 1) offsets[num_experts] = excl + v;
  }
  __syncthreads();
  for (int a = i; a < assignments; a += blockDim.x) {
    const int x = ids[a];
    if (x < 0) continue;
    int before = 0;
    for (int b = 0; b < a; ++b) before += ids[b] == x;
    const int64_t row = first_row[x] + before;
    row_assignment[row] = a;
    assignment_row[a] = row;
  }
  __syncthreads();  // the shared arrays may be reused by the caller
}

}  // namespace sy::cuda::detail
