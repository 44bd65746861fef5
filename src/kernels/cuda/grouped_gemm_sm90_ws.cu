// The Hopper grouped GEMM, warp-specialised and persistent (set_grouped_gemm_sm90_warp_specialized): the same
// products, tiles and epilogue as grouped_gemm_sm90.cu's kernel, scheduled differently. One block per SM loops
// over the block tiles (tile i, i + blocks, ...; row tile i / n_tiles, column tile i % n_tiles, so the blocks
// at work at any moment share a few experts' weights in L2). Its 384 threads are three warpgroups:
// - warpgroup 0, the producer (88 registers after setmaxnreg): fills a ring of stages with cp.async, A's
//   rows gathered through the dispatch layout as before, B's weight rows, in the 128-byte swizzled layout;
//   each thread's copies of a stage complete one arrival on the stage's `full` barrier
//   (cp.async.mbarrier.arrive.noinc, 128 arrivals a phase). It waits on the stage's `empty` barrier before
//   refilling it, and runs on into the next tile's stages while the consumers write the last one out. With
//   kTmaB (set_grouped_gemm_sm90_tma) the weight rows come by TMA instead: thread 0 announces the stage's B
//   bytes on `full` (arrive.expect_tx, the 129th arrival) and issues one 64-row box per 64 rows of the tile
//   from the expert's tensor map (tensor_map.cuh: the same swizzled layout, rows past n zero-filled).
// - warpgroups 1 and 2, the consumers (208 registers): each multiplies its 64 rows of A by the whole B tile
//   as soon as the stage's `full` barrier completes, keeps one wgmma group in flight, and frees a stage (one
//   arrival per warp on `empty`, 8 a phase) once the products that read it have retired; then writes the tile
//   from its accumulators (store_tile). With kPingPong (set_grouped_gemm_sm90_pingpong, 128-column tiles) they
//   take alternate whole 128 x 128 tiles instead, in turns, so one's epilogue overlaps the other's products.
// - kPair (set_grouped_gemm_sm90_cluster; TMA weights, not ping-pong): blocks run in clusters of two, and the
//   two blocks of a cluster take the same column tile of two row tiles of one expert (the row-tile table pads
//   each expert to an even count with empty tiles), so they need the same weight tile: each block's TMA
//   thread loads half of its boxes and multicasts them to both, and a stage's `empty` barrier takes the
//   consumers' arrivals of both blocks (16 a phase), since either block's refill writes into both. At 128 x 256
//   tiles a block's stage reads 48 KB from L2 alone, 32 KB in a pair. A block whose tile is empty (or a
//   consumer warpgroup whose 64 rows are) skips the products but keeps the barriers' counts. Measured slower
//   than single blocks on an H100 (2026-12-06: a 16K-token layer 3.56 against 3.21 ms; L2 bandwidth was not
//   what held the GEMMs), so off by default.
// kSkipIdleHalves (Problem::flags, on by default): a consumer warpgroup whose 64 rows of a tile lie past the
// tile's rows (an expert's last tile of at most 64 rows) waits on and frees the tile's stages without
// multiplying; a ping-pong warpgroup multiplies only the first 64 rows of such a tile. The split forms' branch
// stands outside the k loop: around the products inside it, ptxas serialises the wgmma (C7518; the pair forms
// were serialised so until 2026-12-06) and a 16K-token layer took 3.23 against 2.93 ms (H100). Ping-pong's
// choice still stands inside its k loop, serialised (C7520; see there).
// No block-wide barrier inside the main loop: the loads of one stage overlap the products of the others, and
// a tile's epilogue overlaps the loads of the next. CPU reference: ops::linear per expert, through the tests of
// tests/gpu/gpu_grouped_test.cc, which run every schedule; tools/ws_pipeline_emulation.py checks the barrier
// protocol and the staging map. Not here: TMA loads of A (its rows are gathered), TMA stores of the products.
#include <algorithm>
#include <map>
#include <mutex>

#include "async_copy.cuh"
#include "grouped_gemm_sm90.cuh"
#include "mbarrier.cuh"
#include "op_common.cuh"
#include "wgmma.cuh"

namespace sy::cuda::sm90_grouped {

namespace {

constexpr int kWsThreads = 384;
constexpr int kProducerThreads = 128;
constexpr int kConsumerWarps = 8;
// 88 / 208 measured faster than 72 / 216 (H100, 2026-12-06: a 16K-token layer 2.82-2.87 against 2.89-2.96 ms),
// with no spills at the TMA forms either way (ptxas -v, nvcc 13).
constexpr int kProducerRegisters = 88, kConsumerRegisters = 208;
constexpr int kARowsPerThread = kTileM / (kProducerThreads / 8);  // 8: rows row_base + 16 i
// The block starts with 168 registers per thread (65536 / 384, rounded down to a multiple of 8: ptxas's cap for
// __launch_bounds__(384, 1)); setmaxnreg.inc waits for registers that the block's own .dec returned, so the
// split must fit in what the block holds, or the consumers would wait forever.
constexpr int kLaunchRegisters = 168;
static_assert(kProducerThreads * kProducerRegisters + 2 * 128 * kConsumerRegisters <= kWsThreads * kLaunchRegisters,
              "the register split must fit in the block's allocation");

// The ring: no stage is kept back for a block barrier here, so 128-column tiles take 6 stages (192 KB) and
// 256-column ones 4.
template <int kTileN>
struct WsRing {
  static constexpr int kStages = kTileN == 128 ? 6 : 4;
  static constexpr size_t kSmemBytes = size_t{kStages} * TileShape<kTileN>::kStageBytes + 1024;  // + alignment slack
};

// kPingPong (128-column tiles only): the two consumer warpgroups take alternate tiles of the block's sequence
// and each multiplies all 128 rows of its tile (two m64n128k16 per k step, 128 accumulators), so one
// warpgroup's epilogue runs while the other's products do; the stages of a tile are freed by its warpgroup
// alone (4 arrivals a phase).
template <bool kSwiGLU, int kTileN, bool kTmaB, bool kPingPong, bool kPair>
__global__ void __launch_bounds__(kWsThreads, 1) grouped_gemm_sm90_ws_kernel(const Problem p, int64_t tiles) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(!kPingPong || kTileN == 128, "ping-pong tiles are 128 x 128");
  static_assert(!kPair || (kTmaB && !kPingPong), "block pairs share TMA weight tiles, without ping-pong");
  using Shape = TileShape<kTileN>;
  constexpr int kStages = WsRing<kTileN>::kStages, kStageBytes = Shape::kStageBytes;
  extern __shared__ uint8_t smem_raw[];
  __shared__ uint64_t barriers[2 * kStages + 2];  // full[s], empty[s], then ping-pong's turn[c]
  const uint32_t ring = (detail::smem_address(smem_raw) + 1023u) & ~1023u;
  const uint32_t full = detail::smem_address(barriers), empty = full + 8 * kStages, turn = empty + 8 * kStages;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      sm90::mbarrier_init(full + 8 * s, kProducerThreads + (kTmaB ? 1 : 0));  // + the TMA issuer's expect_tx
      sm90::mbarrier_init(empty + 8 * s, kPingPong ? kConsumerWarps / 2 : kPair ? 2 * kConsumerWarps : kConsumerWarps);
    }
    // Ping-pong: turn[c] completes a phase each time the other warpgroup's k loop of a tile is done.
    sm90::mbarrier_init(turn, kConsumerWarps / 2);
    sm90::mbarrier_init(turn + 8, kConsumerWarps / 2);
    sm90::fence_mbarrier_init();
  }
  // A pair's blocks arrive on each other's barriers: both are initialised before either block goes on.
  if constexpr (kPair) {
    sm90::cluster_sync();
  } else {
    __syncthreads();
  }
  const int warpgroup = threadIdx.x / 128;
  const int k_tiles = static_cast<int>((p.k + kTileK - 1) / kTileK);
  // The block tiles this block takes, in order: tile i, i + blocks, ... of `tiles`; a pair takes pair tile
  // i, i + clusters, ... of tiles / 2 (row tiles 2 (i / n_tiles) and the next, column tile i % n_tiles), its
  // block `rank` the row tile 2 (i / n_tiles) + rank.
  // (Read from the special registers and parameters where used, not held: the producer has 88 registers.)
  auto first = [] { return int64_t{kPair ? sm90::cluster_id() : blockIdx.x}; };
  auto step = [] { return int64_t{kPair ? sm90::cluster_count() : gridDim.x}; };
  const int64_t count = kPair ? tiles / 2 : tiles;
  auto block_tile = [&](int64_t seq) {
    return kPair ? ((seq / p.n_tiles) * 2 + sm90::cluster_rank()) * p.n_tiles + seq % p.n_tiles : seq;
  };
  const uint32_t rank = kPair ? sm90::cluster_rank() : 0;
  const bool skip_idle = (p.flags & kSkipIdleHalves) != 0;

  if (warpgroup == 0) {
    // Producer. Thread t stages 16-byte chunk t % 8 of rows t / 8 + 16 i of A (i < 8) and of B (i < kTileN / 16).
    sm90::release_registers<kProducerRegisters>();
    constexpr int kBRowsPerThread = kTileN / 16;
    const int chunk = threadIdx.x & 7, row_base = threadIdx.x >> 3;
    int stage = 0;
    uint32_t phase = 0;
    int fenced_expert = -1;  // TMA: the expert whose maps this thread last fenced
    for (int64_t seq = first(); seq < count; seq += step()) {
      const int64_t i_tile = block_tile(seq);
      const RowTile tile = p.tiles[i_tile / p.n_tiles];
      if (tile.expert < 0) break;  // the table's used entries come first
      const int n_tile = static_cast<int>(i_tile % p.n_tiles);
      // Where this thread's rows of A start in x (null past the tile's rows): a stage adds k0, where indices
      // cost a 64-bit multiply per row and stage (pointers measured ~1% faster on a 16K-token layer).
      const __nv_bfloat16* a_src[kARowsPerThread];
      uint32_t b_in = 0;
#pragma unroll
      for (int i = 0; i < kARowsPerThread; ++i) {
        const int r = row_base + 16 * i;
        const bool in = r < tile.rows;
        int64_t x_row = tile.row0 + r;
        if (in && p.gather) x_row = p.gather[x_row] / p.top_k;
        a_src[i] = in ? p.x + x_row * p.k + chunk * 8 : nullptr;
      }
      // B row r: SwiGLU's rows [0, kTileN / 2) are gate rows n_first + r, the rest the same up rows.
      constexpr int kHalf = kSwiGLU ? kBRowsPerThread / 2 : kBRowsPerThread;
      const int64_t n_first = int64_t{n_tile} * (kSwiGLU ? kTileN / 2 : kTileN);
#pragma unroll
      for (int i = 0; i < kBRowsPerThread; ++i) {
        b_in |= uint32_t{n_first + row_base + 16 * (i % kHalf) < p.n} << i;
      }
      const int64_t b_offset = (n_first + row_base) * p.k + chunk * 8;
      const auto* b0 = kTmaB ? p.x : reinterpret_cast<const __nv_bfloat16*>(p.w0[tile.expert]) + b_offset;
      const auto* b1 = kSwiGLU && !kTmaB ? reinterpret_cast<const __nv_bfloat16*>(p.w1[tile.expert]) + b_offset : b0;
      const uint8_t* map0 = kTmaB ? p.maps0 + int64_t{tile.expert} * 128 : nullptr;
      const uint8_t* map1 = kTmaB && kSwiGLU ? p.maps1 + int64_t{tile.expert} * 128 : map0;
      if (kTmaB && threadIdx.x == 0 && tile.expert != fenced_expert) {
        sm90::fence_tensormap_acquire(map0);
        if (kSwiGLU) sm90::fence_tensormap_acquire(map1);
        fenced_expert = tile.expert;
      }
      for (int kt = 0; kt < k_tiles; ++kt) {
        sm90::mbarrier_wait(empty + 8 * stage, phase ^ 1);  // the consumers are done with this stage
        const int64_t k0 = int64_t{kt} * kTileK;
        const bool k_in = k0 + chunk * 8 < p.k;
        const uint32_t a_stage = ring + stage * kStageBytes, b_stage = a_stage + kABytes;
#pragma unroll
        for (int i = 0; i < kARowsPerThread; ++i) {
          const bool ok = a_src[i] != nullptr && k_in;
          detail::cp_async16(a_stage + sm90::swizzled(row_base + 16 * i, chunk), ok ? a_src[i] + k0 : p.x,
                             ok ? 16 : 0);
        }
        if constexpr (kTmaB) {
          // One thread: the B tile as 64-row boxes (SwiGLU: the gate boxes, then the same up boxes); rows past
          // n and k past the matrix arrive as zeros.
          if (threadIdx.x == 0) {
            const uint32_t bar = full + 8 * stage;
            sm90::mbarrier_arrive_expect_tx(bar, Shape::kBBytes);
            constexpr int kBoxes = kTileN / 64, kHalfBoxes = kSwiGLU ? kBoxes / 2 : kBoxes;
#pragma unroll
            for (int j = 0; j < kBoxes; ++j) {
              const int64_t row = n_first + 64 * (j % kHalfBoxes);
              const void* map = j < kHalfBoxes ? map0 : map1;
              if constexpr (kPair) {  // the boxes of this block's parity, to both blocks
                if (j % 2 == static_cast<int>(rank)) {
                  sm90::tma_load_2d_multicast(b_stage + j * 64 * 128, map, static_cast<int32_t>(k0),
                                              static_cast<int32_t>(row), bar, 0x3);
                }
              } else {
                sm90::tma_load_2d(b_stage + j * 64 * 128, map, static_cast<int32_t>(k0), static_cast<int32_t>(row),
                                  bar);
              }
            }
          }
        } else {
#pragma unroll
          for (int i = 0; i < kBRowsPerThread; ++i) {
            const bool ok = ((b_in >> i) & 1) && k_in;
            const __nv_bfloat16* src = (i < kHalf ? b0 : b1) + int64_t{16 * (i % kHalf)} * p.k + k0;
            detail::cp_async16(b_stage + sm90::swizzled(row_base + 16 * i, chunk), ok ? src : p.x, ok ? 16 : 0);
          }
        }
        sm90::cp_async_mbarrier_arrive(full + 8 * stage);
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
    detail::cp_async_wait_all();  // no copy outlives its thread
    if constexpr (kPair) sm90::cluster_sync();  // the partner's last arrivals and copies into this block landed
    return;
  }

  sm90::claim_registers<kConsumerRegisters>();
  const int consumer = warpgroup - 1;
  const bool warp_leader = threadIdx.x % 32 == 0;
  if constexpr (kPingPong) {
    // Warpgroup c takes the block's tiles j = c, c + 2, ...; tile j's k step kt sits at ring position
    // j * k_tiles + kt (the producer fills the ring in tile order). Tile j's k loop starts only once tile j - 1's
    // has finished: a parity wait tells apart only the running phase and the one before it, so a warpgroup may
    // not wait on a stage more than one use ahead of the barrier, which it would do by starting its tile early.
    // The turns are one barrier per direction (turn[c]: the other warpgroup's tiles done, all four warps), not
    // one shared barrier, where a warp ahead of its siblings could pass a wait meant for two phases later
    // (tools/ws_pipeline_emulation.py catches both). It is also what makes the two warpgroups take turns: one's
    // products, the other's epilogue.
    float acc0[64], acc1[64];  // rows 0-63 and 64-127
    int64_t j = consumer;
    uint32_t turn_phase = 0;  // the parity of this warpgroup's next wait on turn[consumer] (the m-th is for phase m)
    const uint32_t my_turn = turn + 8 * consumer, their_turn = turn + 8 * (1 - consumer);
    for (int64_t i_tile = blockIdx.x + consumer * int64_t{gridDim.x}; i_tile < tiles; i_tile += 2 * int64_t{gridDim.x}, j += 2) {
      const RowTile tile = p.tiles[i_tile / p.n_tiles];
      if (tile.expert < 0) break;
      const bool both_halves = !skip_idle || tile.rows > kTileM / 2;  // else rows 64-127 are past the tile's
#pragma unroll
      for (int i = 0; i < 64; ++i) acc0[i] = acc1[i] = 0.f;
      if (j > 0) {
        sm90::mbarrier_wait(my_turn, turn_phase);
        turn_phase ^= 1;
      }
      int previous = 0;
      for (int kt = 0; kt < k_tiles; ++kt) {
        const int64_t position = j * k_tiles + kt;
        const int stage = static_cast<int>(position % kStages);
        sm90::mbarrier_wait(full + 8 * stage, static_cast<uint32_t>((position / kStages) & 1));
        sm90::fence_proxy_async();
        const uint32_t a_stage = ring + stage * kStageBytes, b_stage = a_stage + kABytes;
        sm90::fence_accumulators(acc0);
        sm90::fence_accumulators(acc1);
        sm90::wgmma_fence();
        // (This choice inside the k loop makes ptxas serialise the ping-pong wgmma, C7520, since the idle halves
        // came in; ping-pong is off by default. The fix, the choice outside the loop with acc1 touched only in
        // the two-half form, compiles clean but has not run on a GPU yet: fifteenth session's closing note.)
        if (both_halves) {
#pragma unroll
          for (int kk = 0; kk < kTileK / 16; ++kk) {
            const uint64_t b = sm90::smem_descriptor(b_stage + kk * 32);
            sm90::wgmma_ss<128>(acc0, sm90::smem_descriptor(a_stage + kk * 32), b);
            sm90::wgmma_ss<128>(acc1, sm90::smem_descriptor(a_stage + (kTileM / 2) * 128 + kk * 32), b);
          }
        } else {
#pragma unroll
          for (int kk = 0; kk < kTileK / 16; ++kk) {
            sm90::wgmma_ss<128>(acc0, sm90::smem_descriptor(a_stage + kk * 32), sm90::smem_descriptor(b_stage + kk * 32));
          }
        }
        sm90::wgmma_commit();
        sm90::fence_accumulators(acc0);
        sm90::fence_accumulators(acc1);
        sm90::wgmma_wait<1>();
        if (kt > 0 && warp_leader) sm90::mbarrier_arrive(empty + 8 * previous);
        __syncwarp();
        previous = stage;
      }
      if (warp_leader) sm90::mbarrier_arrive(their_turn);  // the next tile's warpgroup may start its k loop
      __syncwarp();
      sm90::wgmma_wait<0>();
      sm90::fence_accumulators(acc0);
      sm90::fence_accumulators(acc1);
      if (k_tiles > 0 && warp_leader) sm90::mbarrier_arrive(empty + 8 * previous);
      __syncwarp();
      const int n_tile = static_cast<int>(i_tile % p.n_tiles);
      store_tile<kSwiGLU, 128>(p, acc0, 0, tile.expert, tile.row0, tile.rows, n_tile);
      if (both_halves) store_tile<kSwiGLU, 128>(p, acc1, 1, tile.expert, tile.row0, tile.rows, n_tile);
    }
    return;
  }
  // Consumers: warpgroup 1 takes rows 0-63 of each tile, warpgroup 2 rows 64-127.
  int stage = 0;
  uint32_t phase = 0;
  float acc[Shape::kAccumulators];
  // A warp's arrival on stage s's `empty` barrier: in a pair, on both blocks' (either block's refill writes
  // into both).
  auto free_stage = [&](int s) {
    if (warp_leader) {
      if constexpr (kPair) {
        sm90::mbarrier_arrive_cluster(empty + 8 * s, 0);
        sm90::mbarrier_arrive_cluster(empty + 8 * s, 1);
      } else {
        sm90::mbarrier_arrive(empty + 8 * s);
      }
    }
    __syncwarp();
  };
  for (int64_t seq = first(); seq < count; seq += step()) {
    const int64_t i_tile = block_tile(seq);
    const RowTile tile = p.tiles[i_tile / p.n_tiles];
    if (tile.expert < 0) break;
    // Halves without rows: a pair's padding of an expert's odd row-tile count, and with kSkipIdleHalves the
    // second half of a tile of at most 64 rows (its products would be of zero-filled rows).
    const bool active = !(kPair || skip_idle) || tile.rows > consumer * (kTileM / 2);
    if (!active) {  // nothing reads this half's stages
      for (int kt = 0; kt < k_tiles; ++kt) {
        sm90::mbarrier_wait(full + 8 * stage, phase);
        free_stage(stage);
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
      continue;
    }
#pragma unroll
    for (int i = 0; i < Shape::kAccumulators; ++i) acc[i] = 0.f;
    int previous = 0;
    for (int kt = 0; kt < k_tiles; ++kt) {
      sm90::mbarrier_wait(full + 8 * stage, phase);
      sm90::fence_proxy_async();  // the stage's cp.async writes, seen by the tensor cores (TMA's already are)
      const uint32_t a_stage = ring + stage * kStageBytes + consumer * (kTileM / 2) * 128;
      const uint32_t b_stage = ring + stage * kStageBytes + kABytes;
      multiply_stage<kTileN>(acc, a_stage, b_stage);  // the products of kt - 1 have retired: their stage is free
      if (kt > 0) free_stage(previous);
      previous = stage;
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
    sm90::wgmma_wait<0>();
    sm90::fence_accumulators(acc);
    if (k_tiles > 0) free_stage(previous);
    store_tile<kSwiGLU, kTileN>(p, acc, consumer, tile.expert, tile.row0, tile.rows,
                                static_cast<int>(i_tile % p.n_tiles));
  }
  if constexpr (kPair) sm90::cluster_sync();  // no block leaves while its partner may still arrive on it
#else
  static_assert(TileShape<kTileN>::kAccumulators > 0, "tile shape");
  __trap();  // built without sm_90a code: grouped_gemm_sm90_supported() says false, so this never launches
#endif
}

template <bool kSwiGLU, int kTileN, bool kTmaB, bool kPingPong, bool kPair>
bool allow_smem() {
  const auto* kernel =
      reinterpret_cast<const void*>(grouped_gemm_sm90_ws_kernel<kSwiGLU, kTileN, kTmaB, kPingPong, kPair>);
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(WsRing<kTileN>::kSmemBytes)) == cudaSuccess;
}

// The blocks of a pair form that can be resident at once on the current device: twice the clusters of two
// that fit (cudaOccupancyMaxActiveClusters; half the SMs if it cannot say), cached per device and form.
template <bool kSwiGLU, int kTileN>
int resident_pair_blocks() {
  static std::mutex mutex;
  static std::map<int, int> cache;
  int device = 0;
  SY_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  cudaLaunchAttribute cluster[1];
  cluster[0].id = cudaLaunchAttributeClusterDimension;
  cluster[0].val.clusterDim.x = 2;
  cluster[0].val.clusterDim.y = 1;
  cluster[0].val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(2 * detail::multiprocessors()));
  config.blockDim = dim3(kWsThreads);
  config.dynamicSmemBytes = WsRing<kTileN>::kSmemBytes;
  config.attrs = cluster;
  config.numAttrs = 1;
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, grouped_gemm_sm90_ws_kernel<kSwiGLU, kTileN, true, false, true>,
                                     &config) != cudaSuccess) {
    cudaGetLastError();  // the refusal is the answer, not a sticky error
    clusters = 0;
  }
  if (clusters < 1) clusters = detail::multiprocessors() / 2;
  return cache[device] = 2 * clusters;
}

}  // namespace

template <bool kSwiGLU, int kTileN, bool kTmaB, bool kPingPong, bool kPair>
void launch_warp_specialized(const Problem& p, int64_t tiles, int blocks) {
  auto* kernel = grouped_gemm_sm90_ws_kernel<kSwiGLU, kTileN, kTmaB, kPingPong, kPair>;
  if constexpr (kPair) {
    // Pairs: an even grid, at most what is resident (tiles / 2 pair tiles, two blocks each).
    const int64_t pairs = std::min<int64_t>(tiles / 2, resident_pair_blocks<kSwiGLU, kTileN>() / 2);
    detail::launch_ex(kernel, dim3(static_cast<unsigned>(2 * std::max<int64_t>(pairs, 1))), dim3(kWsThreads),
                      WsRing<kTileN>::kSmemBytes, 2, false, p, tiles);
  } else {
    kernel<<<static_cast<unsigned>(blocks), kWsThreads, WsRing<kTileN>::kSmemBytes, stream()>>>(p, tiles);
  }
  SY_CUDA_CHECK_LAUNCH();
}
// Every form the launcher picks from: (SwiGLU, tile width, TMA weights, ping-pong, block pairs), each applied
// to X.
#define SY_WS_FORMS(X)                                                                                        \
  X(true, 128, false, false, false) X(false, 128, false, false, false) X(true, 256, false, false, false)     \
  X(false, 256, false, false, false) X(true, 128, true, false, false) X(false, 128, true, false, false)      \
  X(true, 256, true, false, false) X(false, 256, true, false, false) X(true, 128, false, true, false)        \
  X(false, 128, false, true, false) X(true, 128, true, true, false) X(false, 128, true, true, false)         \
  X(true, 128, true, false, true) X(false, 128, true, false, true) X(true, 256, true, false, true)           \
  X(false, 256, true, false, true)
#define SY_WS_INSTANCE(swiglu, tile_n, tma, pingpong, pair) \
  template void launch_warp_specialized<swiglu, tile_n, tma, pingpong, pair>(const Problem&, int64_t, int);
SY_WS_FORMS(SY_WS_INSTANCE)
#undef SY_WS_INSTANCE

bool allow_warp_specialized_smem() {
#define SY_WS_ALLOW(swiglu, tile_n, tma, pingpong, pair) &&allow_smem<swiglu, tile_n, tma, pingpong, pair>()
  const bool ok = true SY_WS_FORMS(SY_WS_ALLOW);
#undef SY_WS_ALLOW
#undef SY_WS_FORMS
  if (!ok) cudaGetLastError();  // the refusal is the answer, not a sticky error
  return ok;
}

}  // namespace sy::cuda::sm90_grouped
