// cuda::grouped_linear and grouped_swiglu against per-expert CPU linear (f32 activations, bf16 weights): uneven
// groups (empty experts, more rows than one pass holds), both the vectorised (k % 8 == 0) and the scalar path,
// and the glue ops of the device forward pass (embedding, scatter/gather rows, gated add).
#include <map>

#include "gpu_harness.h"
#include "switchyard/moe/dispatch.h"

namespace sy {
namespace {

using test::expect_close;
using test::rand_tensor;

// Row offsets of experts receiving `counts` rows each: (E + 1,), starting at 0.
std::vector<int64_t> offsets_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> offsets(1, 0);
  for (int64_t c : counts) offsets.push_back(offsets.back() + c);
  return offsets;
}

// `experts` random (n, k) bf16 expert matrices, on the host and on the device.
void random_experts(size_t experts, int64_t n, int64_t k, std::vector<Tensor>& host, std::vector<Tensor>& dev) {
  for (size_t e = 0; e < experts; ++e) {
    host.push_back(rand_tensor({n, k}, 0.5f).to(DType::kBF16));
    dev.push_back(cuda::to_device(host.back()));
  }
}

void check_grouped(int64_t n, int64_t k, const std::vector<int64_t>& counts) {
  const int experts = static_cast<int>(counts.size());
  const std::vector<int64_t> offsets = offsets_of(counts);
  const int64_t rows = offsets.back();
  Tensor x = rand_tensor({rows, k});
  std::vector<Tensor> host_w, dev_w;
  random_experts(counts.size(), n, k, host_w, dev_w);
  Tensor expected = Tensor::empty({rows, n}, DType::kF32);
  for (int e = 0; e < experts; ++e) {
    if (counts[e] == 0) continue;
    Tensor out = ops::linear(x.slice(0, offsets[e], offsets[e + 1]).contiguous(), host_w[e]);
    std::memcpy(expected.f32() + offsets[e] * n, out.f32(), sizeof(float) * out.numel());
  }
  cuda::ExpertWeightTable table = cuda::make_expert_weight_table(dev_w);
  Tensor y = test::poisoned_device({rows, n});
  cuda::grouped_linear(cuda::to_device(x), table, cuda::to_device(test::i64_tensor(offsets)), y);
  expect_close("grouped_linear n=" + std::to_string(n) + " k=" + std::to_string(k), y, expected, test::kF32Tol);
  // A bound on the rows per expert sizes the row chunks only: bounds below the true counts (every chunk size,
  // experts spanning several chunks) give the same values.
  for (int64_t bound : {1, 2, 3, 4, 9}) {
    Tensor yb = test::poisoned_device({rows, n});
    cuda::grouped_linear(cuda::to_device(x), table, cuda::to_device(test::i64_tensor(offsets)), yb, bound);
    expect_close("grouped_linear rows bound " + std::to_string(bound), yb, expected, test::kF32Tol);
  }
  EXPECT_THROW(cuda::grouped_linear(cuda::to_device(x), table, cuda::to_device(test::i64_tensor(offsets)), y, -1),
               InvalidArgument);
  // The prefill path (cuBLAS grouped GEMM, bf16 operands): within the bf16 tolerance, from f32 and bf16 x.
  Tensor z = test::poisoned_device({rows, n});
  cuda::grouped_gemm(cuda::to_device(x), table, offsets, z);
  expect_close("grouped_gemm n=" + std::to_string(n) + " k=" + std::to_string(k), z, expected, test::kBf16Tol);
  Tensor zb = test::poisoned_device({rows, n});
  cuda::grouped_gemm(cuda::to_device(x.to(DType::kBF16)), table, offsets, zb);
  expect_close("grouped_gemm bf16 x", zb, expected, test::kBf16Tol);
  std::printf("grouped_gemm n=%lld k=%lld ran %s\n", static_cast<long long>(n), static_cast<long long>(k),
              cuda::grouped_gemm_is_grouped() ? "grouped" : "per expert (fallback)");
}

// cuda::grouped_swiglu (gate, up and SiLU in one pass) against the CPU's silu(x gate^T) * (x up^T) per expert,
// and against the three-launch device path it replaces (grouped_linear twice, silu_mul).
void check_grouped_swiglu(int64_t n, int64_t k, const std::vector<int64_t>& counts) {
  const int experts = static_cast<int>(counts.size());
  const std::vector<int64_t> offsets = offsets_of(counts);
  const int64_t rows = offsets.back();
  Tensor x = rand_tensor({rows, k});
  std::vector<Tensor> host_g, host_u, dev_g, dev_u;
  random_experts(counts.size(), n, k, host_g, dev_g);
  random_experts(counts.size(), n, k, host_u, dev_u);
  Tensor expected = Tensor::empty({rows, n}, DType::kF32);
  for (int e = 0; e < experts; ++e) {
    if (counts[e] == 0) continue;
    Tensor xe = x.slice(0, offsets[e], offsets[e + 1]).contiguous();
    Tensor g = ops::linear(xe, host_g[e]), u = ops::linear(xe, host_u[e]);
    for (int64_t i = 0; i < g.numel(); ++i) {
      const float gv = g.f32()[i];
      expected.f32()[offsets[e] * n + i] = gv / (1.f + std::exp(-gv)) * u.f32()[i];
    }
  }
  cuda::ExpertWeightTable gt = cuda::make_expert_weight_table(dev_g), ut = cuda::make_expert_weight_table(dev_u);
  const Tensor dx = cuda::to_device(x), doff = cuda::to_device(test::i64_tensor(offsets));
  Tensor y = test::poisoned_device({rows, n});
  cuda::grouped_swiglu(dx, gt, ut, doff, y);
  const std::string what = "grouped_swiglu n=" + std::to_string(n) + " k=" + std::to_string(k);
  expect_close(what, y, expected, test::kF32Tol);
  Tensor g3 = test::poisoned_device({rows, n}), u3 = test::poisoned_device({rows, n});
  cuda::grouped_linear(dx, gt, doff, g3);
  cuda::grouped_linear(dx, ut, doff, u3);
  cuda::silu_mul(g3, u3, g3);
  expect_close(what + " vs three launches", y, cuda::to_host(g3), 1e-6);
}

TEST(GpuGrouped, SwigluInOnePassMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  check_grouped_swiglu(96, 64, {3, 0, 17, 1, 8, 0});  // vectorised; a group over three passes of 8 rows
  check_grouped_swiglu(50, 36, {2, 9, 0, 5});         // scalar path, odd column count (a half-filled warp)
  std::vector<int64_t> sparse(128, 0);
  for (int e : {0, 33, 127}) sparse[e] = 1;
  check_grouped_swiglu(768, 2048, sparse);  // a Qwen3-30B-A3B decode step's shape
  std::vector<Tensor> w = {cuda::to_device(rand_tensor({8, 16}).to(DType::kBF16))};
  std::vector<Tensor> wide = {cuda::to_device(rand_tensor({12, 16}).to(DType::kBF16))};
  cuda::ExpertWeightTable a = cuda::make_expert_weight_table(w), b = cuda::make_expert_weight_table(wide);
  Tensor y = test::poisoned_device({2, 8});
  EXPECT_THROW(cuda::grouped_swiglu(cuda::to_device(rand_tensor({2, 16})), a, b,
                                    cuda::to_device(test::i64_tensor({0, 2})), y),
               InvalidArgument);  // gate and up differ
}

TEST(GpuGrouped, MatchesPerExpertLinear) {
  SY_SKIP_WITHOUT_GPU();
  check_grouped(96, 64, {3, 0, 17, 1, 8, 0});   // vectorised path; a group over two passes of 8 rows
  check_grouped(50, 36, {2, 9, 0, 5});          // scalar path (k % 8 != 0), n not a multiple of the tile
  check_grouped(130, 256, {1, 1, 1, 1, 1, 1, 1, 1});  // decode: one row per expert
  // Few active experts among many (the grid is sized by rows: block rows find the y-th active expert),
  // including active experts past the first 32 and the last one.
  std::vector<int64_t> sparse(160, 0);
  for (int e : {0, 31, 32, 77, 100, 159}) sparse[e] = 1;
  check_grouped(64, 128, sparse);
  std::vector<int64_t> one(128, 0);
  one[127] = 21;  // every row on the last expert: one block row walks 3 passes of 8 rows
  check_grouped(48, 96, one);
  // Prefill-sized groups: hundreds of rows over many experts.
  std::vector<int64_t> big(32);
  for (int e = 0; e < 32; ++e) big[e] = (e * 37) % 91;
  check_grouped(256, 512, big);
}

// grouped_swiglu reading its rows straight from the tokens through a dispatch layout equals the same op on
// the permuted rows (same arithmetic: bitwise), for decode-sized routings (the single-block layout) and a
// prefill-sized one (the two-kernel layout), vectorised and scalar k.
TEST(GpuGrouped, SwigluThroughTheLayoutEqualsPermutedRows) {
  SY_SKIP_WITHOUT_GPU();
  struct Case { int64_t tokens; int top_k, experts; int64_t n, k; };
  // 1 to 4 tokens take the 1-, 2- and 4-row chunks (a layout bounds an expert's rows by its tokens), the
  // offsets path 8-row ones: equal bit for bit.
  for (Case c : {Case{1, 8, 128, 96, 256}, Case{2, 8, 128, 96, 256}, Case{3, 8, 32, 64, 128}, Case{4, 8, 16, 48, 256},
                 Case{16, 8, 128, 64, 128}, Case{5, 2, 4, 50, 36}, Case{300, 4, 16, 32, 64}}) {
    moe::Routing r = test::make_routing(c.tokens, c.top_k, c.experts, [&](int64_t i, int s) {
      return static_cast<int>((i * 7 + s * 13 + (i * s) % 5) % c.experts);
    });
    for (int64_t i = 0; i < c.tokens; ++i) {  // distinct experts per token, as a router gives
      for (int s = 0; s < c.top_k; ++s) r.expert[i * c.top_k + s] = static_cast<int32_t>((i * 3 + s) % c.experts);
    }
    Tensor expert = Tensor::empty({c.tokens, c.top_k}, DType::kI32);
    for (size_t i = 0; i < r.expert.size(); ++i) expert.i32()[i] = r.expert[i];
    cuda::DeviceDispatchLayout layout = cuda::make_dispatch_layout(cuda::to_device(expert), c.experts);
    std::vector<Tensor> host_g, dev_g, host_u, dev_u;
    random_experts(c.experts, c.n, c.k, host_g, dev_g);
    random_experts(c.experts, c.n, c.k, host_u, dev_u);
    cuda::ExpertWeightTable gt = cuda::make_expert_weight_table(dev_g), ut = cuda::make_expert_weight_table(dev_u);
    const int64_t rows = c.tokens * c.top_k;
    Tensor x = cuda::to_device(rand_tensor({c.tokens, c.k}));
    Tensor permuted = test::poisoned_device({rows, c.k});
    cuda::permute(x, layout, permuted);
    Tensor want = test::poisoned_device({rows, c.n}), got = test::poisoned_device({rows, c.n});
    cuda::grouped_swiglu(permuted, gt, ut, layout.offsets, want);
    cuda::grouped_swiglu(x, gt, ut, layout, got);
    expect_close("grouped_swiglu through the layout, " + std::to_string(c.tokens) + " tokens x top-" +
                     std::to_string(c.top_k) + " k=" + std::to_string(c.k),
                 got, cuda::to_host(want), 0.0);
  }
  // x must hold the layout's tokens.
  Tensor expert = cuda::to_device(Tensor::zeros({3, 1}, DType::kI32));
  cuda::DeviceDispatchLayout layout = cuda::make_dispatch_layout(expert, 2);
  std::vector<Tensor> hg, dg;
  random_experts(2, 8, 16, hg, dg);
  cuda::ExpertWeightTable t = cuda::make_expert_weight_table(dg);
  Tensor y = test::poisoned_device({3, 8});
  EXPECT_THROW(cuda::grouped_swiglu(cuda::to_device(rand_tensor({4, 16})), t, t, layout, y), InvalidArgument);
}

// cuda::grouped_linear_combine (down and the weighted combine in one launch) against the CPU (out0[t] + sum_s
// weight[t, s] * W_e x_r) and against the two launches it replaces (grouped_linear, unpermute): one to four
// tokens, top-k below, at and above the eight warps (slots shared by the warps, or a warp walking several),
// a Qwen3-30B-A3B decode step's shape, k past one 1024-column round and ragged, a column count off the tiles,
// and a slot with no expert (id -1: adds nothing); on Hopper the bulk form too (top-32 has each warp refill its
// buffer four times; k = 1408 still takes it, k = 2048 is past its bound and keeps the register form).
TEST(GpuGrouped, LinearCombineMatchesCpuAndTwoLaunches) {
  SY_SKIP_WITHOUT_GPU();
  struct Case { int64_t tokens; int top_k, experts; int64_t n, k; bool hole; };
  for (Case c : {Case{1, 8, 128, 2048, 768, false}, Case{2, 2, 8, 96, 64, false}, Case{3, 3, 16, 50, 40, true},
                 Case{4, 8, 32, 64, 1408, false}, Case{2, 32, 64, 16, 128, false}, Case{1, 1, 4, 33, 8, false},
                 Case{1, 8, 16, 40, 2048, false}}) {
    const int64_t rows = c.tokens * c.top_k;
    Tensor expert = Tensor::empty({c.tokens, c.top_k}, DType::kI32);
    for (int64_t i = 0; i < c.tokens; ++i) {  // distinct experts per token, as a router gives
      for (int s = 0; s < c.top_k; ++s) {
        expert.i32()[i * c.top_k + s] = static_cast<int32_t>((i * 5 + s * 3) % c.experts);
      }
    }
    if (c.hole) expert.i32()[rows - 2] = -1;
    const Tensor expert_d = cuda::to_device(expert);
    cuda::DeviceDispatchLayout layout = cuda::make_dispatch_layout(expert_d, c.experts, /*check_ids=*/false);
    std::vector<Tensor> host_w, dev_w;
    random_experts(c.experts, c.n, c.k, host_w, dev_w);
    cuda::ExpertWeightTable table = cuda::make_expert_weight_table(dev_w);
    ASSERT_TRUE(cuda::grouped_linear_combine_fits(table, c.top_k));
    Tensor x = rand_tensor({rows, c.k}), weight = rand_tensor({c.tokens, c.top_k}), out0 = rand_tensor({c.tokens, c.n});
    const Tensor assignment_row = cuda::to_host(layout.assignment_row);
    Tensor expected = out0.contiguous().clone();
    for (int64_t i = 0; i < c.tokens; ++i) {
      for (int s = 0; s < c.top_k; ++s) {
        const int64_t a = i * c.top_k + s;
        const int e = expert.i32()[a];
        if (e < 0) continue;
        const int64_t r = assignment_row.i64()[a];
        Tensor y = ops::linear(x.slice(0, r, r + 1).contiguous(), host_w[e]);
        for (int64_t j = 0; j < c.n; ++j) expected.f32()[i * c.n + j] += weight.f32()[a] * y.f32()[j];
      }
    }
    const Tensor xd = cuda::to_device(x), wd = cuda::to_device(weight);
    Tensor got = cuda::to_device(out0);
    cuda::grouped_linear_combine(xd, table, layout, expert_d, wd, got);
    const std::string what = "grouped_linear_combine " + std::to_string(c.tokens) + " tokens x top-" +
                             std::to_string(c.top_k) + " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k);
    expect_close(what, got, expected, test::kF32Tol);
    // With the routing read before the wait (routing_ready; here the layout was complete long before): the
    // same arithmetic, so the same bits.
    Tensor early = cuda::to_device(out0);
    cuda::grouped_linear_combine(xd, table, layout, expert_d, wd, early, /*routing_ready=*/true);
    expect_close(what + " (routing ready)", early, cuda::to_host(got), 0.0);
    // The bulk form (Hopper): the same products in the same order, so the same bits, both ways.
    if (cuda::set_grouped_linear_combine_bulk(true)) {
      for (bool ready : {false, true}) {
        Tensor bulk = cuda::to_device(out0);
        cuda::grouped_linear_combine(xd, table, layout, expert_d, wd, bulk, ready);
        expect_close(what + (ready ? " (bulk, routing ready)" : " (bulk)"), bulk, cuda::to_host(got), 0.0);
      }
      EXPECT_FALSE(cuda::set_grouped_linear_combine_bulk(false));
    }
    if (!c.hole) {  // the two launches read every slot's row (a slot with no expert has none)
      Tensor y = test::poisoned_device({rows, c.n}), want = cuda::to_device(out0);
      cuda::grouped_linear(xd, table, layout.offsets, y, c.tokens);
      cuda::unpermute(y, layout, wd, want);
      expect_close(what + " vs two launches", got, cuda::to_host(want), 1e-6);
    }
  }
  // Shapes it does not take are refused: x rows not the layout's, k not a multiple of 8, top_k above 32.
  Tensor expert = cuda::to_device(Tensor::zeros({1, 2}, DType::kI32));
  cuda::DeviceDispatchLayout layout = cuda::make_dispatch_layout(expert, 2);
  std::vector<Tensor> hw, dw, hr, dr;
  random_experts(2, 8, 16, hw, dw);
  random_experts(2, 8, 12, hr, dr);
  cuda::ExpertWeightTable t = cuda::make_expert_weight_table(dw), ragged = cuda::make_expert_weight_table(dr);
  const Tensor w = cuda::to_device(rand_tensor({1, 2}));
  Tensor out = cuda::to_device(rand_tensor({1, 8}));
  EXPECT_THROW(cuda::grouped_linear_combine(cuda::to_device(rand_tensor({3, 16})), t, layout, expert, w, out),
               InvalidArgument);
  EXPECT_FALSE(cuda::grouped_linear_combine_fits(ragged, 2));
  EXPECT_THROW(cuda::grouped_linear_combine(cuda::to_device(rand_tensor({2, 12})), ragged, layout, expert, w, out),
               InvalidArgument);
  EXPECT_FALSE(cuda::grouped_linear_combine_fits(t, 33));
}

// The sm90 grouped GEMM's schedules, numbered for the tests: 0 one tile per block, 1 warp-specialised, 2
// warp-specialised with TMA weight loads (the default at 256-column tiles), 3 ping-pong, 4 ping-pong with TMA
// (the default at 128-column tiles), 5 warp-specialised with TMA in block pairs sharing weight tiles.
constexpr int kSm90Schedules = 6;
bool sm90_schedule_tma(int schedule) { return schedule == 2 || schedule == 4 || schedule == 5; }
bool sm90_schedule_pingpong(int schedule) { return schedule == 3 || schedule == 4; }
void set_sm90_schedule(int schedule) {
  cuda::set_grouped_gemm_sm90_warp_specialized(schedule > 0);
  cuda::set_grouped_gemm_sm90_tma(sm90_schedule_tma(schedule));
  cuda::set_grouped_gemm_sm90_pingpong(sm90_schedule_pingpong(schedule));
  cuda::set_grouped_gemm_sm90_cluster(schedule == 5);
}
std::string sm90_schedule_name(int schedule) {
  static const char* names[kSm90Schedules] = {"one tile per block", "warp-specialised", "warp-specialised, TMA",
                                              "ping-pong", "ping-pong, TMA", "block pairs, TMA"};
  return names[schedule];
}

// Puts the sm90 switches back as they were on the way out of a test, returned or thrown.
struct Sm90Defaults {
  bool ws = cuda::grouped_gemm_sm90_warp_specialized(), tma = cuda::grouped_gemm_sm90_tma(),
       pingpong = cuda::grouped_gemm_sm90_pingpong(), cluster = cuda::grouped_gemm_sm90_cluster();
  bool skip_idle = cuda::grouped_gemm_sm90_skip_idle_halves();
  int tile_n = cuda::grouped_gemm_sm90_tile_n();
  ~Sm90Defaults() {
    cuda::set_grouped_gemm_sm90_skip_idle_halves(skip_idle);
    cuda::set_grouped_gemm_sm90_warp_specialized(ws);
    cuda::set_grouped_gemm_sm90_tma(tma);
    cuda::set_grouped_gemm_sm90_pingpong(pingpong);
    cuda::set_grouped_gemm_sm90_cluster(cluster);
    cuda::set_grouped_gemm_sm90_tile_n(tile_n);
  }
};

// Calls run(schedule, tile_n, label) under every schedule and tile width (ping-pong at 128 only: a form of
// 128-column tiles) and checks after each call that the schedule's kernel is the one that ran (at least `launches` GEMM
// launches of it: the TMA schedules need the tables' tensor maps).
void for_each_sm90_schedule(int launches, const std::function<void(int, int, const std::string&)>& run) {
  Sm90Defaults restore;
  for (int schedule = 0; schedule < kSm90Schedules; ++schedule) {
    for (int tile_n : {128, 256}) {
      if (sm90_schedule_pingpong(schedule) && tile_n == 256) continue;
      const std::string label = ", " + std::to_string(tile_n) + "-column tiles, " + sm90_schedule_name(schedule);
      set_sm90_schedule(schedule);
      cuda::set_grouped_gemm_sm90_tile_n(tile_n);
      const cuda::GroupedGemmSm90Launches before = cuda::grouped_gemm_sm90_launches();
      run(schedule, tile_n, label);
      const cuda::GroupedGemmSm90Launches after = cuda::grouped_gemm_sm90_launches();
      const bool ws = schedule > 0, tma = sm90_schedule_tma(schedule), pingpong = sm90_schedule_pingpong(schedule);
      EXPECT_GE(after.one_tile - before.one_tile, ws ? 0 : launches) << label;
      EXPECT_GE(after.warp_specialized - before.warp_specialized, ws ? launches : 0) << label;
      EXPECT_EQ(after.one_tile - before.one_tile == 0, ws) << label << ": the other kernel ran";
      EXPECT_EQ(after.tma - before.tma >= launches, tma) << label << ": TMA " << (tma ? "did not run" : "ran");
      EXPECT_EQ(after.pingpong - before.pingpong >= launches, pingpong) << label;
      EXPECT_EQ(after.pairs - before.pairs >= launches, schedule == 5) << label << ": block pairs";
    }
  }
}

// cuda::grouped_linear_sm90 (the Hopper grouped GEMM, bf16 in and out) against per-expert CPU linear on the same
// bf16-valued rows: uneven groups, empty experts, one row, every row on the last of many experts, more experts
// than one chunk of the row-tile table's scan (256), partial row, column and k tiles.
void check_grouped_sm90(int64_t n, int64_t k, const std::vector<int64_t>& counts, bool biased = false) {
  const std::vector<int64_t> offsets = offsets_of(counts);
  const int64_t rows = offsets.back();
  Tensor x = rand_tensor({rows, k}).to(DType::kBF16);
  Tensor xf = x.to(DType::kF32);
  std::vector<Tensor> host_w, dev_w;
  random_experts(counts.size(), n, k, host_w, dev_w);
  const int64_t experts = static_cast<int64_t>(counts.size());
  Tensor bias = biased ? rand_tensor({experts, n}) : Tensor();
  Tensor expected = Tensor::empty({rows, n}, DType::kF32);
  for (size_t e = 0; e < counts.size(); ++e) {
    if (counts[e] == 0) continue;
    Tensor b = biased ? bias.select(static_cast<int64_t>(e)).contiguous() : Tensor();
    Tensor out = ops::linear(xf.slice(0, offsets[e], offsets[e + 1]).contiguous(), host_w[e], b);
    std::memcpy(expected.f32() + offsets[e] * n, out.f32(), sizeof(float) * out.numel());
  }
  cuda::ExpertWeightTable table = cuda::make_expert_weight_table(dev_w);
  const Tensor xd = cuda::to_device(x), offsets_d = cuda::to_device(test::i64_tensor(offsets));
  const Tensor bias_d = biased ? cuda::to_device(bias) : Tensor();
  for_each_sm90_schedule(1, [&](int, int, const std::string& label) {
    Tensor y = test::poisoned_device({rows, n}, DType::kBF16);
    cuda::grouped_linear_sm90(xd, table, offsets_d, y, bias_d);
    expect_close("grouped_linear_sm90 n=" + std::to_string(n) + " k=" + std::to_string(k) + " rows=" +
                     std::to_string(rows) + (biased ? " with bias" : "") + label,
                 y, expected, test::kBf16Tol);
  });
}

// cuda::grouped_swiglu_sm90 reading the tokens through a dispatch layout against the CPU's
// silu(x gate_e^T) * (x up_e^T) of each dispatch row's token; with `limit` > 0, gpt-oss's form: expert biases
// and ops::clamped_swiglu.
void check_swiglu_sm90(int64_t tokens, int top_k, int experts, int64_t n, int64_t k, float limit = 0.f) {
  Tensor expert = Tensor::empty({tokens, top_k}, DType::kI32);
  for (int64_t i = 0; i < tokens; ++i) {  // distinct experts per token, skewed towards the low ids
    for (int s = 0; s < top_k; ++s) {
      expert.i32()[i * top_k + s] = static_cast<int32_t>((i % 3 == 0 ? s : i * 5 + s * 7) % experts);
    }
  }
  cuda::DeviceDispatchLayout layout = cuda::make_dispatch_layout(cuda::to_device(expert), experts);
  const Tensor assignment = cuda::to_host(layout.row_assignment), offsets = cuda::to_host(layout.offsets);
  std::vector<Tensor> host_g, dev_g, host_u, dev_u;
  random_experts(experts, n, k, host_g, dev_g);
  random_experts(experts, n, k, host_u, dev_u);
  Tensor x = rand_tensor({tokens, k}).to(DType::kBF16);
  Tensor xf = x.to(DType::kF32);
  const int64_t rows = tokens * top_k;
  const bool gpt_oss = limit > 0.f;
  const float alpha = 1.702f;
  Tensor gate_bias = gpt_oss ? rand_tensor({experts, n}) : Tensor(), up_bias = gpt_oss ? rand_tensor({experts, n}) : Tensor();
  Tensor expected = Tensor::empty({rows, n}, DType::kF32);
  for (int e = 0; e < experts; ++e) {
    const int64_t lo = offsets.i64()[e], hi = offsets.i64()[e + 1];
    if (hi == lo) continue;
    Tensor xe = Tensor::empty({hi - lo, k}, DType::kF32);
    for (int64_t r = lo; r < hi; ++r) {
      std::memcpy(xe.f32() + (r - lo) * k, xf.f32() + assignment.i64()[r] / top_k * k, sizeof(float) * k);
    }
    if (gpt_oss) {
      Tensor g = ops::linear(xe, host_g[e], gate_bias.select(e).contiguous());
      Tensor u = ops::linear(xe, host_u[e], up_bias.select(e).contiguous());
      Tensor act = Tensor::empty(g.shape(), DType::kF32);
      ops::clamped_swiglu(g, u, alpha, limit, act);
      std::memcpy(expected.f32() + lo * n, act.f32(), sizeof(float) * act.numel());
      continue;
    }
    Tensor g = ops::linear(xe, host_g[e]), u = ops::linear(xe, host_u[e]);
    for (int64_t i = 0; i < g.numel(); ++i) {
      const float gv = g.f32()[i];
      expected.f32()[lo * n + i] = gv / (1.f + std::exp(-gv)) * u.f32()[i];
    }
  }
  cuda::ExpertWeightTable gt = cuda::make_expert_weight_table(dev_g), ut = cuda::make_expert_weight_table(dev_u);
  Tensor h = test::poisoned_device({rows, n}, DType::kBF16);
  cuda::SwigluSm90Args args;
  if (gpt_oss) {
    args.gate_bias = cuda::to_device(gate_bias);
    args.up_bias = cuda::to_device(up_bias);
    args.alpha = alpha;
    args.limit = limit;
  }
  const Tensor xd = cuda::to_device(x);
  for_each_sm90_schedule(1, [&](int, int, const std::string& label) {
    h = test::poisoned_device({rows, n}, DType::kBF16);
    cuda::grouped_swiglu_sm90(xd, gt, ut, layout, h, args);
    expect_close("grouped_swiglu_sm90 " + std::to_string(tokens) + " tokens x top-" + std::to_string(top_k) +
                     " over " + std::to_string(experts) + " experts, n=" + std::to_string(n) + " k=" +
                     std::to_string(k) + (gpt_oss ? " (biases, clamp " + std::to_string(limit) + ")" : "") + label,
                 h, expected, test::kBf16Tol);
  });
}

TEST(GpuGrouped, Sm90GroupedGemmMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  // Bad input is refused on the host, on any GPU: f32 rows, k not a multiple of 8, a layout of other tokens, a
  // bias of the wrong shape, a tile width other than 128 or 256.
  std::vector<Tensor> hw, dw;
  random_experts(2, 8, 12, hw, dw);
  cuda::ExpertWeightTable odd = cuda::make_expert_weight_table(dw);
  Tensor y = test::poisoned_device({3, 8}, DType::kBF16);
  const Tensor off = cuda::to_device(test::i64_tensor({0, 1, 3}));
  EXPECT_THROW(cuda::grouped_linear_sm90(cuda::to_device(rand_tensor({3, 12}).to(DType::kBF16)), odd, off, y),
               InvalidArgument);
  std::vector<Tensor> hw16, dw16;
  random_experts(2, 8, 16, hw16, dw16);
  cuda::ExpertWeightTable t16 = cuda::make_expert_weight_table(dw16);
  EXPECT_THROW(cuda::grouped_linear_sm90(cuda::to_device(rand_tensor({3, 16})), t16, off, y), InvalidArgument);
  cuda::DeviceDispatchLayout layout = cuda::make_dispatch_layout(cuda::to_device(Tensor::zeros({3, 1}, DType::kI32)), 2);
  EXPECT_THROW(cuda::grouped_swiglu_sm90(cuda::to_device(rand_tensor({4, 16}).to(DType::kBF16)), t16, t16, layout, y),
               InvalidArgument);
  EXPECT_THROW(cuda::grouped_linear_sm90(cuda::to_device(rand_tensor({3, 16}).to(DType::kBF16)), t16, off, y,
                                         cuda::to_device(rand_tensor({2, 7}))),
               InvalidArgument);
  EXPECT_THROW(cuda::set_grouped_gemm_sm90_tile_n(64), InvalidArgument);
  // An output that is a strided view (the epilogue writes whole rows of 16-byte groups) is refused.
  Tensor wide_y = test::poisoned_device({3, 16}, DType::kBF16);
  Tensor strided_y = wide_y.slice(1, 0, 8);
  EXPECT_THROW(cuda::grouped_linear_sm90(cuda::to_device(rand_tensor({3, 16}).to(DType::kBF16)), t16, off, strided_y),
               InvalidArgument);
  if (!cuda::grouped_gemm_sm90_supported()) {
    // Valid input on another GPU: Unsupported, not a launch of code this device cannot run.
    EXPECT_THROW(cuda::grouped_linear_sm90(cuda::to_device(rand_tensor({3, 16}).to(DType::kBF16)), t16, off, y),
                 Unsupported);
    GTEST_SKIP() << "not a compute capability 9.0 GPU with sm_90a code";
  }
  // Each case under every schedule and tile width (for_each_sm90_schedule), the CPU reference computed once.
  check_grouped_sm90(136, 200, {130, 0, 5, 1});  // two row tiles for expert 0, a partial column and k tile
  check_grouped_sm90(128, 64, {0, 1});           // one row
  std::vector<int64_t> last(40, 0);
  last[39] = 129;  // every row on the last expert, in two row tiles
  check_grouped_sm90(64, 72, last);
  std::vector<int64_t> big(64);
  for (int e = 0; e < 64; ++e) big[e] = (e * 53) % 200;
  check_grouped_sm90(2048, 768, big);  // the down projection of a Qwen3-30B-A3B prefill
  check_swiglu_sm90(1, 8, 128, 96, 256);    // one token (decode size): 8 experts of one row, half a column tile
  check_swiglu_sm90(300, 4, 16, 72, 136);   // partial tiles everywhere
  check_swiglu_sm90(600, 8, 64, 768, 2048); // gate and up of a Qwen3-30B-A3B prefill
  check_swiglu_sm90(200, 4, 32, 136, 192, 1.5f);  // gpt-oss: biases and the clamped activation (engaged: |g| ~ 5)
  check_grouped_sm90(136, 64, {9, 0, 20}, /*biased=*/true);
  check_grouped_sm90(264, 64, {40, 3});  // a third, nearly empty 128- or 256-column tile
  std::vector<int64_t> many(300, 0);
  for (int e : {5, 200, 255, 256, 299}) many[e] = 7 + e % 5;
  check_grouped_sm90(64, 64, many);  // experts past the scan's first chunk of 256
  check_grouped_sm90(8, 16, {3, 5});  // a matrix smaller than one TMA box (64 x 64) both ways
}

// Every other schedule computes the same products as the one-tile-per-block kernel, bit for bit (the same wgmma
// sequence per tile), on a problem of more than four tiles per block on any Hopper part (at most 144 SMs), so
// every persistent block loops over tiles, its ring of stages wraps across them and the ping-pong warpgroups
// take several turns each. Both projections of a MoE prefill: gate|up reads gathered tokens (k 512), down a
// partial k tile (k 200, TMA zero-fills past it); n = 200 leaves the last column tile partial at both widths.
TEST(GpuGrouped, Sm90WarpSpecializedEqualsOneTilePerBlock) {
  SY_SKIP_WITHOUT_GPU();
  if (!cuda::grouped_gemm_sm90_supported()) GTEST_SKIP() << "not a compute capability 9.0 GPU with sm_90a code";
  const int64_t tokens = 12000, hidden = 512, inter = 200;
  const int experts = 16, top_k = 4;
  Tensor expert = Tensor::empty({tokens, top_k}, DType::kI32);
  std::vector<int64_t> count(experts, 0);
  for (int64_t i = 0; i < tokens; ++i) {
    for (int s = 0; s < top_k; ++s) {
      const int e = static_cast<int>((i * 3 + s * 5 + i / 7) % experts);
      expert.i32()[i * top_k + s] = e;
      ++count[e];
    }
  }
  int64_t row_tiles = 0;
  for (int64_t c : count) row_tiles += (c + 127) / 128;
  ASSERT_GT(row_tiles * ((inter + 127) / 128), 4 * 144) << "too few tiles to loop every block";
  cuda::DeviceDispatchLayout layout = cuda::make_dispatch_layout(cuda::to_device(expert), experts);
  std::vector<Tensor> host_g, dev_g, host_u, dev_u, host_d, dev_d;
  random_experts(experts, inter, hidden, host_g, dev_g);
  random_experts(experts, inter, hidden, host_u, dev_u);
  random_experts(experts, hidden, inter, host_d, dev_d);
  cuda::ExpertWeightTable gt = cuda::make_expert_weight_table(dev_g), ut = cuda::make_expert_weight_table(dev_u),
                          dt = cuda::make_expert_weight_table(dev_d);
  ASSERT_TRUE(gt.tensor_maps.defined() && ut.tensor_maps.defined() && dt.tensor_maps.defined())
      << "a compute capability 9.0 GPU made no TMA descriptors";
  const Tensor x = cuda::to_device(rand_tensor({tokens, hidden}).to(DType::kBF16));
  const int64_t rows = tokens * top_k;
  // Every expert's last row tile holds 54 to 57 rows (2998-3001 rows each): a split tile's second half and a
  // ping-pong tile's second 64 rows are idle, which the warp-specialised schedules skip by default.
  for (int64_t c : count) ASSERT_LE(c % 128, 64) << "an expert's last tile has rows in both halves";
  std::map<int, Tensor> ref_h, ref_y;  // schedule 0's products by tile width (it runs first at both)
  for_each_sm90_schedule(2, [&](int schedule, int tile_n, const std::string& label) {
    // The warp-specialised schedules with idle halves skipped (the default) and multiplied.
    for (bool skip_idle : schedule == 0 ? std::vector<bool>{true} : std::vector<bool>{true, false}) {
      cuda::set_grouped_gemm_sm90_skip_idle_halves(skip_idle);
      const std::string options_label = label + (skip_idle ? ", idle halves skipped" : ", idle halves multiplied");
      Tensor hd = test::poisoned_device({rows, inter}, DType::kBF16), yd = test::poisoned_device({rows, hidden}, DType::kBF16);
      cuda::grouped_swiglu_sm90(x, gt, ut, layout, hd);
      cuda::grouped_linear_sm90(hd, dt, layout.offsets, yd);
      const Tensor h = cuda::to_host(hd), y = cuda::to_host(yd);
      if (schedule == 0) {
        ref_h[tile_n] = h;
        ref_y[tile_n] = y;
        continue;
      }
      ASSERT_EQ(ref_h.count(tile_n), 1u) << options_label;
      EXPECT_EQ(std::memcmp(ref_h[tile_n].raw(), h.raw(), h.nbytes()), 0) << "gate|up differs" << options_label;
      EXPECT_EQ(std::memcmp(ref_y[tile_n].raw(), y.raw(), y.nbytes()), 0) << "down differs" << options_label;
    }
    cuda::set_grouped_gemm_sm90_skip_idle_halves(true);
  });
}

// gpt-oss pieces of the expert path: the clamped SwiGLU (f32 and bf16) against ops::clamped_swiglu, with values
// on both sides of the limit, and per-expert bias rows added by routed expert.
TEST(GpuGrouped, ClampedSwigluAndExpertBiasMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  Tensor g = rand_tensor({37, 64}, 10.f), u = rand_tensor({37, 64}, 10.f);
  Tensor ref = Tensor::empty(g.shape(), DType::kF32);
  ops::clamped_swiglu(g, u, 1.702f, 7.f, ref);
  Tensor out = test::poisoned_device(g.shape());
  cuda::clamped_swiglu(cuda::to_device(g), cuda::to_device(u), 1.702f, 7.f, out);
  expect_close("clamped_swiglu", out, ref, test::kF32Tol);
  Tensor gb = cuda::to_device(g.to(DType::kBF16)), ub = cuda::to_device(u.to(DType::kBF16));
  Tensor outb = test::poisoned_device(g.shape(), DType::kBF16);
  cuda::clamped_swiglu(gb, ub, 1.702f, 7.f, outb);
  expect_close("clamped_swiglu bf16", outb, ref, 3e-2);

  const int experts = 6, top_k = 2;
  const int64_t tokens = 9, n = 24;
  moe::Routing r = test::make_routing(tokens, top_k, experts, [](int64_t i, int s) { return static_cast<int>((i + 4 * s) % 6); });
  Tensor expert = Tensor::empty({tokens, top_k}, DType::kI32);
  for (size_t i = 0; i < r.expert.size(); ++i) expert.i32()[i] = r.expert[i];
  moe::DispatchLayout ref_layout = moe::make_dispatch_layout(r, experts);
  Tensor bias = rand_tensor({experts, n});
  Tensor y = rand_tensor({ref_layout.num_rows(), n});
  Tensor expected = y.clone();
  for (int64_t row = 0; row < ref_layout.num_rows(); ++row) {
    const int e = r.expert[ref_layout.row_assignment[row]];
    for (int64_t c = 0; c < n; ++c) expected.f32()[row * n + c] += bias.f32()[e * n + c];
  }
  Tensor d_expert = cuda::to_device(expert);
  cuda::DeviceDispatchLayout layout = cuda::make_dispatch_layout(d_expert, experts);
  Tensor dy = cuda::to_device(y);
  cuda::add_expert_bias(dy, cuda::to_device(bias), d_expert, layout);
  expect_close("add_expert_bias", dy, expected, test::kF32Tol);
}

TEST(GpuGrouped, RejectsMismatchedShapes) {
  SY_SKIP_WITHOUT_GPU();
  std::vector<Tensor> w = {cuda::to_device(rand_tensor({8, 16}).to(DType::kBF16)),
                           cuda::to_device(rand_tensor({8, 24}).to(DType::kBF16))};
  EXPECT_THROW(cuda::make_expert_weight_table(w), InvalidArgument);
  cuda::ExpertWeightTable t = cuda::make_expert_weight_table({w[0]});
  Tensor y = test::poisoned_device({2, 8});
  EXPECT_THROW(cuda::grouped_linear(cuda::to_device(rand_tensor({2, 15})), t,
                                    cuda::to_device(test::i64_tensor({0, 2})), y),
               InvalidArgument);
}

TEST(GpuGlue, EmbeddingScatterGatherGateMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  Tensor table = rand_tensor({40, 12});
  std::vector<int64_t> ids = {3, 0, 39, 3};
  Tensor out = test::poisoned_device({4, 12});
  cuda::embedding(cuda::to_device(test::i64_tensor(ids)), cuda::to_device(table.to(DType::kBF16)), out);
  Tensor expected = Tensor::empty({4, 12}, DType::kF32);
  ops::embedding(ids, table.to(DType::kBF16), expected);
  expect_close("embedding", out, expected, test::kF32Tol);
  Tensor bad = test::poisoned_device({1, 12});
  EXPECT_THROW(cuda::embedding(cuda::to_device(test::i64_tensor({40})), cuda::to_device(table), bad),
               InvalidArgument);

  Tensor pool = cuda::to_device(Tensor::zeros({6, 2, 3}, DType::kF32));
  Tensor src = rand_tensor({2, 2, 3});
  cuda::scatter_rows(pool, cuda::to_device(src), cuda::to_device(test::i64_tensor({4, 1})));
  Tensor back = test::poisoned_device({2, 2, 3});
  cuda::gather_rows(pool, cuda::to_device(test::i64_tensor({4, 1})), back);
  expect_close("scatter then gather", back, src, 0.0);
  // Column blocks, with one source row broadcast to three destination rows (MLA's shared rotary key).
  Tensor wide = rand_tensor({2, 7});
  Tensor narrow = cuda::to_device(Tensor::zeros({6, 5}, DType::kF32));
  cuda::copy_columns(cuda::to_device(wide), 4, narrow, 1, 3, 3);
  Tensor narrow_host = cuda::to_host(narrow);
  for (int64_t r = 0; r < 6; ++r) {
    for (int64_t j = 0; j < 5; ++j) {
      const float want = j >= 1 && j < 4 ? wide.f32()[(r / 3) * 7 + 4 + j - 1] : 0.f;
      EXPECT_EQ(narrow_host.f32()[r * 5 + j], want) << "row " << r << " column " << j;
    }
  }
  EXPECT_THROW(cuda::copy_columns(cuda::to_device(wide), 5, narrow, 0, 3), InvalidArgument);  // past src's columns
  EXPECT_THROW(cuda::copy_columns(cuda::to_device(wide), 0, narrow, 0, 3, 2), InvalidArgument);  // 2 * 2 != 6 rows
  // bf16 rows of 16 bytes take the word-wise gather, other 2-byte rows the element-wise one.
  Tensor rows16 = rand_tensor({5, 8}).to(DType::kBF16);
  Tensor picked = Tensor::empty({3, 8}, DType::kBF16, Device::kCuda);
  cuda::gather_rows(cuda::to_device(rows16), cuda::to_device(test::i64_tensor({4, 0, 4})), picked);
  Tensor picked_host = cuda::to_host(picked);
  const std::vector<int64_t> want = {4, 0, 4};
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < 8; ++j) EXPECT_EQ(picked_host.u16()[i * 8 + j], rows16.u16()[want[i] * 8 + j]);
  }
  Tensor odd_src = rand_tensor({2, 5}).to(DType::kBF16);  // 10-byte rows: the element-wise path
  Tensor odd = Tensor::empty({1, 5}, DType::kBF16, Device::kCuda);
  cuda::gather_rows(cuda::to_device(odd_src), cuda::to_device(test::i64_tensor({1})), odd);
  Tensor odd_host = cuda::to_host(odd);
  for (int64_t j = 0; j < 5; ++j) EXPECT_EQ(odd_host.u16()[j], odd_src.u16()[5 + j]);
  Tensor bytes = Tensor::empty({1, 16}, DType::kI8, Device::kCuda);  // 1-byte elements, 16-byte rows: words
  Tensor byte_rows = Tensor::zeros({2, 16}, DType::kI8);
  for (int64_t j = 0; j < 16; ++j) static_cast<int8_t*>(byte_rows.raw())[16 + j] = static_cast<int8_t>(j - 8);
  cuda::gather_rows(cuda::to_device(byte_rows), cuda::to_device(test::i64_tensor({1})), bytes);
  Tensor bytes_host = cuda::to_host(bytes);
  for (int64_t j = 0; j < 16; ++j) EXPECT_EQ(static_cast<const int8_t*>(bytes_host.raw())[j], j - 8);

  // No rows picked (a prefill chunk that ends no prompt gathers no logit rows): a no-op, not a shape error;
  // a width mismatch still refuses, also with no rows.
  Tensor none = Tensor::empty({0, 8}, DType::kBF16, Device::kCuda);
  cuda::gather_rows(cuda::to_device(rows16), cuda::to_device(Tensor::empty({0}, DType::kI64)), none);
  Tensor none_narrow = Tensor::empty({0, 7}, DType::kBF16, Device::kCuda);
  EXPECT_THROW(cuda::gather_rows(cuda::to_device(rows16), cuda::to_device(Tensor::empty({0}, DType::kI64)), none_narrow),
               InvalidArgument);

  Tensor base = rand_tensor({3, 5}), shared = rand_tensor({3, 5}), gate = rand_tensor({3, 1}, 3.f);
  Tensor expected_gate = base.clone();
  for (int64_t i = 0; i < 3; ++i) {
    const float s = 1.f / (1.f + std::exp(-gate.f32()[i]));
    for (int64_t j = 0; j < 5; ++j) expected_gate.f32()[i * 5 + j] += s * shared.f32()[i * 5 + j];
  }
  Tensor dev = cuda::to_device(base);
  cuda::sigmoid_gate_add(dev, cuda::to_device(shared), cuda::to_device(gate));
  expect_close("sigmoid_gate_add", dev, expected_gate, test::kF32Tol);
}

}  // namespace
}  // namespace sy
