// bench_gpu_moe_layer --config config.json [--tokens 1,64,4096,16384] [--iters 20] [--only TEXT]
// One MoE layer of the config's shape (layer 0, random bf16 weights) on GPU 0: router, dispatch, routed
// experts, combine (and the shared expert if any), timed at several token counts with CUDA synchronisation,
// every expert path (grouped GEMV: one launch for gate, up and SiLU and one for down, no host sync; cuBLAS
// grouped GEMM: one call per projection after a host sync; sm90 grouped GEMM: one wgmma launch for gather,
// gate, up and SiLU and one for down, on Hopper, 128- and 256-column tiles, one tile per block or persistent
// warp-specialised blocks with cp.async or TMA weight loads; per-expert: one cuBLAS GEMM per
// expert after a host sync). References printed with it: the layer's FLOPs against the H100's dense bf16 peak
// (989 TFLOP/s, published), and its weight bytes against the device copy bandwidth measured in the same run. The
// PyTorch peer is bench/torch_moe_layer.py (transformers' own sparse MoE block) on the same config.
// --only TEXT runs the paths whose printed name contains TEXT (e.g. under a kernel trace, one path's kernels).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "random_model.h"
#include "switchyard/io/model_config.h"
#include "switchyard/model/model.h"
#if SY_HAS_CUDA
#include "model/gpu_forward.h"
#include "switchyard/kernels/cuda_memory.h"
#include "switchyard/kernels/cuda_ops.h"
#endif

int main(int argc, char** argv) {
  try {
    std::string config;
    std::vector<int64_t> tokens = {1, 64, 4096, 16384};
    int iters = 20;
    std::string only;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      SY_REQUIRE(i + 1 < argc, sy::InvalidArgument, "bench", a, " needs a value");
      std::string v = argv[++i];
      if (a == "--config") {
        config = v;
      } else if (a == "--tokens") {
        tokens.clear();
        std::stringstream ss(v);
        std::string t;
        while (std::getline(ss, t, ',')) {
          tokens.push_back(std::stoll(t));
          SY_REQUIRE(tokens.back() >= 1, sy::InvalidArgument, "bench", "token counts must be 1 or more, got ", t);
        }
        SY_REQUIRE(!tokens.empty(), sy::InvalidArgument, "bench", "--tokens needs at least one count");
      } else if (a == "--iters") {
        iters = std::stoi(v);
        SY_REQUIRE(iters >= 1, sy::InvalidArgument, "bench", "--iters must be at least 1, got ", v);
      } else if (a == "--only") {
        only = v;
      } else {
        throw sy::make_error<sy::InvalidArgument>("bench", "unknown flag ", a);
      }
    }
    SY_REQUIRE(!config.empty(), sy::InvalidArgument, "bench", "give --config config.json");
#if !SY_HAS_CUDA
    throw sy::make_error<sy::Unsupported>("bench", "bench_gpu_moe_layer needs a CUDA build");
#else
    sy::ModelConfig cfg = sy::ModelConfig::from_json(sy::bench::config_json(config, 1));
    SY_REQUIRE(cfg.layer_is_moe[0], sy::InvalidArgument, "bench", "layer 0 of ", config, " is not a MoE layer");
    const double bandwidth = sy::cuda::copy_bandwidth(size_t{1} << 30);
    sy::cuda::empty_cache();
    sy::bench::RandomSource src;
    sy::ModelWeights w = sy::load_model_weights(cfg, src);
    const sy::AttentionConfig& a = cfg.attention;
    auto state = sy::model_detail::upload(cfg, w, sy::ops::make_rope_table(cfg.rope, a.head_dim, 4096));
    const int64_t hidden = cfg.hidden_size, inter = w.layers[0].moe.experts[0].gate.size(0);
    const int experts = cfg.moe.num_experts, k = cfg.moe.top_k;
    std::printf("MoE layer: hidden %lld, %d experts, top-%d, expert width %lld, bf16 weights; copy bandwidth %.0f GB/s\n",
                static_cast<long long>(hidden), experts, k, static_cast<long long>(inter), bandwidth / 1e9);
    std::printf("\n| tokens | path | time | TFLOP/s | share of 989 TFLOP/s | weight GB | share of copy bandwidth |\n"
                "|---|---|---|---|---|---|---|\n");
    int measured = 0;  // path and token-count pairs run
    for (int64_t t : tokens) {
      // The layer's inputs as the forward pass has them: h f32 and hb, its bf16 rounding (both written by the
      // norm before the layer), and out, the residual stream the layer adds into. Earlier runs (to the
      // eleventh session) timed the cast of h and the zeroing of out with the layer: 0.11 and 0.04 ms at 16384
      // tokens on an H100.
      sy::Tensor h = sy::cuda::to_device(bench_random_f32(t, hidden));
      sy::Tensor hb = sy::Tensor::empty(h.shape(), sy::DType::kBF16, sy::Device::kCuda);
      sy::cuda::cast(h, hb);
      sy::Tensor out = sy::Tensor::zeros(h.shape(), sy::DType::kF32, sy::Device::kCuda);
      using sy::model_detail::ExpertPath;
      // The sm90 path ten times: 128- and 256-column tiles, one tile per block, warp-specialised (ws 1) or
      // warp-specialised with TMA weight loads (ws 2); ping-pong 128 x 128 tiles without and with TMA (ws 3, 4);
      // warp-specialised with TMA in block pairs sharing weight tiles (ws 5).
      struct Variant {
        ExpertPath path;
        int tile_n;
        int ws;
      };
      for (auto [path, tile_n, ws] : std::vector<Variant>{
               {ExpertPath::kGroupedGemv, 0, 0}, {ExpertPath::kCublasGrouped, 0, 0},
               {ExpertPath::kSm90Grouped, 128, 0}, {ExpertPath::kSm90Grouped, 256, 0},
               {ExpertPath::kSm90Grouped, 128, 1}, {ExpertPath::kSm90Grouped, 256, 1},
               {ExpertPath::kSm90Grouped, 128, 2}, {ExpertPath::kSm90Grouped, 256, 2},
               {ExpertPath::kSm90Grouped, 128, 3}, {ExpertPath::kSm90Grouped, 128, 4},
               {ExpertPath::kSm90Grouped, 128, 5}, {ExpertPath::kSm90Grouped, 256, 5},
               {ExpertPath::kPerExpert, 0, 0}}) {
        if (path == ExpertPath::kGroupedGemv && t > 256) continue;  // the forward pass uses it up to 256 tokens
        if (path == ExpertPath::kSm90Grouped && !sy::cuda::grouped_gemm_sm90_supported()) continue;
        if (tile_n > 0) sy::cuda::set_grouped_gemm_sm90_tile_n(tile_n);
        if (path == ExpertPath::kSm90Grouped) {
          sy::cuda::set_grouped_gemm_sm90_warp_specialized(ws > 0);
          sy::cuda::set_grouped_gemm_sm90_tma(ws == 2 || ws == 4 || ws == 5);
          sy::cuda::set_grouped_gemm_sm90_pingpong(ws == 3 || ws == 4);
          sy::cuda::set_grouped_gemm_sm90_cluster(ws == 5);
        }
        const std::string name = std::string(sy::model_detail::expert_path_name(path)) +
                                 (tile_n > 0 ? " (128 x " + std::to_string(tile_n) + " tiles" +
                                                   (ws == 1   ? ", warp-specialised)"
                                                    : ws == 2 ? ", warp-specialised, TMA)"
                                                    : ws == 3 ? ", ping-pong)"
                                                    : ws == 4 ? ", ping-pong, TMA)"
                                                    : ws == 5 ? ", block pairs, TMA)"
                                                              : ")")
                                             : "");
        if (!only.empty() && name.find(only) == std::string::npos) continue;
        ++measured;
        for (int i = 0; i < 3; ++i) sy::model_detail::gpu_moe_layer(*state, 0, h, hb, out, path);
        sy::cuda::synchronize();
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i) sy::model_detail::gpu_moe_layer(*state, 0, h, hb, out, path);
        sy::cuda::synchronize();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
        const double flops = 2.0 * t * (static_cast<double>(k) * 3 * hidden * inter + hidden * experts);
        const double hit = experts * (1.0 - std::pow(1.0 - static_cast<double>(k) / experts, static_cast<double>(t)));
        const double bytes = 2.0 * (hit * 3 * hidden * inter + static_cast<double>(hidden) * experts);
        std::printf("| %lld | %s | %.3f ms | %.1f | %.1f%% | %.3f | %.1f%% |\n", static_cast<long long>(t),
                    name.c_str(), s * 1e3, flops / s / 1e12, 100 * flops / s / 989e12,
                    bytes / 1e9, 100 * bytes / s / bandwidth);
      }
    }
    SY_REQUIRE(measured > 0, sy::InvalidArgument, "bench", "no path's name contains --only '", only, "'");
    std::printf("\ncuBLAS grouped GEMM ran %s\n", sy::cuda::grouped_gemm_is_grouped()
                                                     ? "grouped (cublasGemmGroupedBatchedEx)"
                                                     : "as the per-expert fallback (grouped call refused)");
    return 0;
#endif
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
