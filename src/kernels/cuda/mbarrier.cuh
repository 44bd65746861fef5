// Shared-memory transaction barriers (mbarrier, sm_90) for producer/consumer pipelines inside one block or
// across a thread-block cluster, the TMA tile load that completes on them (also multicast to a cluster), and
// the per-warpgroup register reallocation that goes with warp specialisation (setmaxnreg, sm_90a). Not a
// public header; compiled only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL), like wgmma.cuh.
//
// A barrier completes a phase once `count` arrivals (set at init) have reached it, and flips its phase bit.
// wait(parity) returns once the phase with that parity has completed: on a fresh barrier (phase 0 running),
// wait(1) returns at once, which is how a producer finds every ring slot free on its first pass.
#pragma once

#include <cstdint>

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
namespace sy::cuda::sm90 {

__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// After a thread's mbarrier.init calls and before the block barrier that publishes them: the initialised
// barriers become visible to the asynchronous proxy too (TMA's complete_tx updates them there).
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Before TMA loads through a tensor map in global memory that was written through the generic proxy (a host
// copy, possibly into memory an older map occupied): the tensor-map proxy then reads the new 128 bytes, not a
// cached copy of the old ones.
__device__ __forceinline__ void fence_tensormap_acquire(const void* map) {
  asm volatile("fence.proxy.tensormap::generic.acquire.sys [%0], 128;\n" ::"l"(reinterpret_cast<uint64_t>(map))
               : "memory");
}
// One arrival (release semantics at CTA scope: this thread's earlier shared-memory accesses are ordered before
// the phase completes).
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// One arrival, made when every cp.async this thread issued before it has landed; it counts against the
// barrier's expected arrivals (.noinc), so a barrier fed this way is initialised with the producer threads.
__device__ __forceinline__ void cp_async_mbarrier_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// One arrival that also expects `bytes` more bytes of asynchronous copies (TMA) before the phase can complete.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// TMA: the box at element coordinates (c0 innermost, c1) of the 2-D tensor map at generic address `map` (in
// global memory) into shared memory at dst; its bytes count down the transaction count of barrier `bar`.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void* map, int32_t c0, int32_t c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
// A contiguous run of `bytes` (a multiple of 16; src and dst 16-byte aligned) from global memory into shared
// memory at dst by the bulk copy engine (TMA without a tensor map); its bytes count down barrier `bar`.
__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(src)), "r"(bytes), "r"(bar)
      : "memory");
}
// Orders this thread's earlier generic-proxy accesses to shared memory (reads of a buffer) before later
// asynchronous-proxy ones (a bulk copy that refills it).
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// The same TMA box delivered to every block of the cluster in cta_mask (bit r: rank r), at the same
// shared-memory offset dst in each, counting down the barrier at offset bar in each.
__device__ __forceinline__ void tma_load_2d_multicast(uint32_t dst, const void* map, int32_t c0, int32_t c1,
                                                      uint32_t bar, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar), "h"(cta_mask)
      : "memory");
}
// One arrival on the barrier at shared-memory offset bar of the cluster's block `rank` (this block's own
// included), with the default semantics (release at CTA scope), as CUTLASS's cluster barrier arrives. The
// arrivals free a stage whose reads (wgmma, retired by wait_group before the arrival) are done; .release
// .cluster would also order this thread's earlier global stores (the epilogue's) at cluster scope, a fence per
// arrival: with it, block pairs ran at half the speed of single blocks on an H100 (2026-12-06), which such a
// fence would explain.
__device__ __forceinline__ void mbarrier_arrive_cluster(uint32_t bar, uint32_t rank) {
  asm volatile(
      "{\n"
      ".reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n"
      "}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
}
// Every thread of every block of the cluster arrives and waits (release / acquire at cluster scope): a block
// barrier that also covers the other blocks of the cluster. Whole warps execute it.
__device__ __forceinline__ void cluster_sync() {
  __syncwarp();  // .aligned: the warp's threads execute it together
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}
__device__ __forceinline__ uint32_t cluster_id() {
  uint32_t id;
  asm volatile("mov.u32 %0, %%clusterid.x;\n" : "=r"(id));
  return id;
}
__device__ __forceinline__ uint32_t cluster_count() {
  uint32_t n;
  asm volatile("mov.u32 %0, %%nclusterid.x;\n" : "=r"(n));
  return n;
}
__device__ __forceinline__ bool mbarrier_try_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n"
      "}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
}
// Spins (try_wait suspends the thread for a while between polls) until the phase of `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  while (!mbarrier_try_wait(bar, parity)) {
  }
}
// The warpgroup's registers per thread become kRegisters (a multiple of 8 in [24, 256]); every warp of the
// warpgroup executes it. dec gives registers back to the block's pool, inc takes them from it (and waits until
// enough are free).
template <int kRegisters>
__device__ __forceinline__ void release_registers() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void claim_registers() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

}  // namespace sy::cuda::sm90
#endif
