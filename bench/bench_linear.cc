// bench_linear [--n 1024] [--k 2048] [--rows 16,32,64,128,256,1024]   (threads: SY_NUM_THREADS)
// ops::linear with bf16 weights (the CPU forward pass's products) at prefill-sized row counts, next to the same
// product with the weights already in f32 (OpenBLAS sgemm per thread slice: the peer, with no conversion to
// pay), measured in the same run on the same inputs. SY_FUSED_PREFILL_GEMM=0 in the environment times the
// convert-then-sgemm path the fused micro-kernel replaced (src/kernels/cpu/linear.cc), for A/B runs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "switchyard/core/error.h"
#include "switchyard/core/tensor.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"

namespace {

double seconds_per_call(const sy::Tensor& x, const sy::Tensor& w, sy::Tensor& y, int iters) {
  // Warm-up (pages, caches, the thread pool's workers spinning up): a quarter of the timed calls.
  for (int i = 0; i <= iters / 4; ++i) sy::ops::linear(x, w, sy::Tensor(), y);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) sy::ops::linear(x, w, sy::Tensor(), y);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int64_t n = 1024, k = 2048;
    std::vector<int64_t> rows = {16, 32, 64, 128, 256, 1024};
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      SY_REQUIRE(i + 1 < argc, sy::InvalidArgument, "bench_linear", a, " needs a value");
      const std::string v = argv[++i];
      if (a == "--n") {
        n = std::stoll(v);
      } else if (a == "--k") {
        k = std::stoll(v);
      } else if (a == "--rows") {
        rows.clear();
        std::stringstream ss(v);
        std::string t;
        while (std::getline(ss, t, ',')) rows.push_back(std::stoll(t));
      } else {
        throw sy::make_error<sy::InvalidArgument>("bench_linear", "unknown flag ", a);
      }
    }
    SY_REQUIRE(n > 0 && k > 0 && !rows.empty(), sy::InvalidArgument, "bench_linear", "n, k and rows must be positive");
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.f, 1.f);
    sy::Tensor w32 = sy::Tensor::empty({n, k}, sy::DType::kF32);
    for (int64_t i = 0; i < w32.numel(); ++i) w32.f32()[i] = 0.05f * dist(rng);
    const sy::Tensor w = w32.to(sy::DType::kBF16);
    const sy::Tensor wf = w.to(sy::DType::kF32);  // the same weights, already converted
    std::printf("ops::linear, weights (%lld, %lld), %d threads\n\n", static_cast<long long>(n),
                static_cast<long long>(k), sy::ThreadPool::global().num_threads());
    std::printf("| rows | bf16 weights | GFLOP/s | f32 weights (sgemm) | GFLOP/s | bf16 / f32 time |\n"
                "|---|---|---|---|---|---|\n");
    for (int64_t m : rows) {
      SY_REQUIRE(m > 0, sy::InvalidArgument, "bench_linear", "rows must be positive, got ", m);
      sy::Tensor x = sy::Tensor::empty({m, k}, sy::DType::kF32);
      for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = dist(rng);
      sy::Tensor y = sy::Tensor::empty({m, n}, sy::DType::kF32), yf = sy::Tensor::empty({m, n}, sy::DType::kF32);
      const int iters = static_cast<int>(std::max<int64_t>(3, 4096 / m));
      const double half = seconds_per_call(x, w, y, iters), full = seconds_per_call(x, wf, yf, iters);
      double diff = 0, scale = 0;  // the two products must agree (same weights, f32 accumulation)
      for (int64_t i = 0; i < y.numel(); ++i) {
        diff = std::max(diff, static_cast<double>(std::fabs(y.f32()[i] - yf.f32()[i])));
        scale = std::max(scale, static_cast<double>(std::fabs(yf.f32()[i])));
      }
      SY_REQUIRE(diff <= 1e-4 * scale, sy::Error, "bench_linear", "bf16 and f32 products differ by ", diff,
                 " at ", m, " rows");
      const double flops = 2.0 * static_cast<double>(m) * n * k;
      std::printf("| %lld | %.3f ms | %.1f | %.3f ms | %.1f | %.2f |\n", static_cast<long long>(m), half * 1e3,
                  flops / half / 1e9, full * 1e3, flops / full / 1e9, half / full);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
