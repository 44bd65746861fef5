// CUDA fused router: scores, group-limited top-k, combine weights, one block per token with a thread per
// expert (rounded up to whole warps; thread j owns expert j); argmax and reductions by warp shuffles, or by
// one warp per token with redux.sync top-k rounds where the routing allows (set_warp_routing).
// Mirrors sy::moe::route decision for decision. Also the decode router: the router GEMV, the routing and the
// dispatch layout of a decode-sized pass in one launch, finished by its last block or (set_cluster_routing)
// on a thread-block cluster. Not here: several tokens per block for small expert counts.
#include <cooperative_groups.h>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "block_layout.cuh"
#include "block_reduce.cuh"
#include "l2_prefetch.cuh"
#include "op_common.cuh"

namespace sy::cuda {

namespace {

namespace cg = cooperative_groups;
using detail::block_argmax;
using detail::block_reduce;

constexpr int kMaxExperts = 256;

struct RouterParams {
  int num_experts, top_k, num_groups, topk_groups;
  bool sigmoid, softmax_over_topk, norm_topk_prob, group_top2_sum, has_bias;
  float scale;
  bool warp;  // route in one warp where warp_route_fits (set_warp_routing)
};

std::atomic<bool> g_warp_routing{true};  // H100/H200 2026-12-05: batch-1 decode level or faster, batch 2 6-7% faster
// The decode router's cluster form (set_cluster_routing): H100 2026-12-06, a Qwen3-30B-A3B batch-1 decode step
// 3.6% faster, batch 2 2.5%.
std::atomic<bool> g_cluster_routing{true};

// The routings one warp can take: no group limit, not gpt-oss's softmax over the top k, at most 32 picks.
__host__ __device__ inline bool warp_route_fits(const RouterParams& p) {
  return !p.softmax_over_topk && !(p.num_groups > 1 && p.topk_groups < p.num_groups) && p.top_k <= 32;
}

// The order-preserving key of a routing candidate for the one-warp argmax: a larger value gets a larger key,
// -0 and +0 the same one (beats() calls them equal), NaN key 1 (below every number: it never wins against
// one); 0 is left for "not a candidate" (taken, or past the experts).
__device__ __forceinline__ unsigned candidate_key(float v) {
  if (v != v) return 1u;
  const unsigned u = __float_as_uint(__fadd_rn(v, 0.f));  // -0 + +0 = +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);       // -inf: 0x007fffff, above NaN's key
}

// route_token's decisions for token t by one warp (any warp of the block: only the lane index is used): lane
// l holds experts l, l + 32, ... (up to kMaxExperts / 32 each), the softmax's max and sum are warp
// butterflies, and each top-k round is two warp reductions (redux.sync): the largest candidate key, then the
// lowest expert index holding it (no block barriers: the block form's ~30 barriers and shared-memory scans
// were most of a batch-1 decode router's time). Scores, choices, tie-breaks and weights equal the block
// form's for every input without NaN. Returns lane s's pick (s < top_k; -1 on other lanes).
// kShared: logits is in shared memory (the cluster router's), else global memory that other blocks of the
// same launch wrote (read through L2).
// kPer: the experts each lane holds (32 kPer >= p.num_experts); route_token_warp picks the smallest that fits.
template <bool kShared, int kPer>
__device__ __forceinline__ int route_token_warp_per(const float* logits, int64_t t, const float* bias,
                                                    const RouterParams p, int32_t* out_expert, float* out_weight) {
  const int lane = threadIdx.x & 31, e = p.num_experts;
  const float* row = logits + t * e;
  float score[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int j = lane + 32 * i;
    score[i] = j < e ? (kShared ? row[j] : __ldcg(row + j)) : -INFINITY;
  }
  if (!p.sigmoid) {
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < kPer; ++i) mx = fmaxf(mx, score[i]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    // The sum in block_reduce's order: slot i holds what the block form's warp i holds, each slot reduced by
    // the same butterfly, then the slots added in order (warps past the experts add an exact +0 there), so
    // the scores, and with them every decision and weight, equal the block form's bit for bit.
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      score[i] = lane + 32 * i < e ? expf(score[i] - mx) : 0.f;
      if (32 * i >= e) continue;  // uniform over the warp
      float v = score[i];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      sum = i == 0 ? v : sum + v;
    }
#pragma unroll
    for (int i = 0; i < kPer; ++i) score[i] = score[i] / sum;
  } else {
#pragma unroll
    for (int i = 0; i < kPer; ++i) score[i] = 1.f / (1.f + expf(-score[i]));
  }
  unsigned key[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int j = lane + 32 * i;
    key[i] = j < e ? candidate_key(p.has_bias ? score[i] + bias[j] : score[i]) : 0u;
  }
  int my_pick = -1;  // lane s keeps round s's expert
  for (int s = 0; s < p.top_k; ++s) {
    unsigned best = 0u;
#pragma unroll
    for (int i = 0; i < kPer; ++i) best = max(best, key[i]);
    const unsigned top = __reduce_max_sync(0xffffffffu, best);
    unsigned mine = 0xffffffffu;  // this lane's lowest expert holding the top key
#pragma unroll
    for (int i = kPer - 1; i >= 0; --i) {
      if (top != 0u && key[i] == top) mine = static_cast<unsigned>(lane + 32 * i);
    }
    const unsigned pick = __reduce_min_sync(0xffffffffu, mine);  // all lanes agree; ~0u: nothing left
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      if (static_cast<unsigned>(lane + 32 * i) == pick) key[i] = 0u;
    }
    if (lane == s) my_pick = pick == 0xffffffffu ? -1 : static_cast<int>(pick);
  }
  // Each pick's score from its owner lane (a shuffle per slot: the slot is the requester's, not the owner's).
  float my_choice = 0.f;
  const int owner = my_pick >= 0 ? my_pick & 31 : 0;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const float v = __shfl_sync(0xffffffffu, score[i], owner);
    if (my_pick >= 0 && (my_pick >> 5) == i) my_choice = v;
  }
  float sum = 0.f;  // in pick order, as the block form sums
  for (int s = 0; s < p.top_k; ++s) sum += __shfl_sync(0xffffffffu, my_choice, s);
  const float denom = p.norm_topk_prob ? (p.sigmoid ? sum + 1e-20f : sum) : 1.f;
  if (lane < p.top_k) {
    out_expert[t * p.top_k + lane] = my_pick;
    out_weight[t * p.top_k + lane] = (p.norm_topk_prob ? my_choice / denom : my_choice) * p.scale;
  }
  return lane < p.top_k ? my_pick : -1;
}

// route_token_warp_per with the fewest slots per lane that hold the experts: a prefill pass's routing is bound
// by the warps' instructions, and Qwen3's 128 experts take half of kMaxExperts' slots (H100, 2026-12-06:
// 16384 tokens in 24 us with 8 slots a lane). The same decisions and weights at every width (slots past the
// experts take no part in any sum or choice).
template <bool kShared = false>
__device__ __forceinline__ int route_token_warp(const float* logits, int64_t t, const float* bias,
                                                const RouterParams p, int32_t* out_expert, float* out_weight) {
  static_assert(kMaxExperts == 256, "slots per lane: 2, 4 or 8");
  if (p.num_experts <= 64) return route_token_warp_per<kShared, 2>(logits, t, bias, p, out_expert, out_weight);
  if (p.num_experts <= 128) return route_token_warp_per<kShared, 4>(logits, t, bias, p, out_expert, out_weight);
  return route_token_warp_per<kShared, 8>(logits, t, bias, p, out_expert, out_weight);
}

// Routes token t (row t of logits) with every thread of the block (whole warps, blockDim.x >= experts).
// Logits are read with L2 loads (__ldcg): in the decode router other blocks wrote them in the same launch.
// Consecutive calls in one block are safe (the shared scratch is fenced at entry).
__device__ __forceinline__ void route_token(const float* logits, int64_t t, const float* bias, const RouterParams p,
                                            int32_t* out_expert, float* out_weight) {
  __shared__ float sval[kMaxExperts];
  __shared__ int sidx[kMaxExperts];
  __shared__ float choice[kMaxExperts];
  __shared__ float group_score[kMaxExperts];
  __shared__ bool group_kept[kMaxExperts];
  __shared__ int picked[kMaxExperts];
  __syncthreads();  // a previous token's readers of the scratch are done
  const int e = p.num_experts, j = threadIdx.x;
  const bool mine = j < e;
  const float* row = logits + t * e;
  const float z = mine ? __ldcg(row + j) : -INFINITY;
  int32_t* oe = out_expert + t * p.top_k;
  float* ow = out_weight + t * p.top_k;

  if (p.softmax_over_topk) {  // gpt-oss: top-k of the raw logits, softmax over those k
    bool taken = false;
    for (int s = 0; s < p.top_k; ++s) {
      const int w = block_argmax(z, mine && !taken ? j : -1, sval, sidx);
      if (j == w) taken = true;
      if (j == 0) picked[s] = w;
    }
    __syncthreads();
    if (j == 0) {
      const float mx = __ldcg(row + picked[0]);
      float sum = 0.f;
      for (int s = 0; s < p.top_k; ++s) sum += expf(__ldcg(row + picked[s]) - mx);
      for (int s = 0; s < p.top_k; ++s) {
        oe[s] = picked[s];
        ow[s] = expf(__ldcg(row + picked[s]) - mx) / sum;
      }
    }
    return;
  }

  float score;
  if (!p.sigmoid) {
    const float mx = block_reduce(z, sval, true);
    const float ex = mine ? expf(z - mx) : 0.f;
    const float sum = block_reduce(ex, sval, false);
    score = ex / sum;
  } else {
    score = 1.f / (1.f + expf(-z));
  }
  float c = mine ? (p.has_bias ? score + bias[j] : score) : -INFINITY;
  if (p.num_groups > 1 && p.topk_groups < p.num_groups) {
    const int group_size = e / p.num_groups;
    if (mine) choice[j] = c;
    __syncthreads();
    if (j < p.num_groups) {  // thread g scores group g serially (max, or sum of its top 2)
      const float* gs = choice + j * group_size;
      float best = -INFINITY, second = -INFINITY;
      int best_i = -1;
      for (int i = 0; i < group_size; ++i) {
        if (best_i < 0 || gs[i] > best) {
          best = gs[i];
          best_i = i;
        }
      }
      if (p.group_top2_sum && group_size >= 2) {
        int second_i = -1;
        for (int i = 0; i < group_size; ++i) {
          if (i != best_i && (second_i < 0 || gs[i] > second)) {
            second = gs[i];
            second_i = i;
          }
        }
        group_score[j] = best + second;
      } else {
        group_score[j] = best;
      }
      group_kept[j] = false;
    }
    __syncthreads();
    for (int s = 0; s < p.topk_groups; ++s) {
      const bool candidate = j < p.num_groups && !group_kept[j];
      const int w = block_argmax(candidate ? group_score[j] : 0.f, candidate ? j : -1, sval, sidx);
      if (j == w) group_kept[j] = true;
      __syncthreads();
    }
    // Experts of dropped groups are masked as the CPU reference does: 0 for softmax, -inf for sigmoid.
    if (mine && !group_kept[j / group_size]) c = p.sigmoid ? -INFINITY : 0.f;
  }
  bool taken = false;
  for (int s = 0; s < p.top_k; ++s) {
    const int w = block_argmax(c, mine && !taken ? j : -1, sval, sidx);
    if (j == w) {
      taken = true;
      picked[s] = w;
      choice[s] = score;
    }
    __syncthreads();
  }
  if (j == 0) {
    float sum = 0.f;
    for (int s = 0; s < p.top_k; ++s) sum += choice[s];
    const float denom = p.norm_topk_prob ? (p.sigmoid ? sum + 1e-20f : sum) : 1.f;
    for (int s = 0; s < p.top_k; ++s) {
      oe[s] = picked[s];
      ow[s] = (p.norm_topk_prob ? choice[s] / denom : choice[s]) * p.scale;
    }
  }
}

// A block per token (route_token), where one warp cannot route (warp_route_fits false or set off).
__global__ void __launch_bounds__(kMaxExperts) router_kernel(const float* logits, const float* bias,
                                                            RouterParams p, int32_t* out_expert,
                                                            float* out_weight) {
  route_token(logits, blockIdx.x, bias, p, out_expert, out_weight);
}

// A warp per token (route_token_warp), kRouterWarpsPerBlock tokens a block: a block per token left three of
// its four warps idle (H100, 2026-12-06: 31 us for 16384 tokens x 128 experts, a block each).
constexpr int kRouterWarpsPerBlock = 8;
__global__ void __launch_bounds__(kRouterWarpsPerBlock * 32) router_warps_kernel(const float* logits,
                                                                                 const float* bias, RouterParams p,
                                                                                 int64_t tokens, int32_t* out_expert,
                                                                                 float* out_weight) {
  const int64_t t = blockIdx.x * int64_t{kRouterWarpsPerBlock} + threadIdx.x / 32;
  if (t < tokens) route_token_warp(logits, t, bias, p, out_expert, out_weight);
}

// The decode router, one launch: logits[t, e] = x_t . W_e (+ b_e) for every token and expert, a warp per expert
// (grid-stride), 16-byte weight loads, the first of them issued before waiting on the previous kernel (weights
// are constants: their latency hides behind it under programmatic launch); then the last block to finish (a
// counter in global memory, which it resets for the next launch) routes every token and builds the dispatch
// layout. x: (n, k) bf16, n <= kDecodeRouterTokens; w: (E, k) bf16 with k % 8 == 0, both 16-byte aligned.
// Where one warp routes (warp_route_fits) and there are at most 32 picks (n * top_k), a warp per token
// routes and the block builds the layout from the picks in shared memory (picks_layout: a thread per expert
// and per pick, no block-wide scan, no read-back of the ids through global memory). Else the tokens are
// routed one after another by the whole block (a few microseconds each, where route() gives every token its
// own block) and block_layout builds the layout, so only the smallest passes take this path: batch-1 decode
// gains most.
constexpr int kDecodeRouterTokens = 4;
constexpr int kDecodeRouterWarps = 8;
constexpr int kRouterLoads = 8;
static_assert(kDecodeRouterWarps * 32 >= kMaxExperts, "the routing block needs a thread per expert");
static_assert(kDecodeRouterWarps >= kDecodeRouterTokens, "one-warp routing gives each token its own warp");
static_assert(kMaxExperts <= detail::kBlockLayoutMaxExperts, "block_layout takes every routable expert count");

// block_layout's result for `assignments` <= 32 ids in shared memory (ids outside [0, num_experts) get no
// row and count nowhere, as there), by every thread of a block with blockDim.x >= num_experts: thread e counts
// the ids equal to expert e and below it (its count and offset), thread a the ids below assignment a's and
// the equal ones before it (its row). No atomics, scans or read-back of the ids through global memory.
__device__ __forceinline__ void picks_layout(const int* ids, int assignments, int num_experts, int64_t* counts,
                                             int64_t* offsets, int64_t* row_assignment, int64_t* assignment_row) {
  const int i = threadIdx.x;
  auto valid = [&](int id) { return id >= 0 && id < num_experts; };
  if (i < num_experts) {
    int count = 0, below = 0;
    for (int b = 0; b < assignments; ++b) {
      const int other = ids[b];
      count += other == i;
      below += valid(other) && other < i;
    }
    counts[i] = count;
    offsets[i] = below;
  }
  if (i == 0) {
    int total = 0;
    for (int b = 0; b < assignments; ++b) total += valid(ids[b]);
    offsets[num_experts] = total;
  }
  if (i < assignments && valid(ids[i])) {
    const int mine = ids[i];
    int row = 0;
    for (int b = 0; b < assignments; ++b) {
      const int other = ids[b];
      row += valid(other) && (other < mine || (other == mine && b < i));
    }
    row_assignment[row] = i;
    assignment_row[i] = row;
  }
}

// The router GEMV of the decode routers: logits[t, e] = x_t . W_e (+ b_e) for the n tokens, a warp per expert
// (grid-stride over warps: warp `first` of `stride`), every 16-byte weight load of a lane's first pass issued
// before the programmatic-launch wait (the weights are constants of the chain), x read after it; after_wait()
// runs once the wait returns, on every thread. Each finished logit goes to store(t, e, value) on lane 0.
template <class AfterWait, class Store>
__device__ __forceinline__ void router_gemv(const __nv_bfloat16* x, const __nv_bfloat16* w, const float* w_bias,
                                            int n, int64_t k, int e_count, int first, int stride,
                                            AfterWait after_wait, Store store) {
  const int lane = threadIdx.x & 31;
  // kRouterLoads 16-byte loads of the row in flight per lane before any is used (a 2048-wide row in one go):
  // one load at a time left the pass bound by latency.
  uint4 wv[kRouterLoads];
  auto load_weights = [&](int e, int64_t c0) {
    const __nv_bfloat16* we = w + static_cast<int64_t>(e) * k;
#pragma unroll
    for (int u = 0; u < kRouterLoads; ++u) {
      const int64_t c = c0 + u * 32 * 8;
      wv[u] = c < k ? __ldcs(reinterpret_cast<const uint4*>(we + c)) : make_uint4(0, 0, 0, 0);
    }
  };
  if (first < e_count) load_weights(first, lane * 8);  // before the wait: weights are no earlier kernel's output
  detail::chain_wait();
  after_wait();
  bool loaded = true;
  for (int e = first; e < e_count; e += stride) {
    float acc[kDecodeRouterTokens];
#pragma unroll
    for (int t = 0; t < kDecodeRouterTokens; ++t) acc[t] = 0.f;
    for (int64_t c0 = lane * 8; c0 < k; c0 += kRouterLoads * 32 * 8) {
      if (!loaded) load_weights(e, c0);
      loaded = false;
#pragma unroll
      for (int u = 0; u < kRouterLoads; ++u) {
        const int64_t c = c0 + u * 32 * 8;
        if (c >= k) break;
        float wf[8];
        detail::unpack_bf16x8(wv[u], wf);
#pragma unroll
        for (int t = 0; t < kDecodeRouterTokens; ++t) {
          if (t >= n) break;
          float xf[8];
          detail::unpack_bf16x8(*reinterpret_cast<const uint4*>(x + t * k + c), xf);
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[t] += wf[2 * q] * xf[2 * q] + wf[2 * q + 1] * xf[2 * q + 1];
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kDecodeRouterTokens; ++t) {
      if (t >= n) break;
      float v = acc[t];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) store(t, e, v + (w_bias ? w_bias[e] : 0.f));
    }
  }
}

__global__ void __launch_bounds__(kDecodeRouterWarps * 32) decode_router_kernel(
    const __nv_bfloat16* x, const __nv_bfloat16* w, const float* w_bias, int n, int64_t k, float* logits,
    const float* score_bias, RouterParams p, int32_t* out_expert, float* out_weight, int64_t* counts,
    int64_t* offsets, int64_t* row_assignment, int64_t* assignment_row, unsigned* done, detail::L2Range prefetch) {
  detail::chain_release();
  detail::prefetch_l2(prefetch);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, e_count = p.num_experts;
  router_gemv(x, w, w_bias, n, k, e_count, blockIdx.x * kDecodeRouterWarps + warp, gridDim.x * kDecodeRouterWarps,
              [] {}, [&](int t, int e, float v) { logits[t * e_count + e] = v; });
  // Last block in: every block's logits are visible after the barrier, its first thread's fence and the
  // counter (the grid-barrier pattern: bar.sync orders the block's writes before thread 0's release).
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(done, 1u) == gridDim.x - 1;
    if (last) __threadfence();
  }
  __syncthreads();
  if (!last) return;
  const int assignments = n * p.top_k;
  if (p.warp && warp_route_fits(p) && assignments <= 32) {
    __shared__ int picks[32];
    if (warp < n) {
      const int pick = route_token_warp(logits, warp, score_bias, p, out_expert, out_weight);
      if (lane < p.top_k) picks[warp * p.top_k + lane] = pick;
    }
    __syncthreads();
    picks_layout(picks, assignments, e_count, counts, offsets, row_assignment, assignment_row);
    if (threadIdx.x == 0) *done = 0u;
    return;
  }
  if (p.warp && warp_route_fits(p)) {  // a warp per token, side by side
    if (warp < n) route_token_warp(logits, warp, score_bias, p, out_expert, out_weight);
  } else {
    for (int t = 0; t < n; ++t) route_token(logits, t, score_bias, p, out_expert, out_weight);
  }
  __syncthreads();  // the routed ids are visible to the whole block
  detail::block_layout(out_expert, n * p.top_k, e_count, counts, offsets, row_assignment, assignment_row, nullptr);
  if (threadIdx.x == 0) *done = 0u;
}

// The decode router's cluster form, for the passes the one-warp routing takes with at most 32 picks: one
// thread-block cluster of kClusterRouterBlocks blocks computes the logits (router_gemv: a warp per expert)
// and puts each into block 0's shared memory through distributed shared memory as well as into `logits`;
// after one cluster barrier block 0 routes from its shared memory and builds the layout (picks_layout). What
// the cluster replaces is the grid-wide finish of decode_router_kernel: a fence and a counter in global
// memory, then the logits read back through L2, all on the step's critical path. No counter to reset.
constexpr int kClusterRouterBlocks = 8;  // the largest portable cluster
constexpr int kClusterRouterWarps = 16;  // 8 x 16 warps: a warp per expert up to 128 experts, two up to 256
static_assert(kClusterRouterWarps * 32 >= kMaxExperts, "picks_layout needs a thread per expert");
static_assert(kClusterRouterWarps >= kDecodeRouterTokens, "one-warp routing gives each token its own warp");

__global__ void __launch_bounds__(kClusterRouterWarps * 32) decode_router_cluster_kernel(
    const __nv_bfloat16* x, const __nv_bfloat16* w, const float* w_bias, int n, int64_t k, float* logits,
    const float* score_bias, RouterParams p, int32_t* out_expert, float* out_weight, int64_t* counts,
    int64_t* offsets, int64_t* row_assignment, int64_t* assignment_row, detail::L2Range prefetch) {
  __shared__ float gathered[kDecodeRouterTokens * kMaxExperts];  // block 0's: the cluster's logits, [t][e]
  __shared__ int picks[32];
  detail::chain_release();
  detail::prefetch_l2(prefetch);
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, e_count = p.num_experts;
  float* to_block0 = cluster.map_shared_rank(gathered, 0);
  // Block 0's shared memory is written only once every block of the cluster has started: each arrives here
  // and waits after the programmatic-launch wait (by then the others have long arrived).
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  router_gemv(x, w, w_bias, n, k, e_count, rank * kClusterRouterWarps + warp,
              static_cast<int>(cluster.num_blocks()) * kClusterRouterWarps,
              [] { asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); },
              [&](int t, int e, float v) {
                logits[t * e_count + e] = v;
                to_block0[t * e_count + e] = v;
              });
  cluster.sync();  // every logit is in block 0's shared memory; the other blocks are done
  if (rank != 0) return;
  if (warp < n) {
    const int pick = route_token_warp<true>(gathered, warp, score_bias, p, out_expert, out_weight);
    if (lane < p.top_k) picks[warp * p.top_k + lane] = pick;
  }
  __syncthreads();
  picks_layout(picks, n * p.top_k, e_count, counts, offsets, row_assignment, assignment_row);
}

RouterParams router_params(const MoeConfig& o, int e, bool has_bias) {
  return RouterParams{e,
                      o.top_k,
                      std::max(1, o.num_groups),
                      o.topk_groups,
                      o.score_function == ScoreFunction::kSigmoid,
                      o.softmax_over_topk,
                      o.norm_topk_prob,
                      o.group_score == GroupScore::kTop2Sum,
                      has_bias,
                      static_cast<float>(o.routed_scaling_factor),
                      g_warp_routing.load()};
}

// The argument checks route() and decode_route() share.
void check_route_args(const char* op, int64_t t, int e, const Tensor& score_bias, const MoeConfig& o,
                      const Tensor& expert, const Tensor& weight) {
  detail::require_device(op, "expert", expert);
  detail::require_device(op, "weight", weight);
  detail::require_dtype(op, "expert", expert, DType::kI32, DType::kI32);
  detail::require_dtype(op, "weight", weight, DType::kF32);
  SY_REQUIRE(e == o.num_experts && e >= 1 && e <= kMaxExperts && o.top_k >= 1 && o.top_k <= e, InvalidArgument,
             op, e, " experts (at most ", kMaxExperts, "), top_k ", o.top_k);
  SY_REQUIRE(expert.numel() == t * o.top_k && weight.numel() == t * o.top_k, InvalidArgument, op, "expert ",
             expert.describe(), " weight ", weight.describe(), " for ", t, " tokens, top ", o.top_k);
  const int groups = std::max(1, o.num_groups);
  SY_REQUIRE(e % groups == 0 && o.topk_groups >= 1 && o.topk_groups <= groups, InvalidArgument, op, e,
             " experts in ", groups, " groups, top ", o.topk_groups, " groups");
  if (o.score_bias && score_bias.defined()) {
    detail::require_device(op, "score_bias", score_bias);
    detail::require_dtype(op, "score_bias", score_bias, DType::kF32);
    SY_REQUIRE(score_bias.numel() == e, InvalidArgument, op, "score_bias ", score_bias.describe());
  }
}

}  // namespace

void set_warp_routing(bool on) { g_warp_routing.store(on); }
bool warp_routing() { return g_warp_routing.load(); }
void set_cluster_routing(bool on) { g_cluster_routing.store(on); }
bool cluster_routing() { return g_cluster_routing.load(); }

void route(const Tensor& logits, const Tensor& score_bias, const MoeConfig& o, Tensor& expert, Tensor& weight) {
  detail::require_device("cuda route", "logits", logits);
  detail::require_dtype("cuda route", "logits", logits, DType::kF32);
  SY_REQUIRE(logits.dim() == 2, InvalidArgument, "cuda route", "logits ", logits.describe());
  const int64_t t = logits.size(0);
  const int e = static_cast<int>(logits.size(1));
  check_route_args("cuda route", t, e, score_bias, o, expert, weight);
  SY_REQUIRE(t <= 0x7fffffff, InvalidArgument, "cuda route", t, " tokens in one call");
  if (t == 0) return;
  const bool has_bias = o.score_bias && score_bias.defined();
  const RouterParams params = router_params(o, e, has_bias);
  if (params.warp && warp_route_fits(params)) {
    const int64_t blocks = (t + kRouterWarpsPerBlock - 1) / kRouterWarpsPerBlock;
    router_warps_kernel<<<static_cast<unsigned>(blocks), kRouterWarpsPerBlock * 32, 0, stream()>>>(
        logits.f32(), has_bias ? score_bias.f32() : nullptr, params, t, expert.i32(), weight.f32());
    SY_CUDA_CHECK_LAUNCH();
    return;
  }
  // One thread per expert, whole warps: the block-wide argmax of each top-k round scans one entry per warp
  // (Qwen3's 128 experts: 4 warps, not 8).
  const int threads = (e + 31) / 32 * 32;
  router_kernel<<<static_cast<unsigned>(t), threads, 0, stream()>>>(
      logits.f32(), has_bias ? score_bias.f32() : nullptr, params, expert.i32(), weight.f32());
  SY_CUDA_CHECK_LAUNCH();
}

bool decode_route_fits(int64_t tokens, int64_t hidden, const MoeConfig& o) {
  return tokens >= 1 && tokens <= kDecodeRouterTokens && hidden % 8 == 0 && o.num_experts >= 1 &&
         o.num_experts <= kMaxExperts && tokens * o.top_k <= detail::kBlockLayoutMaxAssignments;
}

DeviceDispatchLayout decode_route(const Tensor& x, const Tensor& router, const Tensor& router_bias,
                                  const Tensor& score_bias, const MoeConfig& o, Tensor& logits, Tensor& expert,
                                  Tensor& weight, Tensor& done, const Tensor& counts_out,
                                  const L2Prefetch& l2_prefetch) {
  const char* op = "cuda decode_route";
  const detail::L2Range prefetch = detail::l2_range(op, l2_prefetch);
  detail::require_device(op, "x", x);
  detail::require_dtype(op, "x", x, DType::kBF16, DType::kBF16);
  detail::require_device(op, "router", router);
  detail::require_dtype(op, "router", router, DType::kBF16, DType::kBF16);
  detail::require_device(op, "logits", logits);
  detail::require_dtype(op, "logits", logits, DType::kF32);
  detail::require_device(op, "done", done);
  detail::require_dtype(op, "done", done, DType::kI32, DType::kI32);
  const int64_t n = x.dim() == 2 ? x.size(0) : -1, k = x.dim() == 2 ? x.size(1) : -1;
  const int e = router.dim() == 2 ? static_cast<int>(router.size(0)) : -1;
  SY_REQUIRE(n >= 0 && router.dim() == 2 && router.size(1) == k && logits.dim() == 2 && logits.size(0) == n &&
                 logits.size(1) == e && done.numel() == 1 && decode_route_fits(n, k, o) &&
                 reinterpret_cast<uintptr_t>(x.raw()) % 16 == 0 && reinterpret_cast<uintptr_t>(router.raw()) % 16 == 0,
             InvalidArgument, op, "x ", x.describe(), " router ", router.describe(), " logits ", logits.describe(),
             " (1 to ", kDecodeRouterTokens, " tokens, at most ", kMaxExperts, " experts and ",
             detail::kBlockLayoutMaxAssignments, " assignments, hidden a multiple of 8, 16-byte aligned rows)");
  check_route_args(op, n, e, score_bias, o, expert, weight);
  if (router_bias.defined()) {
    detail::require_device(op, "router_bias", router_bias);
    detail::require_dtype(op, "router_bias", router_bias, DType::kF32);
    SY_REQUIRE(router_bias.numel() == e, InvalidArgument, op, "router_bias ", router_bias.describe());
  }
  const bool has_bias = o.score_bias && score_bias.defined();
  DeviceDispatchLayout l;
  l.num_experts = e;
  l.num_tokens = n;
  l.top_k = o.top_k;
  if (counts_out.defined()) {
    detail::require_device(op, "counts_out", counts_out);
    detail::require_dtype(op, "counts_out", counts_out, DType::kI64, DType::kI64);
    SY_REQUIRE(counts_out.numel() == e, InvalidArgument, op, "counts_out ", counts_out.describe());
    l.tokens_per_expert = counts_out;
  } else {
    l.tokens_per_expert = Tensor::empty({e}, DType::kI64, Device::kCuda);
  }
  l.offsets = Tensor::empty({e + 1}, DType::kI64, Device::kCuda);
  l.row_assignment = Tensor::empty({n * o.top_k}, DType::kI64, Device::kCuda);
  l.assignment_row = Tensor::empty({n * o.top_k}, DType::kI64, Device::kCuda);
  const RouterParams rp = router_params(o, e, has_bias);
  if (rp.warp && g_cluster_routing.load() && warp_route_fits(rp) && n * o.top_k <= 32) {
    // As many blocks as a warp per expert needs, at most the largest portable cluster.
    const int blocks = std::min(kClusterRouterBlocks, (e + kClusterRouterWarps - 1) / kClusterRouterWarps);
    detail::launch_ex(decode_router_cluster_kernel, dim3(blocks), dim3(kClusterRouterWarps * 32), 0,
                      static_cast<unsigned>(blocks), /*chained=*/true, static_cast<const __nv_bfloat16*>(x.raw()),
                      static_cast<const __nv_bfloat16*>(router.raw()),
                      router_bias.defined() ? router_bias.f32() : nullptr, static_cast<int>(n), k, logits.f32(),
                      has_bias ? score_bias.f32() : nullptr, rp, expert.i32(), weight.f32(), l.tokens_per_expert.i64(),
                      l.offsets.i64(), l.row_assignment.i64(), l.assignment_row.i64(), prefetch);
    SY_CUDA_CHECK_LAUNCH();
    return l;
  }
  // Enough warps to keep the router's rows streaming (a warp per expert), a block size that fits the routing.
  const int threads = kDecodeRouterWarps * 32;
  const unsigned blocks = static_cast<unsigned>((e + kDecodeRouterWarps - 1) / kDecodeRouterWarps);
  detail::launch_chained(decode_router_kernel, blocks, threads, 0,
      static_cast<const __nv_bfloat16*>(x.raw()), static_cast<const __nv_bfloat16*>(router.raw()),
      router_bias.defined() ? router_bias.f32() : nullptr, static_cast<int>(n), k, logits.f32(),
      has_bias ? score_bias.f32() : nullptr, rp, expert.i32(), weight.f32(),
      l.tokens_per_expert.i64(), l.offsets.i64(), l.row_assignment.i64(), l.assignment_row.i64(),
      reinterpret_cast<unsigned*>(done.raw()), prefetch);
  SY_CUDA_CHECK_LAUNCH();
  return l;
}

}  // namespace sy::cuda
