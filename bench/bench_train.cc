// Training throughput on the CPU: tokens/s of full training steps (forward, backward, AdamW) on a small
// Mixtral-shaped MoE, next to the machine's f32 GEMM peak measured in the same run through the same linear
// kernel (a large square product). Reports achieved model FLOP/s (6 x active parameters x tokens, plus
// attention) as a fraction of that peak, for each activation-recompute mode: tokens/s and the activation
// bytes held for backward, relative to keeping everything.
//   bench_train [--steps N] [--batch B] [--seq T] [--hidden H] [--layers L] [--experts E] [--top-k K]
//               [--recompute none|selective|full|all]
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

struct ModeResult {
  double tok_s = 0;
  int64_t saved = 0, peak = 0;
};

ModeResult run_mode(const ModelConfig& cfg, int64_t steps, int64_t batch, int64_t seq, train::Recompute mode) {
  train::TrainerOptions o;
  o.steps = steps;
  o.batch_size = batch;
  o.seq_len = seq;
  o.step_options.recompute = mode;
  train::Trainer trainer(train::TrainableModel::from_config(cfg, 1), o);
  std::mt19937 rng(3);
  std::vector<int64_t> ids(static_cast<size_t>((steps + 1) * batch * (seq + 1)));
  for (auto& id : ids) id = static_cast<int64_t>(rng() % cfg.vocab_size);
  train::FlatIdSource data(ids);
  std::vector<double> rates;
  ModeResult r;
  trainer.run(data, [&](const train::StepLog& log) {
    rates.push_back(log.tokens_per_s);
    r.saved = log.saved_activation_bytes;
    r.peak = log.peak_activation_bytes;
  });
  std::sort(rates.begin(), rates.end());
  r.tok_s = rates[rates.size() / 2];
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 5, batch = 8, seq = 128, hidden = 256, layers = 4, experts = 8, top_k = 2, inter = 512, vocab = 4096;
  std::string recompute = "all";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int64_t v = std::atoll(argv[i + 1]);
    if (a == "--recompute") recompute = argv[i + 1];
    else if (a == "--steps") steps = v;
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
  std::vector<train::Recompute> modes;
  if (recompute == "all") modes = {train::Recompute::kNone, train::Recompute::kSelective, train::Recompute::kFull};
  else modes = {train::parse_recompute(recompute)};
  const double peak = gemm_peak(1024);
  // Model FLOPs per token: 6 x active parameters (matmuls) + attention (6 x layers x seq x heads x head_dim,
  // causal halves the 12 of full attention). Recomputed work is not counted (it is overhead, not model FLOPs).
  const double active = static_cast<double>(cfg.active_params());
  const double attn = 6.0 * layers * seq * hidden;
  std::printf("threads %d | params %.2fM total, %.2fM active | batch %lld x seq %lld | f32 GEMM peak %.2f GFLOP/s\n",
              ThreadPool::global().num_threads(), cfg.total_params() / 1e6, active / 1e6, static_cast<long long>(batch),
              static_cast<long long>(seq), peak / 1e9);
  std::printf("%-10s %10s %9s %11s %9s %13s %12s %8s\n", "recompute", "tokens/s", "vs none", "GFLOP/s", "of peak",
              "held MiB", "peak MiB", "vs none");
  ModeResult base;
  for (train::Recompute mode : modes) {
    ModeResult r = run_mode(cfg, steps, batch, seq, mode);
    if (base.tok_s == 0) base = r;
    const double flops = (6.0 * active + attn) * r.tok_s;
    std::printf("%-10s %10.0f %8.2fx %11.2f %8.1f%% %13.1f %12.1f %7.2fx\n", train::recompute_name(mode), r.tok_s,
                r.tok_s / base.tok_s, flops / 1e9, 100.0 * flops / peak, r.saved / 1048576.0, r.peak / 1048576.0,
                static_cast<double>(r.peak) / static_cast<double>(base.peak));
  }
  return 0;
}
