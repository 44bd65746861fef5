// cuda::sample_rows: one token per row of logits, on the device (the CPU reference is ops::sample_row).
// One cluster of kCluster 1024-thread blocks per row (Hopper thread-block clusters): each block walks its
// slice of the row and every reduction (argmax, sums, histograms) is combined over the cluster through
// distributed shared memory, in block order. Greedy rows take an argmax. Other rows rank tokens by a 64-bit key
// (order-preserving logit bits, then the inverted id, so equal logits rank the lower id first) and make
// three exact selections over those keys by 8-bit radix passes: the top_k-th key (counts), the top-p cut and
// the draw (probability mass in 2^-40 fixed point). Histograms are integer atomics (aggregated per warp),
// so the result does not depend on thread scheduling or on how the row is split. Each pass rereads the row
// (vocab floats); nothing is sorted or copied.
#include <cooperative_groups.h>

#include <cmath>
#include <cstdint>

#include "block_reduce.cuh"
#include "op_common.cuh"

namespace sy::cuda {

namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 1024;
// Blocks per row (the largest portable cluster): one block per row was bound by its own instruction issue,
// ~23 us per pass over a 152K vocabulary and 633 us per draw with top-k and top-p (H100, 2026-12-05).
constexpr int kCluster = 8;
constexpr int kBins = 256;
constexpr float kMassScale = 1099511627776.0f;  // 2^40: a token of the top logit weighs exactly this

// Larger key = better rank: larger logit, then lower id. Keys are unique per row. -0 is made +0 first, so
// the two zeros tie (ranked by id) as they compare equal on the CPU.
__device__ __forceinline__ unsigned long long rank_key(float v, int i) {
  unsigned b = __float_as_uint(v);
  if (b == 0x80000000u) b = 0u;
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<unsigned long long>(b) << 32) | (0xffffffffu - static_cast<unsigned>(i));
}
__device__ __forceinline__ int key_token(unsigned long long key) {
  return static_cast<int>(0xffffffffu - static_cast<unsigned>(key & 0xffffffffu));
}

// The mass of one token: exp((z - max) / temperature) in 2^-40 units (0 for tokens far below the top).
// NaN (z = mx = +-inf, NaN logits, 0 * inf when 1 / temperature overflows) weighs 0 and nothing weighs
// more than the top token, so the float-to-integer conversion is always defined and the 24-bit split of
// warp_histogram_add stays exact.
__device__ __forceinline__ unsigned long long token_mass(float z, float mx, float inv_t) {
  const float m = expf((z - mx) * inv_t) * kMassScale;
  return m >= 1.f ? static_cast<unsigned long long>(fminf(m, kMassScale)) : 0ull;
}

struct Row {
  const float* z;
  int begin, end;  // this block's slice of the row's tokens
  float mx, inv_t;
  bool counts;  // weight 1 per token (top-k) instead of its mass
  __device__ unsigned long long weight(float v) const { return counts ? 1ull : token_mass(v, mx, inv_t); }
};

__device__ unsigned long long block_sum_u64(unsigned long long v, unsigned long long* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if ((threadIdx.x & 31) == 0) scratch[warp] = v;
  __syncthreads();
  unsigned long long r = 0;
  for (int w = 0; w < warps; ++w) r += scratch[w];
  __syncthreads();
  return r;
}

// The sum of v (block-uniform) over the cluster's blocks, for every thread. slot: one shared word. The second
// cluster barrier keeps every slot until all blocks have read it (and no block exits while another reads).
__device__ unsigned long long cluster_sum(unsigned long long v, unsigned long long* slot) {
  cg::cluster_group cluster = cg::this_cluster();
  if (threadIdx.x == 0) slot[0] = v;
  cluster.sync();
  if (threadIdx.x == 0) {
    unsigned long long total = 0;
    for (unsigned b = 0; b < cluster.num_blocks(); ++b) total += *cluster.map_shared_rank(slot, b);
    slot[1] = total;
  }
  cluster.sync();
  return slot[1];
}

// The argmax over the cluster of each block's winner (v, i) (i = -1: none), ties to the lower id.
__device__ int cluster_argmax(float v, int i, float* slot_v, int* slot_i) {
  cg::cluster_group cluster = cg::this_cluster();
  if (threadIdx.x == 0) {
    slot_v[0] = v;
    slot_i[0] = i;
  }
  cluster.sync();
  if (threadIdx.x == 0) {
    float best_v = -INFINITY;
    int best_i = -1;
    for (unsigned b = 0; b < cluster.num_blocks(); ++b) {
      const float ov = *cluster.map_shared_rank(slot_v, b);
      const int oi = *cluster.map_shared_rank(slot_i, b);
      if (detail::beats(ov, oi, best_v, best_i)) {
        best_v = ov;
        best_i = oi;
      }
    }
    slot_i[1] = best_i;
  }
  cluster.sync();
  return slot_i[1];
}

// Calls f(v, i, valid) for tokens [begin, end) of the row (begin a multiple of 4: the block's slice) with
// kQuadUnroll coalesced 16-byte loads (four tokens each) in flight per thread where the slice is 16-byte
// aligned, kUnroll 4-byte loads for the rest: a block's walk is bound by the bytes it has in flight (one load
// at a time took ~170 us per pass over a 152K vocabulary in one block). The trip count is block-uniform and f
// also runs for padding slots (valid false, v 0), so f may use warp-collective operations; within a thread,
// ids ascend.
constexpr int kUnroll = 8;
constexpr int kQuadUnroll = 6;  // 16-byte loads in flight per thread (8 made ptxas spill at 1024 threads)
template <typename F>
__device__ __forceinline__ void for_each_token(const float* row, int begin, int end, F&& f) {
  const float* z = row + begin;
  const int vocab = end > begin ? end - begin : 0;
  const int quads = reinterpret_cast<uintptr_t>(z) % 16 == 0 ? vocab / 4 : 0;
  const float4* z4 = reinterpret_cast<const float4*>(z);
  for (int base = 0; base < quads; base += blockDim.x * kQuadUnroll) {
    float4 v[kQuadUnroll];
#pragma unroll
    for (int u = 0; u < kQuadUnroll; ++u) {
      const int q = base + u * blockDim.x + threadIdx.x;
      v[u] = q < quads ? z4[q] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int u = 0; u < kQuadUnroll; ++u) {
      const int q = base + u * blockDim.x + threadIdx.x;
      const bool valid = q < quads;
      f(v[u].x, begin + 4 * q, valid);
      f(v[u].y, begin + 4 * q + 1, valid);
      f(v[u].z, begin + 4 * q + 2, valid);
      f(v[u].w, begin + 4 * q + 3, valid);
    }
  }
  for (int base = 4 * quads; base < vocab; base += blockDim.x * kUnroll) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + u * blockDim.x + threadIdx.x;
      v[u] = i < vocab ? z[i] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + u * blockDim.x + threadIdx.x;
      f(v[u], begin + i, i < vocab);
    }
  }
}

// hist[bin] += w, summed over the warp's lanes first: lanes with the same bin (bin -1: none) add their
// weights with two 32-bit warp reductions (w <= 2^40: 24 low bits and the rest, each sum exact) and one
// lane makes the shared-memory atomic. The top byte of the rank keys is shared by most of a row's tokens,
// so per-lane atomics would serialise on a few bins. Every lane of the warp must call.
__device__ __forceinline__ void warp_histogram_add(unsigned long long* hist, int bin, unsigned long long w) {
  const unsigned peers = __match_any_sync(0xffffffffu, bin);
  const unsigned low = __reduce_add_sync(peers, static_cast<unsigned>(w & 0xffffffu));
  const unsigned high = __reduce_add_sync(peers, static_cast<unsigned>(w >> 24));
  if (bin >= 0 && (threadIdx.x & 31) == __ffs(peers) - 1) {
    atomicAdd(&hist[bin], (static_cast<unsigned long long>(high) << 24) + low);
  }
}

// Warp 0: the highest bin b with above + W(bins > b) <= target < above + W(bins >= b), scanning from the
// top bin down (0, with all the weight counted, when no bin crosses). Lane l holds bins 255 - 8l .. 248 - 8l;
// a prefix sum over the lanes finds the crossing lane, which scans its own eight. Writes
// shared_state = {prefix with the chosen byte at shift, the weight above that bin}.
__device__ __forceinline__ void crossing_bin(const unsigned long long* hist, unsigned long long above,
                                             unsigned long long target, unsigned long long prefix, int shift,
                                             unsigned long long* shared_state) {
  const int lane = threadIdx.x & 31;
  unsigned long long mine[8], sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) sum += mine[j] = hist[kBins - 1 - 8 * lane - j];
  unsigned long long inclusive = sum;
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long t = __shfl_up_sync(0xffffffffu, inclusive, o);
    if (lane >= o) inclusive += t;
  }
  const bool crosses = above + inclusive > target;
  const unsigned lanes = __ballot_sync(0xffffffffu, crosses);
  const int first = lanes ? __ffs(lanes) - 1 : 31;
  if (lane == first) {
    unsigned long long acc = above + inclusive - sum;
    int chosen = 0;
    bool found = false;
    for (int j = 0; j < 8 && crosses; ++j) {
      if (acc + mine[j] > target) {
        chosen = kBins - 1 - 8 * lane - j;
        found = true;
        break;
      }
      acc += mine[j];
    }
    if (!found) acc = above + inclusive;  // no crossing at all: bin 0 with every bin's weight counted
    shared_state[0] = prefix | (static_cast<unsigned long long>(chosen) << shift);
    shared_state[1] = acc;
  }
}

// Total weight of the row's tokens whose key is >= floor (over the cluster).
__device__ unsigned long long weight_from(const Row& row, unsigned long long floor, unsigned long long* scratch,
                                          unsigned long long* slot) {
  unsigned long long w = 0;
  for_each_token(row.z, row.begin, row.end, [&](float v, int i, bool valid) {
    if (valid && rank_key(v, i) >= floor) w += row.weight(v);
  });
  return cluster_sum(block_sum_u64(w, scratch), slot);
}

// The unique key tau among tokens with key >= floor such that W(key > tau) <= target < W(key >= tau), W
// summing weights over those tokens; requires target < W(key >= floor). Eight passes, one key byte each,
// from the most significant: a histogram of the candidates' current byte, then the bin where the weight
// above crosses target.
__device__ unsigned long long select_key(const Row& row, unsigned long long floor, unsigned long long target,
                                         unsigned long long* hist, unsigned long long* total,
                                         unsigned long long* shared_state) {
  cg::cluster_group cluster = cg::this_cluster();
  unsigned long long prefix = 0, above = 0;
  for (int pass = 0; pass < 8; ++pass) {
    const int shift = 56 - 8 * pass;
    const unsigned long long high_mask = pass == 0 ? 0ull : ~0ull << (shift + 8);
    for (int b = threadIdx.x; b < kBins; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for_each_token(row.z, row.begin, row.end, [&](float v, int i, bool valid) {
      int bin = -1;
      unsigned long long w = 0;
      if (valid) {
        const unsigned long long key = rank_key(v, i);
        if (key >= floor && (key & high_mask) == prefix) {
          w = row.weight(v);
          if (w) bin = static_cast<int>((key >> shift) & 0xff);
        }
      }
      // Every lane of the warp reaches this point; past the first pass of a selection almost no token is a
      // candidate, and a warp without one skips the match and reductions (most of a pass's cost).
      if (__any_sync(0xffffffffu, bin >= 0)) warp_histogram_add(hist, bin, w);
    });
    // The cluster's histogram: every block sums all blocks' bins (integers: exact in any order); the second
    // barrier keeps each block's bins until every block has read them.
    cluster.sync();
    for (int b = threadIdx.x; b < kBins; b += blockDim.x) {
      unsigned long long sum = 0;
      for (unsigned r = 0; r < cluster.num_blocks(); ++r) sum += cluster.map_shared_rank(hist, r)[b];
      total[b] = sum;
    }
    cluster.sync();
    if (threadIdx.x < 32) crossing_bin(total, above, target, prefix, shift, shared_state);
    __syncthreads();
    prefix = shared_state[0];
    above = shared_state[1];
    __syncthreads();  // shared_state is rewritten by the next pass
  }
  return prefix;
}

// params: (rows, 4) f32 = temperature, top_k, top_p, uniform draw. out: (rows,) int32. Grid: rows * kCluster
// blocks in clusters of kCluster; cluster r / kCluster samples row r, block b of it walks tokens [b c, b c + c)
// (c a multiple of 4). Every decision is cluster-uniform, so the blocks leave together.
__global__ void __launch_bounds__(kThreads) sample_rows_kernel(const float* logits, int64_t vocab,
                                                               const float* params, int32_t* out) {
  __shared__ float sval[kThreads / 32];
  __shared__ int sidx[kThreads / 32];
  __shared__ unsigned long long scratch[kThreads / 32];
  __shared__ unsigned long long hist[kBins], total_hist[kBins];
  __shared__ unsigned long long state[2], sum_slot[2];
  __shared__ float arg_v[1];
  __shared__ int arg_i[2];
  cg::cluster_group cluster = cg::this_cluster();
  const int64_t r = blockIdx.x / kCluster;
  const float* z = logits + r * vocab;
  const float temperature = params[r * 4 + 0], top_p = params[r * 4 + 2], u = params[r * 4 + 3];
  const int top_k = static_cast<int>(params[r * 4 + 1]);
  const int n = static_cast<int>(vocab);
  const int chunk = (n + 4 * kCluster - 1) / (4 * kCluster) * 4;
  const int begin = min(n, static_cast<int>(cluster.block_rank()) * chunk), end = min(n, begin + chunk);

  // Argmax (ties to the lower id): each thread scans its ids upwards, so strict > keeps the lowest.
  float best_v = -INFINITY;
  int best_i = -1;
  for_each_token(z, begin, end, [&](float v, int i, bool valid) {
    if (valid && (best_i < 0 || v > best_v)) {
      best_v = v;
      best_i = i;
    }
  });
  const int block_top = detail::block_argmax(best_v, best_i, sval, sidx);
  const int top = cluster_argmax(block_top >= 0 ? z[block_top] : -INFINITY, block_top, arg_v, arg_i);
  const bool leader = cluster.block_rank() == 0 && threadIdx.x == 0;
  if (temperature == 0.f) {
    if (leader) out[r] = top;
    return;
  }
  Row row{z, begin, end, z[top], 1.f / temperature, true};
  unsigned long long floor = 0;  // tokens with key >= floor are kept
  if (top_k > 0 && top_k < n) {
    floor = select_key(row, 0, static_cast<unsigned long long>(top_k - 1), hist, total_hist, state);
  }
  row.counts = false;
  unsigned long long total = weight_from(row, floor, scratch, sum_slot);  // 2^40 or more unless degenerate
  if (total == 0) {  // -inf or NaN top logit, or a temperature so small that 1 / T overflows: take the argmax
    if (leader) out[r] = top;
    return;
  }
  if (top_p < 1.f) {
    // The first rank whose cumulative mass reaches top_p * total.
    unsigned long long need = static_cast<unsigned long long>(ceil(static_cast<double>(top_p) * total));
    if (need < 1) need = 1;
    if (need > total) need = total;
    floor = select_key(row, floor, need - 1, hist, total_hist, state);
    total = weight_from(row, floor, scratch, sum_slot);
  }
  unsigned long long target = static_cast<unsigned long long>(static_cast<double>(u) * total);
  if (target >= total) target = total - 1;
  const unsigned long long picked = select_key(row, floor, target, hist, total_hist, state);
  if (leader) out[r] = key_token(picked);
}

}  // namespace

void sample_rows(const Tensor& logits, const Tensor& params, Tensor& tokens) {
  detail::require_device("sample_rows", "logits", logits);
  detail::require_device("sample_rows", "params", params);
  detail::require_device("sample_rows", "tokens", tokens);
  SY_REQUIRE(logits.dtype() == DType::kF32 && logits.dim() == 2, InvalidArgument, "sample_rows",
             "logits must be (rows, vocab) f32, got ", logits.describe());
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  // The fixed-point mass of a row (vocab * 2^40 at most) must fit 64 bits.
  SY_REQUIRE(vocab > 0 && vocab < (int64_t{1} << 23), InvalidArgument, "sample_rows", "vocab ", vocab,
             " must be in [1, 2^23)");
  SY_REQUIRE(params.dtype() == DType::kF32 && params.dim() == 2 && params.size(0) == rows && params.size(1) == 4,
             InvalidArgument, "sample_rows", "params must be (", rows, ", 4) f32, got ", params.describe());
  SY_REQUIRE(tokens.dtype() == DType::kI32 && tokens.numel() == rows, InvalidArgument, "sample_rows",
             "tokens must be (", rows, ",) int32, got ", tokens.describe());
  if (rows == 0) return;
  SY_REQUIRE(rows * kCluster <= 0x7fffffff, InvalidArgument, "sample_rows", rows, " rows in one call");
  detail::launch_ex(sample_rows_kernel, dim3(static_cast<unsigned>(rows * kCluster)), dim3(kThreads), 0, kCluster,
                    /*chained=*/false, logits.f32(), vocab, params.f32(), tokens.i32());
  SY_CUDA_CHECK_LAUNCH();
}

}  // namespace sy::cuda
