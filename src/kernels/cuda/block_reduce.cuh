// Block-wide reductions shared by the CUDA op files (router, sampling): argmax over (value, index) pairs
// with ties to the lower index, and float max / sum, every thread getting the result. blockDim.x must be a
// multiple of 32; the scratch arrays hold one entry per warp. Not a public header.
#pragma once

namespace sy::cuda::detail {

// a beats b: larger value, ties to the lower index; an index of -1 never wins.
__device__ __forceinline__ bool beats(float va, int ia, float vb, int ib) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  return va > vb || (va == vb && ia < ib);
}

// Block-wide argmax over (value, index) pairs, ties to the lower index. Every thread gets the winner.
// A shuffle butterfly inside each warp, then every thread scans the warps' winners (two barriers in all;
// the shared-memory tree this replaced took eight per call, top_k calls per token).
__device__ __forceinline__ int block_argmax(float v, int idx, float* sval, int* sidx) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (beats(ov, oi, v, idx)) {
      v = ov;
      idx = oi;
    }
  }
  const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if ((threadIdx.x & 31) == 0) {
    sval[warp] = v;
    sidx[warp] = idx;
  }
  __syncthreads();
  float best_v = sval[0];
  int best_i = sidx[0];
  for (int w = 1; w < warps; ++w) {
    if (beats(sval[w], sidx[w], best_v, best_i)) {
      best_v = sval[w];
      best_i = sidx[w];
    }
  }
  __syncthreads();  // the scratch is reused by the next call
  return best_i;
}

// Block-wide max or sum, every thread gets the result (warp shuffles, then the warps' partials in order).
__device__ __forceinline__ float block_reduce(float v, float* scratch, bool is_max) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, ov) : v + ov;
  }
  const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if ((threadIdx.x & 31) == 0) scratch[warp] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < warps; ++w) r = is_max ? fmaxf(r, scratch[w]) : r + scratch[w];
  __syncthreads();
  return r;
}

}  // namespace sy::cuda::detail
