// bench_gpu_attention [--tokens 16384] [--heads 16] [--kv-heads 16] [--head-dim 128] [--iters 5]
// Causal prefill attention of one sequence on GPU 0 through cuda::attention (the f32 paged kernel), and
// cuda::flash_attention's FlashAttention-2 (mma.sync) and Hopper (wgmma, head dim 128) kernels and its cuDNN path,
// timed with CUDA synchronisation; FLOPs counted as 4 * T^2 * H * d / 2 (causal). References printed with it:
// the H100's dense bf16 peak (989 TFLOP/s, published). The PyTorch peer is bench/torch_attention.py
// (scaled_dot_product_attention on the same shape), run in the same device session.
#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_random.h"
#include "switchyard/core/error.h"
#include "switchyard/core/tensor.h"
#if SY_HAS_CUDA
#include "switchyard/kernels/cuda_memory.h"
#include "switchyard/kernels/cuda_ops.h"
#endif

int main(int argc, char** argv) {
  try {
    int64_t tokens = 16384, heads = 16, kv_heads = 16, dim = 128;
    int iters = 5;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
      if (a == "--tokens") tokens = std::stoll(next());
      else if (a == "--heads") heads = std::stoll(next());
      else if (a == "--kv-heads") kv_heads = std::stoll(next());
      else if (a == "--head-dim") dim = std::stoll(next());
      else if (a == "--iters") iters = std::stoi(next());
      else throw sy::make_error<sy::InvalidArgument>("bench", "unknown flag ", a);
    }
#if !SY_HAS_CUDA
    throw sy::make_error<sy::Unsupported>("bench", "bench_gpu_attention needs a CUDA build");
#else
    using sy::Tensor;
    Tensor q = sy::cuda::to_device(random_bf16(1, {tokens, heads, dim}, 1.f, 0.f).to(sy::DType::kF32));
    Tensor k = sy::cuda::to_device(random_bf16(2, {tokens, kv_heads, dim}, 1.f, 0.f).to(sy::DType::kF32));
    Tensor v = sy::cuda::to_device(random_bf16(3, {tokens, kv_heads, dim}, 1.f, 0.f).to(sy::DType::kF32));
    Tensor pos = Tensor::empty({tokens}, sy::DType::kI64);
    for (int64_t i = 0; i < tokens; ++i) pos.i64()[i] = i;
    Tensor positions = sy::cuda::to_device(pos);
    Tensor out = Tensor::empty({tokens, heads, dim}, sy::DType::kF32, sy::Device::kCuda);
    sy::cuda::AttentionArgs args;
    args.scale = 1.f / std::sqrt(static_cast<float>(dim));
    sy::cuda::attention(q, k, v, positions, tokens, args, out);  // warm-up
    sy::cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) sy::cuda::attention(q, k, v, positions, tokens, args, out);
    sy::cuda::synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    const double flops = 4.0 * static_cast<double>(tokens) * tokens * heads * dim / 2;
    // The tensor-core kernels on the same inputs in bf16: FlashAttention-2 on mma.sync (head dim 64 or 128),
    // on an sm_90a device with head dim 128 the wgmma kernel (args.sm90), and cuDNN's fused attention where
    // cuDNN is found (args.cudnn). Each is checked against the f32 kernel's output before it is timed.
    struct Row { std::string name; double seconds; };
    std::vector<Row> rows;
    Tensor b_host = sy::cuda::to_host(out);
    double den = 0;
    for (int64_t i = 0; i < b_host.numel(); ++i) den = std::max(den, static_cast<double>(std::fabs(b_host.f32()[i])));
    Tensor qb = Tensor::empty(q.shape(), sy::DType::kBF16, sy::Device::kCuda);
    Tensor kb = Tensor::empty(k.shape(), sy::DType::kBF16, sy::Device::kCuda);
    Tensor vb = Tensor::empty(v.shape(), sy::DType::kBF16, sy::Device::kCuda);
    sy::cuda::cast(q, qb);
    sy::cuda::cast(k, kb);
    sy::cuda::cast(v, vb);
    auto time_flash = [&](const std::string& name, const sy::cuda::AttentionArgs& a,
                          sy::DType out_dtype = sy::DType::kF32) {
      Tensor o = Tensor::empty({tokens, heads, dim}, out_dtype, sy::Device::kCuda);
      const auto w0 = std::chrono::steady_clock::now();
      sy::cuda::flash_attention(qb, kb, vb, a, o);  // warm-up (and cuDNN's plan: its build time is printed)
      sy::cuda::synchronize();
      std::printf("%s: first call %.1f ms\n", name.c_str(),
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0).count());
      const auto f0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) sy::cuda::flash_attention(qb, kb, vb, a, o);
      sy::cuda::synchronize();
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - f0).count() / iters;
      Tensor got = sy::cuda::to_host(o).to(sy::DType::kF32);
      double diff = 0;
      for (int64_t i = 0; i < got.numel(); ++i) {
        diff = std::max(diff, static_cast<double>(std::fabs(got.f32()[i] - b_host.f32()[i])));
      }
      std::printf("%s vs f32 kernel: max relative difference %.2e\n", name.c_str(), diff / den);
      rows.push_back({name, sec});
    };
    if (dim == 128 || dim == 64) time_flash("cuda::flash_attention (bf16 mma.sync tiles)", args);
    if (dim == 128 && sy::cuda::flash_attention_sm90_supported()) {
      sy::cuda::AttentionArgs hopper = args;
      hopper.sm90 = true;
      time_flash("cuda::flash_attention, sm90 (bf16 wgmma tiles)", hopper);
    }
    std::string why;
    if (dim != 64 && dim != 128) {
      std::printf("cuDNN: not timed (flash_attention takes head dims 64 and 128 here)\n");
    } else if (sy::cuda::flash_attention_cudnn_available(&why)) {
      sy::cuda::AttentionArgs via_cudnn = args;
      via_cudnn.cudnn = true;
      for (sy::DType out_dtype : {sy::DType::kF32, sy::DType::kBF16}) {
        const int64_t before = sy::cuda::flash_attention_cudnn_calls();
        time_flash(out_dtype == sy::DType::kF32 ? "cuda::flash_attention, cuDNN fused attention (f32 out)"
                                                : "cuda::flash_attention, cuDNN fused attention (bf16 out, as SDPA)",
                   via_cudnn, out_dtype);
        if (sy::cuda::flash_attention_cudnn_calls() == before) {
          rows.back().name += " (cuDNN refused the shape: own kernel ran)";
        }
      }
    } else {
      std::printf("cuDNN: not used (%s)\n", why.c_str());
    }
    std::printf("causal prefill attention: %lld tokens, %lld heads (%lld kv), head dim %lld\n",
                static_cast<long long>(tokens), static_cast<long long>(heads), static_cast<long long>(kv_heads),
                static_cast<long long>(dim));
    std::printf("\n| kernel | time | TFLOP/s | share of 989 TFLOP/s |\n|---|---|---|---|\n");
    std::printf("| cuda::attention (f32, one block per query and head) | %.2f ms | %.1f | %.1f%% |\n", s * 1e3,
                flops / s / 1e12, 100 * flops / s / 989e12);
    for (const Row& r : rows) {
      std::printf("| %s | %.2f ms | %.1f | %.1f%% |\n", r.name.c_str(), r.seconds * 1e3, flops / r.seconds / 1e12,
                  100 * flops / r.seconds / 989e12);
    }
    return 0;
#endif
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
