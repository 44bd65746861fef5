// Hopper warpgroup tensor-core primitives (wgmma, sm_90a) shared by the hand-written Hopper kernels, and the
// 128-byte swizzled shared-memory layout they read. Not a public header. Everything here compiles only for
// sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); callers guard their kernel bodies the same way.
//
// Layout: an operand tile is stored as 128-byte rows (64 bf16), 16-byte chunk c of row r at r * 128 +
// ((c ^ r % 8) * 16) from a 1024-byte aligned base (8-row atoms of 1024 bytes); wider rows are split into
// 64-column blocks stored one after another. Read through a descriptor it is:
//   K-major (rows = M or N, 64 k per row): smem_descriptor(base + 32 * (k / 16)), stride 1024 per 8 rows;
//   MN-major (rows = k, 64 M or N per row, imm-trans = 1): smem_descriptor_mn(base + 2048 * (k / 16),
//   block_bytes) with block_bytes between consecutive 64-column blocks, 1024 per 8 k rows.
// (CUTLASS's canonical GMMA layouts: K-major SW128 ((8,m),(T,2k)):((8T,SBO),(1,T)); MN-major SW128
// ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), T = 8 bf16; tools/wgmma_gemm_emulation.py and
// tools/flash_wgmma_emulation.py model both.)
#pragma once

#include <cstdint>

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
namespace sy::cuda::sm90 {

// Byte offset of 16-byte chunk c of row r in a 128-byte swizzled tile.
__device__ __forceinline__ uint32_t swizzled(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }

// Descriptor of a K-major operand at `address` (128-byte swizzle; stepping k by 16 adds 32 bytes).
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t address) {
  return uint64_t{(address & 0x3FFFFu) >> 4}  // start address / 16 (14 bits)
         | (uint64_t{1} << 16)                // leading byte offset: unused by K-major with the 128-byte swizzle
         | (uint64_t{1024 >> 4} << 32)        // stride byte offset: 8 rows x 128 bytes to the next atom
         | (uint64_t{1} << 62);               // swizzle mode: 128 bytes
}
// Descriptor of an MN-major operand at `address` whose 64-wide M/N blocks are block_bytes apart (leading
// byte offset) and whose k rows are 128 bytes apart, 1024 per 8 (stride byte offset).
__device__ __forceinline__ uint64_t smem_descriptor_mn(uint32_t address, uint32_t block_bytes) {
  return uint64_t{(address & 0x3FFFFu) >> 4} | (uint64_t{(block_bytes >> 4) & 0x3FFFu} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// Makes this thread's generic-proxy shared-memory writes (cp.async's) visible to the tensor cores.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Pins the accumulators in place around the asynchronous products: the compiler may not move reads or writes
// of d across this point (so no use of d is scheduled above the wait that retires the products).
template <int kN>
__device__ __forceinline__ void fence_accumulators(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The same for register A operands (P in the attention kernel), before wgmma.fence: their packing may not sink
// into the batch (the compiler would then insert a warpgroup arrive before each product). ptxas itself keeps
// the registers untouched until the wait retires the products.
template <int kN>
__device__ __forceinline__ void fence_operands(uint32_t (&a)[kN][4]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(a[i][j])::"memory");
  }
}

// The 64 accumulator operands of an m64n128 f32 wgmma, in the asm text and as constraints.
#define SY_WGMMA_ACCUMULATOR_LIST \
"{" "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
"%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
"%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
"%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
#define SY_WGMMA_ACCUMULATORS(d) \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// The 128 accumulator operands of an m64n256 f32 wgmma.
#define SY_WGMMA_ACCUMULATOR_LIST_256 \
"{" "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
"%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
"%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
"%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
"%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
"%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
"%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
"%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
#define SY_WGMMA_ACCUMULATORS_256(d) SY_WGMMA_ACCUMULATORS(d), SY_WGMMA_ACCUMULATORS((d + 64))

// Accumulator fragment of m64n128 (f32): thread t of the warpgroup holds rows 16 (t / 32) + (t % 32) / 4 (+ 8
// for d[4j + 2], d[4j + 3]) and columns 8j + 2 (t % 4) (+ 1) in d[4j] (d[4j + 1]), j = 0..15.
//
// d += A (64 x 16, descriptor a, K-major) * B^T (B: 128 x 16, descriptor b, K-major), bf16.
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n"
      ".reg .pred accumulate;\n"
      "setp.ne.b32 accumulate, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      SY_WGMMA_ACCUMULATOR_LIST
      "%64, %65, accumulate, 1, 1, 0, 0;\n"
      "}\n"
      :
        SY_WGMMA_ACCUMULATORS(d)
      : "l"(a), "l"(b), "r"(1)
      : "memory");
}
// The same with B 256 x 16 (d: 64 x 256, the same fragment pattern with j = 0..31).
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n"
      ".reg .pred accumulate;\n"
      "setp.ne.b32 accumulate, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      SY_WGMMA_ACCUMULATOR_LIST_256
      "%128, %129, accumulate, 1, 1, 0, 0;\n"
      "}\n"
      : SY_WGMMA_ACCUMULATORS_256(d)
      : "l"(a), "l"(b), "r"(1)
      : "memory");
}
// d (64 x kN) += A (64 x 16) * B^T (B: kN x 16), both from K-major descriptors: kN = 128 or 256.
template <int kN>
__device__ __forceinline__ void wgmma_ss(float (&d)[kN / 2], uint64_t a, uint64_t b) {
  static_assert(kN == 128 || kN == 256, "m64n128k16 or m64n256k16");
  if constexpr (kN == 128) {
    wgmma_m64n128k16(d, a, b);
  } else {
    wgmma_m64n256k16(d, a, b);
  }
}
// d += A * B with A (64 x 16) from registers and B (16 x 128) from an MN-major descriptor (imm-trans-b 1).
// A's fragment: thread t holds, for row g = (t % 32) / 4 of its warp's 16 rows (16 (t / 32) + g) and
// c = t % 4, a[0] = (g, 2c..2c+1), a[1] = (g + 8, 2c..2c+1), a[2] = (g, 2c+8..2c+9), a[3] = (g + 8, 2c+8..2c+9),
// two bf16 per register, the lower column in the low half: the layout of the accumulator fragment's columns
// 16i..16i+15 (d[8i..8i+7]) packed pairwise, so a product's accumulators become the next product's A.
__device__ __forceinline__ void wgmma_m64n128k16_rs_mn(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n"
      ".reg .pred accumulate;\n"
      "setp.ne.b32 accumulate, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      SY_WGMMA_ACCUMULATOR_LIST
      "{%64, %65, %66, %67}, %68, accumulate, 1, 1, 1;\n"
      "}\n"
      :
        SY_WGMMA_ACCUMULATORS(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)
      : "memory");
}

}  // namespace sy::cuda::sm90
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
