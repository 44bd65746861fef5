// Training throughput on the CPU: tokens/s of full training steps (forward, backward, AdamW) on a small
// Mixtral-shaped MoE, next to the machine's f32 GEMM peak measured in the same run through the same linear
// kernel (a large square product). Reports achieved model FLOP/s (6 x active parameters x tokens, plus
// attention) as a fraction of that peak.
//   bench_train [--steps N] [--batch B] [--seq T] [--hidden H] [--layers L] [--experts E] [--top-k K]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"
#include "switchyard/train/trainer.h"

using namespace sy;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// f32 GEMM FLOP/s of ops::linear on an n x n x n product (best of 3).
double gemm_peak(int64_t n) {
  Tensor x = Tensor::full({n, n}, 0.5f), w = Tensor::full({n, n}, 0.25f);
  Tensor y = Tensor::empty({n, n}, DType::kF32);
  ops::linear(x, w, Tensor(), y);
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    double t0 = now();
    ops::linear(x, w, Tensor(), y);
    best = std::min(best, now() - t0);
  }
  return 2.0 * n * n * n / best;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 5, batch = 8, seq = 128, hidden = 256, layers = 4, experts = 8, top_k = 2, inter = 512, vocab = 4096;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int64_t v = std::atoll(argv[i + 1]);
    if (a == "--steps") steps = v;
    else if (a == "--batch") batch = v;
    else if (a == "--seq") seq = v;
    else if (a == "--hidden") hidden = v;
    else if (a == "--layers") layers = v;
    else if (a == "--experts") experts = v;
    else if (a == "--top-k") top_k = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  nlohmann::json j = {{"model_type", "mixtral"}, {"vocab_size", vocab}, {"hidden_size", hidden},
                      {"intermediate_size", inter}, {"num_hidden_layers", layers}, {"num_attention_heads", 4},
                      {"num_key_value_heads", 2}, {"num_local_experts", experts}, {"num_experts_per_tok", top_k},
                      {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}};
  ModelConfig cfg = ModelConfig::from_json(j);
  train::TrainerOptions o;
  o.steps = steps;
  o.batch_size = batch;
  o.seq_len = seq;
  train::Trainer trainer(train::TrainableModel::from_config(cfg, 1), o);
  std::mt19937 rng(3);
  std::vector<int64_t> ids(static_cast<size_t>((steps + 1) * batch * (seq + 1)));
  for (auto& id : ids) id = static_cast<int64_t>(rng() % vocab);
  train::FlatIdSource data(ids);
  const double peak = gemm_peak(1024);
  std::vector<double> rates;
  trainer.run(data, [&](const train::StepLog& log) { rates.push_back(log.tokens_per_s); });
  std::sort(rates.begin(), rates.end());
  const double tok_s = rates[rates.size() / 2];
  // Model FLOPs per token: 6 x active parameters (matmuls) + attention (6 x layers x seq x heads x head_dim,
  // causal halves the 12 of full attention).
  const double active = static_cast<double>(cfg.active_params());
  const double attn = 6.0 * layers * seq * hidden;
  const double flops = (6.0 * active + attn) * tok_s;
  std::printf("threads %d | params %.2fM total, %.2fM active | batch %lld x seq %lld\n",
              ThreadPool::global().num_threads(), cfg.total_params() / 1e6, active / 1e6, static_cast<long long>(batch),
              static_cast<long long>(seq));
  std::printf("%-34s %12s\n", "measure", "value");
  std::printf("%-34s %12.0f\n", "training tokens/s (median step)", tok_s);
  std::printf("%-34s %12.2f\n", "achieved model GFLOP/s", flops / 1e9);
  std::printf("%-34s %12.2f\n", "f32 GEMM peak GFLOP/s (1024^3)", peak / 1e9);
  std::printf("%-34s %11.1f%%\n", "fraction of GEMM peak", 100.0 * flops / peak);
  return 0;
}
