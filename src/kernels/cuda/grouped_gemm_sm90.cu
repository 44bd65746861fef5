// Prefill-sized routed experts on Hopper: a grouped GEMM on the warpgroup tensor-core instruction (wgmma,
// sm_90a) over per-expert row counts that stay on the device (no host synchronisation, no pointer arrays
// built on the host). One block computes a 128 x 128 (or 128 x 256, set_grouped_gemm_sm90_tile_n) tile of one
// expert's product: block b takes column tile
// b % n_tiles of row tile b / n_tiles. A one-block kernel first lays the row tiles out from the device offsets
// (a prefix sum of ceil(rows_e / 128): row tile i -> expert, first row, rows), for a grid sized for the worst
// case, ceil(rows / 128) + experts row tiles (twice the experts for block pairs' paired table; rounded up to
// even), the blocks past the last tile exiting. The column tiles of one row
// tile run side by side, so the expert's rows are read from HBM about once and its weights stay in L2 across
// its row tiles.
//
// Operands: all 256 threads stage 64-wide k slices of A (the expert's rows) and B (the weight rows, (n, k)
// row-major: already the K-major layout wgmma reads) with cp.async into a 5-stage ring, in the 128-byte
// swizzled layout of the wgmma shared-memory descriptors (16-byte chunk c of row r lands at r * 128 +
// ((c ^ r % 8) * 16)), loads running three tiles ahead. Each of the two warpgroups multiplies its 64 rows of A
// by the whole B tile: four m64n128k16 instructions per stage, f32 accumulators in registers (64 per
// thread), one wgmma group kept in flight while the next stage's loads are issued.
// - SwiGLU variant: the B tile's rows 0-63 are gate rows and 64-127 the same up rows, so each thread holds
//   gate and up of the same output elements (accumulator columns c and c + 64) and the epilogue writes
//   silu(gate) * up for 64 output columns; A's rows are gathered from the un-permuted tokens through the
//   dispatch layout (row r of the groups reads token row_assignment[r] / top_k): no permuted copy.
//   Expert biases (gpt-oss) are added to the f32 accumulators and gpt-oss's clamped activation applied there.
// - Plain variant: A's rows are the grouped rows themselves (the SwiGLU output), kTileN output columns, plus
//   the expert's bias row if any.
// Products are rounded to bf16 once (as the cuBLAS path's bf16 outputs are). CPU reference: ops::linear per
// expert; tests/gpu/gpu_grouped_test.cc compares both. tools/wgmma_gemm_emulation.py checks the index maps.
// set_grouped_gemm_sm90_warp_specialized(true) launches grouped_gemm_sm90_ws.cu's kernel on the same row-tile
// table instead: persistent blocks, a producer warpgroup and two consumer warpgroups, optionally TMA weight
// loads and ping-pong consumers.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>

#include "async_copy.cuh"
#include "grouped_gemm_sm90.cuh"
#include "op_common.cuh"
#include "wgmma.cuh"

namespace sy::cuda {

namespace {

using namespace sm90_grouped;

// One block: row tile i -> (expert, first row, rows) for every row tile, experts in order, each expert's rows cut
// into ceil(rows_e / 128) tiles (with `pair`, one more of 0 rows where that count is odd, so that tiles 2j and
// 2j + 1 always belong to one expert); entries [total, max_tiles) get expert -1. Chunks of kThreads experts: a
// block-wide exclusive scan of their tile counts (shared memory, Hillis-Steele), then each thread writes its
// expert's tiles.
__global__ void __launch_bounds__(kThreads) row_tile_table_kernel(const int64_t* offsets, int experts,
                                                                  int64_t max_tiles, bool pair, RowTile* tiles) {
  __shared__ int64_t scan[kThreads];
  __shared__ int64_t carry;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int e0 = 0; e0 < experts; e0 += kThreads) {
    const int e = e0 + static_cast<int>(threadIdx.x);
    const int64_t lo = e < experts ? offsets[e] : 0, count = e < experts ? offsets[e + 1] - lo : 0;
    const int64_t real = count > 0 ? (count + kTileM - 1) / kTileM : 0;
    const int64_t n = pair ? real + (real & 1) : real;
    scan[threadIdx.x] = n;
    __syncthreads();
    for (int d = 1; d < kThreads; d <<= 1) {
      const int64_t v = threadIdx.x >= static_cast<unsigned>(d) ? scan[threadIdx.x - d] : 0;
      __syncthreads();
      scan[threadIdx.x] += v;
      __syncthreads();
    }
    const int64_t first = carry + scan[threadIdx.x] - n;  // this expert's first row tile
    for (int64_t i = 0; i < n && first + i < max_tiles; ++i) {
      const int64_t start = i * kTileM;
      const int64_t left = count - start > 0 ? count - start : 0;
      tiles[first + i] = {lo + start, e, static_cast<int32_t>(left < kTileM ? left : kTileM)};
    }
    __syncthreads();  // every thread has read carry and scan
    if (threadIdx.x == kThreads - 1) carry += scan[kThreads - 1];
    __syncthreads();
  }
  for (int64_t i = carry + threadIdx.x; i < max_tiles; i += kThreads) tiles[i] = {0, -1, 0};
}

template <bool kSwiGLU, int kTileN>
__global__ void __launch_bounds__(kThreads, 1) grouped_gemm_sm90_kernel(const Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = TileShape<kTileN>;
  constexpr int kStages = Shape::kStages, kStageBytes = Shape::kStageBytes, kBRows = Shape::kBRows;
  extern __shared__ uint8_t smem_raw[];
  const int64_t m_tile = blockIdx.x / p.n_tiles;
  const int n_tile = static_cast<int>(blockIdx.x % p.n_tiles);
  const RowTile tile = p.tiles[m_tile];
  const int expert = tile.expert;
  if (expert < 0) return;
  const int64_t row0 = tile.row0;
  const int rows = tile.rows;
  const uint32_t ring = (detail::smem_address(smem_raw) + 1023u) & ~1023u;

  // This thread stages 16-byte chunk `chunk` of rows row_base + 32 i of both operands (i < 4 for A, i <
  // kBRows for B).
  const int chunk = threadIdx.x & 7, row_base = threadIdx.x >> 3;
  const auto* w0 = reinterpret_cast<const __nv_bfloat16*>(p.w0[expert]);
  const auto* w1 = kSwiGLU ? reinterpret_cast<const __nv_bfloat16*>(p.w1[expert]) : w0;
  const __nv_bfloat16* a_src[4];
  const __nv_bfloat16* b_src[kBRows];
  bool a_in[4], b_in[kBRows];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = row_base + 32 * i;
    a_in[i] = r < rows;
    int64_t x_row = row0 + r;
    if (a_in[i] && p.gather) x_row = p.gather[x_row] / p.top_k;
    a_src[i] = p.x + (a_in[i] ? x_row : 0) * p.k + chunk * 8;
  }
#pragma unroll
  for (int i = 0; i < kBRows; ++i) {
    const int r = row_base + 32 * i;
    // SwiGLU: B rows [0, kTileN / 2) are gate rows, the rest the same up rows.
    const int64_t n_row = kSwiGLU ? int64_t{n_tile} * (kTileN / 2) + (r % (kTileN / 2)) : int64_t{n_tile} * kTileN + r;
    const __nv_bfloat16* w = kSwiGLU && r >= kTileN / 2 ? w1 : w0;
    b_in[i] = n_row < p.n;
    b_src[i] = w + (b_in[i] ? n_row : 0) * p.k + chunk * 8;
  }
  auto load_stage = [&](int kt, int stage) {
    const int64_t k0 = int64_t{kt} * kTileK;
    const bool k_in = k0 + chunk * 8 < p.k;
    const uint32_t a_stage = ring + stage * kStageBytes, b_stage = a_stage + kABytes;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool a_ok = a_in[i] && k_in;
      detail::cp_async16(a_stage + sm90::swizzled(row_base + 32 * i, chunk), a_ok ? a_src[i] + k0 : p.x, a_ok ? 16 : 0);
    }
#pragma unroll
    for (int i = 0; i < kBRows; ++i) {
      const bool b_ok = b_in[i] && k_in;
      detail::cp_async16(b_stage + sm90::swizzled(row_base + 32 * i, chunk), b_ok ? b_src[i] + k0 : p.x, b_ok ? 16 : 0);
    }
  };

  float acc[Shape::kAccumulators];
#pragma unroll
  for (int i = 0; i < Shape::kAccumulators; ++i) acc[i] = 0.f;
  const int k_tiles = static_cast<int>((p.k + kTileK - 1) / kTileK);
  const int warpgroup = threadIdx.x / 128;
#pragma unroll
  for (int s = 0; s < kStages - 2; ++s) {
    if (s < k_tiles) load_stage(s, s);
    detail::cp_async_commit();  // one group per stage, empty or not, so the counts below hold
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    // Stage kt has landed (this thread's copies); the fence hands them to the tensor cores, and the barrier
    // makes every thread's copies visible and tells that both warpgroups finished the products of kt - 2.
    detail::cp_async_wait<kStages - 3>();
    sm90::fence_proxy_async();
    __syncthreads();
    const int next = kt + kStages - 2;  // into the stage of kt - 2, free now
    if (next < k_tiles) load_stage(next, next % kStages);
    detail::cp_async_commit();
    const uint32_t a_stage = ring + (kt % kStages) * kStageBytes + warpgroup * (kTileM / 2) * 128;
    const uint32_t b_stage = ring + (kt % kStages) * kStageBytes + kABytes;
    multiply_stage<kTileN>(acc, a_stage, b_stage);  // the products of kt - 1 are done (kt's may still run)
  }
  sm90::wgmma_wait<0>();
  sm90::fence_accumulators(acc);

  store_tile<kSwiGLU, kTileN>(p, acc, warpgroup, expert, row0, rows, n_tile);
#else
  static_assert(TileShape<kTileN>::kBRows > 0 && TileShape<kTileN>::kAccumulators > 0, "tile shape");
  __trap();  // built without sm_90a code: grouped_gemm_sm90_supported() says false, so this never launches
#endif
}

// cp.async reads 16-byte chunks of x's rows; the epilogue writes 16-byte groups of 8 bf16 columns.
void check_operands(const char* op, const Tensor& x, const Tensor& y) {
  SY_REQUIRE(x.is_contiguous() && y.is_contiguous() && reinterpret_cast<uintptr_t>(x.raw()) % 16 == 0 &&
                 reinterpret_cast<uintptr_t>(y.raw()) % 16 == 0,
             InvalidArgument, op, "x and the output must be contiguous and 16-byte aligned; got x ", x.describe(),
             " y ", y.describe());
}

void check_table(const char* op, const char* name, const ExpertWeightTable& w) {
  for (int e = 0; e < w.num_experts; ++e) {
    SY_REQUIRE(!w.keep[e].defined() || reinterpret_cast<uintptr_t>(w.keep[e].raw()) % 16 == 0, InvalidArgument, op,
               name, " weight of expert ", e, " is not 16-byte aligned");
  }
}

std::atomic<int> g_tile_n{0};  // 0: by row count
// The schedule: warp-specialised with TMA weight loads, tiles split between the consumer warpgroups (H100,
// 2026-12-06, docs/benchmarks.md: 64 tokens 0.465 ms against 0.532 one tile per block, 16384 tokens 3.02
// against 3.30 ms). Ping-pong 128 x 128 tiles were the default below kGroupedSm90WideRows until idle halves
// were skipped; since then split tiles are faster there (H100, 2026-12-06: a layer at 32-256 tokens 0.400-0.465
// against 0.409-0.474 ms, batch-32 and batch-64 decode steps 0.974x).
std::atomic<bool> g_warp_specialized{true};
std::atomic<bool> g_tma{true};
std::atomic<bool> g_pingpong{false};
std::atomic<bool> g_cluster{false};  // block pairs sharing weight tiles (off: measured slower)
std::atomic<bool> g_skip_idle_halves{true};
std::atomic<int64_t> g_calls{0};  // launches so far (tests check that a forward pass took this path)
std::atomic<int64_t> g_one_tile_launches{0}, g_ws_launches{0}, g_tma_launches{0}, g_pingpong_launches{0},
    g_pair_launches{0};

template <bool kSwiGLU, int kTileN>
void launch_tiled(Problem p, int64_t rows) {
  const int64_t cols_per_tile = kSwiGLU ? kTileN / 2 : kTileN;
  p.n_tiles = static_cast<int>((p.n + cols_per_tile - 1) / cols_per_tile);
  // Block pairs (the warp-specialised TMA form of split tiles, where asked for) take a paired row-tile table.
  const bool tma = g_warp_specialized.load() && g_tma.load() && p.maps0 != nullptr && (!kSwiGLU || p.maps1 != nullptr);
  const bool pingpong = kTileN == 128 && g_pingpong.load();
  const bool pair = tma && !pingpong && g_cluster.load();
  // Every expert adds at most one partial row tile, and in a paired table at most one empty one; an even count.
  const int64_t used_experts = rows < p.experts ? rows : p.experts;
  int64_t m_tiles = (rows + kTileM - 1) / kTileM + (pair ? 2 : 1) * used_experts;
  m_tiles += m_tiles & 1;
  const int64_t blocks = m_tiles * p.n_tiles;
  SY_REQUIRE(blocks < INT32_MAX, InvalidArgument, "cuda grouped_gemm_sm90", rows, " rows x ", p.n,
             " columns are too many tiles for one launch");
  Tensor table = Tensor::empty({m_tiles * static_cast<int64_t>(sizeof(RowTile))}, DType::kU8, Device::kCuda);
  auto* tiles = reinterpret_cast<RowTile*>(table.raw());
  row_tile_table_kernel<<<1, kThreads, 0, stream()>>>(p.offsets, p.experts, m_tiles, pair, tiles);
  SY_CUDA_CHECK_LAUNCH();
  p.tiles = tiles;
  p.flags = g_skip_idle_halves.load() ? kSkipIdleHalves : 0;
  if (g_warp_specialized.load()) {
    const int resident = static_cast<int>(std::min<int64_t>(blocks, detail::multiprocessors()));
    // TMA weight loads where asked for and every table has its maps (tma above).
    ++g_ws_launches;
    if (tma) ++g_tma_launches;
    if constexpr (kTileN == 128) {
      if (pingpong) {
        ++g_pingpong_launches;
        if (tma) {
          launch_warp_specialized<kSwiGLU, 128, true, true, false>(p, blocks, resident);
        } else {
          launch_warp_specialized<kSwiGLU, 128, false, true, false>(p, blocks, resident);
        }
        return;
      }
    }
    if (pair) {
      ++g_pair_launches;
      launch_warp_specialized<kSwiGLU, kTileN, true, false, true>(p, blocks, resident);
    } else if (tma) {
      launch_warp_specialized<kSwiGLU, kTileN, true, false, false>(p, blocks, resident);
    } else {
      launch_warp_specialized<kSwiGLU, kTileN, false, false, false>(p, blocks, resident);
    }
    return;
  }
  ++g_one_tile_launches;
  grouped_gemm_sm90_kernel<kSwiGLU, kTileN>
      <<<static_cast<unsigned>(blocks), kThreads, TileShape<kTileN>::kSmemBytes, stream()>>>(p);
  SY_CUDA_CHECK_LAUNCH();
}

template <bool kSwiGLU>
void launch(Problem p, int64_t rows) {
  SY_REQUIRE(grouped_gemm_sm90_supported(), Unsupported, "cuda grouped_gemm_sm90",
             "needs a compute capability 9.0 GPU and a build with sm_90a code");
  ++g_calls;
  // The width first (set, or by row count); ping-pong is a form of the 128-column tiles only.
  const int tile_n = g_tile_n.load();
  if (tile_n == 256 || (tile_n == 0 && rows >= kGroupedSm90WideRows)) {
    launch_tiled<kSwiGLU, 256>(p, rows);
  } else {
    launch_tiled<kSwiGLU, 128>(p, rows);
  }
}

}  // namespace

bool grouped_gemm_sm90_supported() {
  // Per device: the shared-memory attribute belongs to the current device.
  static std::map<int, bool> cache;
  return detail::once_per_device(cache, [] {
    if (!detail::sm90a_device(kMaxSmemBytes)) return false;
    auto allow = [](const void* kernel, size_t bytes) {
      SY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    };
    allow(reinterpret_cast<const void*>(grouped_gemm_sm90_kernel<true, 128>), TileShape<128>::kSmemBytes);
    allow(reinterpret_cast<const void*>(grouped_gemm_sm90_kernel<false, 128>), TileShape<128>::kSmemBytes);
    allow(reinterpret_cast<const void*>(grouped_gemm_sm90_kernel<true, 256>), TileShape<256>::kSmemBytes);
    allow(reinterpret_cast<const void*>(grouped_gemm_sm90_kernel<false, 256>), TileShape<256>::kSmemBytes);
    return allow_warp_specialized_smem();
  });
}

void set_grouped_gemm_sm90_tile_n(int tile_n) {
  SY_REQUIRE(tile_n == 0 || tile_n == 128 || tile_n == 256, InvalidArgument, "cuda grouped_gemm_sm90",
             "tile width must be 128, 256 or 0 (by row count), got ", tile_n);
  g_tile_n.store(tile_n);
}

int grouped_gemm_sm90_tile_n() { return g_tile_n.load(); }

void set_grouped_gemm_sm90_warp_specialized(bool on) { g_warp_specialized.store(on); }

bool grouped_gemm_sm90_warp_specialized() { return g_warp_specialized.load(); }

void set_grouped_gemm_sm90_tma(bool on) { g_tma.store(on); }

bool grouped_gemm_sm90_tma() { return g_tma.load(); }

void set_grouped_gemm_sm90_pingpong(bool on) { g_pingpong.store(on); }

bool grouped_gemm_sm90_pingpong() { return g_pingpong.load(); }

void set_grouped_gemm_sm90_cluster(bool on) { g_cluster.store(on); }

bool grouped_gemm_sm90_cluster() { return g_cluster.load(); }

void set_grouped_gemm_sm90_skip_idle_halves(bool on) { g_skip_idle_halves.store(on); }

bool grouped_gemm_sm90_skip_idle_halves() { return g_skip_idle_halves.load(); }

int64_t grouped_gemm_sm90_calls() { return g_calls.load(); }

GroupedGemmSm90Launches grouped_gemm_sm90_launches() {
  return {g_one_tile_launches.load(), g_ws_launches.load(), g_tma_launches.load(), g_pingpong_launches.load(),
          g_pair_launches.load()};
}

namespace {

void check_bias(const char* op, const char* name, const Tensor& bias, const ExpertWeightTable& w) {
  if (!bias.defined()) return;
  detail::require_device(op, name, bias);
  detail::require_dtype(op, name, bias, DType::kF32);
  SY_REQUIRE(bias.dim() == 2 && bias.size(0) == w.num_experts && bias.size(1) == w.n, InvalidArgument, op, name, " ",
             bias.describe(), " for ", w.num_experts, " experts of ", w.n, " outputs");
}

}  // namespace

void grouped_linear_sm90(const Tensor& x, const ExpertWeightTable& w, const Tensor& offsets, Tensor& y,
                         const Tensor& bias) {
  const char* op = "cuda grouped_linear_sm90";
  detail::require_device(op, "x", x);
  detail::require_device(op, "y", y);
  detail::require_device(op, "offsets", offsets);
  detail::require_dtype(op, "x", x, DType::kBF16, DType::kBF16);
  detail::require_dtype(op, "y", y, DType::kBF16, DType::kBF16);
  detail::require_dtype(op, "offsets", offsets, DType::kI64, DType::kI64);
  SY_REQUIRE(x.dim() == 2 && y.dim() == 2 && x.size(1) == w.k && y.size(1) == w.n && y.size(0) == x.size(0) &&
                 offsets.numel() == w.num_experts + 1,
             InvalidArgument, op, "x ", x.describe(), " y ", y.describe(), " weights (", w.n, ", ", w.k, ") x ",
             w.num_experts, " offsets ", offsets.describe());
  SY_REQUIRE(w.k % 8 == 0 && w.n % 8 == 0, InvalidArgument, op, "needs k and n multiples of 8, got weights (",
             w.n, ", ", w.k, ")");
  check_table(op, "the", w);
  check_bias(op, "bias", bias, w);
  check_operands(op, x, y);
  if (x.size(0) == 0 || w.n == 0) return;
  Problem p{};
  p.x = static_cast<const __nv_bfloat16*>(x.raw());
  p.top_k = 1;
  p.offsets = offsets.i64();
  p.w0 = reinterpret_cast<const uint64_t*>(w.pointers.i64());
  p.maps0 = w.tensor_maps.defined() ? static_cast<const uint8_t*>(w.tensor_maps.raw()) : nullptr;
  p.y = static_cast<__nv_bfloat16*>(y.raw());
  p.bias0 = bias.defined() ? bias.f32() : nullptr;
  p.n = w.n;
  p.k = w.k;
  p.experts = w.num_experts;
  launch<false>(p, x.size(0));
}

void grouped_swiglu_sm90(const Tensor& x, const ExpertWeightTable& gate, const ExpertWeightTable& up,
                         const DeviceDispatchLayout& layout, Tensor& h, const SwigluSm90Args& args) {
  const char* op = "cuda grouped_swiglu_sm90";
  detail::require_device(op, "x", x);
  detail::require_device(op, "h", h);
  detail::require_dtype(op, "x", x, DType::kBF16, DType::kBF16);
  detail::require_dtype(op, "h", h, DType::kBF16, DType::kBF16);
  const int64_t rows = layout.num_tokens * layout.top_k;
  SY_REQUIRE(x.dim() == 2 && h.dim() == 2 && x.size(0) == layout.num_tokens && x.size(1) == gate.k &&
                 h.size(0) == rows && h.size(1) == gate.n && layout.num_experts == gate.num_experts &&
                 up.n == gate.n && up.k == gate.k && up.num_experts == gate.num_experts && layout.top_k > 0 &&
                 layout.offsets.defined() && layout.offsets.numel() == gate.num_experts + 1 &&
                 layout.row_assignment.defined() && layout.row_assignment.numel() == rows,
             InvalidArgument, op, "x ", x.describe(), " (tokens of a layout of ", layout.num_tokens, " x top-",
             layout.top_k, " over ", layout.num_experts, " experts) h ", h.describe(), " gate (", gate.n, ", ",
             gate.k, ") x ", gate.num_experts, " up (", up.n, ", ", up.k, ") x ", up.num_experts);
  SY_REQUIRE(gate.k % 8 == 0 && gate.n % 8 == 0, InvalidArgument, op, "needs k and n multiples of 8, got (",
             gate.n, ", ", gate.k, ")");
  check_table(op, "gate", gate);
  check_table(op, "up", up);
  check_operands(op, x, h);
  check_bias(op, "gate bias", args.gate_bias, gate);
  check_bias(op, "up bias", args.up_bias, up);
  SY_REQUIRE(args.limit <= 0.f || std::isfinite(args.alpha), InvalidArgument, op, "alpha ", args.alpha);
  if (rows == 0 || gate.n == 0) return;
  Problem p{};
  p.x = static_cast<const __nv_bfloat16*>(x.raw());
  p.gather = layout.row_assignment.i64();
  p.top_k = layout.top_k;
  p.offsets = layout.offsets.i64();
  p.w0 = reinterpret_cast<const uint64_t*>(gate.pointers.i64());
  p.w1 = reinterpret_cast<const uint64_t*>(up.pointers.i64());
  p.maps0 = gate.tensor_maps.defined() ? static_cast<const uint8_t*>(gate.tensor_maps.raw()) : nullptr;
  p.maps1 = up.tensor_maps.defined() ? static_cast<const uint8_t*>(up.tensor_maps.raw()) : nullptr;
  p.y = static_cast<__nv_bfloat16*>(h.raw());
  p.bias0 = args.gate_bias.defined() ? args.gate_bias.f32() : nullptr;
  p.bias1 = args.up_bias.defined() ? args.up_bias.f32() : nullptr;
  p.alpha = args.alpha;
  p.limit = args.limit;
  p.n = gate.n;
  p.k = gate.k;
  p.experts = gate.num_experts;
  launch<true>(p, rows);
}

}  // namespace sy::cuda
