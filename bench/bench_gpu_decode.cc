// bench_gpu_decode --config config.json [--layers N] [--batches 1,8,32,64] [--prompt-len 128]
//                  [--decode-steps 32] [--block-size 16] [--prefill-warmup 1] [--ep]
//                  [--ab "SY_X=1;SY_Y=0 SY_Z=1" [--ab-batches 1,2]]
// bench_gpu_decode --config config.json [--layers N] --write DIR   (a random bf16 checkpoint of that shape,
//                  for benchmarks that load a model directory, e.g. bench/serve_bench.py; no GPU needed)
// Batched decode on the GPU through Model::forward_batch (the server's pass) for a model of the config's
// shape with random bf16 weights made in host memory and uploaded to GPU 0 (no checkpoint on disk: a
// Qwen3-30B-A3B shape is 61 GB). For each batch size B: B random prompts are prefilled (timed after
// --prefill-warmup untimed passes over the same prompts, 1 by default since 2026-12-05: a first pass pays
// one-time costs such as cuDNN's plan builds; 0 gives the earlier tables' single cold pass), then B sequences
// decode together for --decode-steps steps. Physical reference measured in the same run: device copy
// bandwidth, against the bytes a decode step must read (attention and dense weights, the LM head, the cached
// keys and values of every sequence (from 2026-12-05; earlier tables left them out), and the routed experts
// actually hit in that step, counted from the router). The PyTorch peer is
// bench/torch_moe_decode.py on the same config. Each decode step ends with one greedy token per sequence
// drawn on the device (Model::forward_batch_sample: only the tokens come back); then the same number of
// steps with a sampled token (temperature 0.8, top-p 0.95, on the device), and with the logits copied to the
// host instead (forward_batch, the path before on-device sampling): the last two columns. Input tokens are
// random in every variant. Prints a table last.
// --ep, under mpirun -np N with one GPU per rank: expert parallelism with data-parallel attention (each rank
// holds 1/N of the experts and decodes its own batch of B sequences; MoE tokens go over NCCL), so N x B
// sequences decode together; rank 0 prints its table and the tokens/s of all ranks together.
// --ab: after the table, the same loaded model measured under each ';'-separated set of switches (space-separated
// NAME=VALUE, NAME an SY_* variable), set in the environment and applied by Model::reconfigure_device, at the
// --ab-batches (default: --batches), between a run with the default settings and one more at the end (the
// spread between those two is the noise floor). One process, so each set costs a few seconds, not a model load.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include "random_model.h"
#include "switchyard/core/error.h"
#include "switchyard/io/model_config.h"
#include "switchyard/io/safetensors.h"
#include "switchyard/model/model.h"
#include "switchyard/model/paged_kv_pool.h"
#include "switchyard/model/tensor_source.h"
#include "switchyard/moe/token_dispatcher.h"
#include "switchyard/parallel/comm.h"
#if SY_HAS_CUDA
#include "switchyard/kernels/cuda_memory.h"
#endif

namespace {

struct Options {
  std::string config, write_dir;
  int layers = 0;  // 0: the config's
  std::vector<int64_t> batches = {1, 8, 32, 64};
  int64_t prompt_len = 128, decode_steps = 32, block_size = 16;
  int prefill_warmup = 1;  // untimed prefill passes before the timed one
  bool ep = false;
  // --ab: sets of (name, value) switches, and the batches they run at (empty: `batches`).
  std::vector<std::vector<std::pair<std::string, std::string>>> ab;
  std::vector<int64_t> ab_batches;
};

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

// "SY_X=1 SY_Y=0;SY_Z=1" -> {{(SY_X, 1), (SY_Y, 0)}, {(SY_Z, 1)}}; names must be SY_ variables.
std::vector<std::vector<std::pair<std::string, std::string>>> parse_ab(const std::string& s) {
  std::vector<std::vector<std::pair<std::string, std::string>>> sets;
  std::stringstream all(s);
  std::string set_text;
  while (std::getline(all, set_text, ';')) {
    std::vector<std::pair<std::string, std::string>> set;
    std::stringstream words(set_text);
    std::string word;
    while (words >> word) {
      const size_t eq = word.find('=');
      const std::string name = word.substr(0, eq);
      const bool name_ok = name.size() > 3 && name.rfind("SY_", 0) == 0 &&
                           name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == std::string::npos;
      SY_REQUIRE(eq != std::string::npos && name_ok, sy::InvalidArgument, "bench",
                 "--ab takes SY_NAME=VALUE words, sets separated by ';'; got '", word, "'");
      set.emplace_back(name, word.substr(eq + 1));
    }
    SY_REQUIRE(!set.empty(), sy::InvalidArgument, "bench", "--ab has an empty set in '", s, "'");
    sets.push_back(std::move(set));
  }
  SY_REQUIRE(!sets.empty(), sy::InvalidArgument, "bench", "--ab needs at least one set");
  return sets;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      SY_REQUIRE(i + 1 < argc, sy::InvalidArgument, "bench", a, " needs a value");
      return argv[++i];
    };
    if (a == "--config") o.config = value();
    else if (a == "--batches") o.batches = parse_list(value());
    else if (a == "--prompt-len") o.prompt_len = std::stoll(value());
    else if (a == "--decode-steps") o.decode_steps = std::stoll(value());
    else if (a == "--block-size") o.block_size = std::stoll(value());
    else if (a == "--layers") o.layers = std::stoi(value());
    else if (a == "--prefill-warmup") o.prefill_warmup = std::stoi(value());
    else if (a == "--write") o.write_dir = value();
    else if (a == "--ep") o.ep = true;
    else if (a == "--ab") o.ab = parse_ab(value());
    else if (a == "--ab-batches") o.ab_batches = parse_list(value());
    else throw sy::make_error<sy::InvalidArgument>("bench", "unknown flag ", a);
  }
  SY_REQUIRE(!o.config.empty(), sy::InvalidArgument, "bench", "give --config config.json");
  SY_REQUIRE(o.prefill_warmup >= 0, sy::InvalidArgument, "bench", "--prefill-warmup must be 0 or more");
  SY_REQUIRE(o.ab.empty() || !o.ep, sy::InvalidArgument, "bench", "--ab runs on one GPU, not under --ep");
  SY_REQUIRE(!o.batches.empty(), sy::InvalidArgument, "bench", "--batches needs at least one batch size");
  for (int64_t b : o.batches) SY_REQUIRE(b >= 1, sy::InvalidArgument, "bench", "batch sizes must be 1 or more");
  for (int64_t b : o.ab_batches) SY_REQUIRE(b >= 1, sy::InvalidArgument, "bench", "batch sizes must be 1 or more");
  if (o.ab_batches.empty()) o.ab_batches = o.batches;
  return o;
}

int64_t matrix_bytes(const sy::Tensor& t) { return t.defined() ? static_cast<int64_t>(t.numel()) * 2 : 0; }

}  // namespace

// Writes DIR/config.json and DIR/model.safetensors with random bf16 weights of the config's shape.
void write_random_checkpoint(const Options& o) {
  nlohmann::json j = sy::bench::config_json(o.config, o.layers);
  sy::ModelConfig cfg = sy::ModelConfig::from_json(j);
  sy::bench::RandomSource src;
  sy::load_model_weights(cfg, src);
  std::filesystem::create_directories(o.write_dir);
  std::ofstream(std::filesystem::path(o.write_dir) / "config.json") << j.dump(2) << "\n";
  std::vector<std::pair<std::string, sy::Tensor>> tensors(src.tensors().begin(), src.tensors().end());
  sy::write_safetensors((std::filesystem::path(o.write_dir) / "model.safetensors").string(), tensors);
  std::printf("wrote %s: %.2fB parameters of random bf16\n", o.write_dir.c_str(), cfg.total_params() / 1e9);
}

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    if (!o.write_dir.empty()) {
      write_random_checkpoint(o);
      return 0;
    }
#if !SY_HAS_CUDA
    throw sy::make_error<sy::Unsupported>("bench", "bench_gpu_decode needs a CUDA build");
#else
    sy::ModelConfig cfg = sy::ModelConfig::from_json(sy::bench::config_json(o.config, o.layers));
    // Under --ep no CUDA call may come before to_device, which selects this rank's GPU.
    std::shared_ptr<sy::parallel::Comm> world = o.ep ? sy::parallel::world_comm("auto") : nullptr;
    const int ranks = world ? world->size() : 1;
    double bandwidth = 0;
    if (!world) {
      bandwidth = sy::cuda::copy_bandwidth(size_t{1} << 31);  // before the weights fill the device
      sy::cuda::empty_cache();
    }
    auto t0 = std::chrono::steady_clock::now();
    sy::bench::RandomSource src;
    sy::LoadOptions load;
    if (world) {
      auto [lo, hi] = sy::Model::expert_range(cfg.moe.num_experts, ranks, world->rank());
      load.load_expert = [lo = lo, hi = hi](int64_t e) { return e >= lo && e < hi; };
    }
    sy::ModelWeights w = sy::load_model_weights(cfg, src, nullptr, load);
    auto model = std::make_unique<sy::Model>(cfg, std::move(w));
    if (world) {
      model->set_expert_parallel(world, {});
      model->set_attention_data_parallel(true);
    }
    auto t1 = std::chrono::steady_clock::now();
    model->to_device(sy::Device::kCuda);
    auto t2 = std::chrono::steady_clock::now();
    if (world) bandwidth = sy::cuda::copy_bandwidth(size_t{1} << 31);  // this rank's GPU, weights resident
    if (world && world->rank() != 0) (void)!std::freopen("/dev/null", "w", stdout);  // rank 0 reports
    if (world) std::printf("expert parallelism: %d ranks, one GPU each, attention data-parallel\n", ranks);
    std::printf("model: %s, %.2fB params (%.2fB active); random init %.1f s, upload %.1f s\n",
                cfg.model_type.c_str(), cfg.total_params() / 1e9, cfg.active_params() / 1e9,
                std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count());
    std::printf("device copy bandwidth: %.0f GB/s\n", bandwidth / 1e9);

    // Bytes every decode step reads regardless of routing, and per routed expert.
    const sy::ModelWeights& mw = model->weights();
    int64_t fixed = matrix_bytes(mw.lm_head), per_expert = 0;
    for (const sy::LayerWeights& l : mw.layers) {
      const sy::AttentionWeights& a = l.attention;
      fixed += matrix_bytes(a.q) + matrix_bytes(a.k) + matrix_bytes(a.v) + matrix_bytes(a.o);
      fixed += matrix_bytes(a.q_a) + matrix_bytes(a.q_b) + matrix_bytes(a.kv_a) + matrix_bytes(a.kv_b);  // MLA
      if (l.is_moe) {
        fixed += matrix_bytes(l.moe.router) + matrix_bytes(l.moe.shared.gate) + matrix_bytes(l.moe.shared.up) +
                 matrix_bytes(l.moe.shared.down);
        for (const sy::moe::GatedMlpWeights& e : l.moe.experts) {  // the first this rank holds
          if (e.gate.defined()) {
            per_expert = matrix_bytes(e.gate) * 3;
            break;
          }
        }
      } else {
        fixed += matrix_bytes(l.mlp.gate) + matrix_bytes(l.mlp.up) + matrix_bytes(l.mlp.down);
      }
    }
    // Cached bytes per token over every layer (bf16 pool; MLA's absorbed row counted once, values included).
    const int64_t kv_token_bytes = sy::PagedKvPool::bytes_per_block(cfg, 1, sy::Device::kCuda);
    std::mt19937 rng(1 + (world ? world->rank() : 0));  // under --ep every rank decodes its own sequences
    // Experts this rank's GPU holds: under --ep a step reads those reached by any rank's tokens.
    auto [own_lo, own_hi] = world ? sy::Model::expert_range(cfg.moe.num_experts, ranks, world->rank())
                                  : std::pair<int64_t, int64_t>{0, cfg.moe.num_experts};
    struct Row {
      int64_t batch;
      double prefill_tok_s, step_ms, tok_s, gbytes, fraction, held_gib, sampled_step_ms, host_logits_step_ms;
      double all_ranks_tok_s;
    };
    // One batch size's measurement under the model's current settings.
    auto measure = [&](int64_t batch) -> Row {
      const int64_t len = o.prompt_len + 3 * (o.decode_steps + 2);  // three passes, two warm-up steps each
      const int64_t blocks_per_seq = (len + o.block_size - 1) / o.block_size;
      sy::PagedKvPool pool = model->new_pool(batch * blocks_per_seq, o.block_size);
      std::vector<sy::BatchSequence> seqs(batch);
      for (int64_t s = 0; s < batch; ++s) {
        for (int64_t b = 0; b < blocks_per_seq; ++b) seqs[s].block_table.push_back(static_cast<int32_t>(s * blocks_per_seq + b));
        seqs[s].ids.resize(o.prompt_len);
        for (auto& id : seqs[s].ids) id = static_cast<int64_t>(rng() % cfg.vocab_size);
      }
      // Prefill in groups of at most 4096 tokens per pass; the warm-up passes write the same pool rows.
      auto prefill = [&] {
        for (int64_t s = 0; s < batch;) {
          std::vector<sy::BatchSequence> group;
          int64_t tokens = 0;
          while (s < batch && (group.empty() || tokens + o.prompt_len <= 4096)) {
            group.push_back(seqs[s++]);
            tokens += o.prompt_len;
          }
          model->forward_batch(group, pool);
        }
      };
      for (int w = 0; w < o.prefill_warmup; ++w) prefill();
      auto p0 = std::chrono::steady_clock::now();
      prefill();
      auto p1 = std::chrono::steady_clock::now();
      // One timed decode pass of --decode-steps steps after two warm-up steps, from position `first`; each
      // step ends with greedy tokens or sampled tokens drawn on the device, or with the logits on the host.
      enum class End { kGreedy, kSampled, kHostLogits };
      auto decode = [&](int64_t first, End end, double& seconds, double& bytes) {
        std::vector<int64_t> next(batch, 1);
        for (int64_t step = 0; step < o.decode_steps + 2; ++step) {
          std::vector<sy::BatchSequence> dec(batch);
          for (int64_t s = 0; s < batch; ++s) {
            dec[s].block_table = seqs[s].block_table;
            dec[s].start = first + step;
            dec[s].ids = {next[s]};
          }
          model->reset_expert_load();
          auto a = std::chrono::steady_clock::now();
          if (end == End::kHostLogits) {
            model->forward_batch(dec, pool);  // the logits come back to the host: synchronised
          } else {
            std::vector<sy::RowSampling> rows(batch);  // greedy
            if (end == End::kSampled) {
              for (int64_t s = 0; s < batch; ++s) rows[s] = {0.8f, 0, 0.95f, static_cast<double>(rng() % 1000) / 1000};
            }
            model->forward_batch_sample(dec, pool, rows);  // synchronised: the tokens come back
          }
          auto b = std::chrono::steady_clock::now();
          for (int64_t s = 0; s < batch; ++s) next[s] = static_cast<int64_t>(rng() % cfg.vocab_size);
          if (step < 2) continue;
          seconds += std::chrono::duration<double>(b - a).count();
          int64_t hit = 0;
          for (const auto& layer : model->expert_load().tokens) {
            std::vector<int64_t> tokens = layer;
            if (world) world->all_reduce(tokens);  // every rank's routing (the same call order on all ranks)
            for (int64_t e = own_lo; e < own_hi && e < static_cast<int64_t>(tokens.size()); ++e) hit += tokens[e] > 0;
          }
          bytes += static_cast<double>(fixed + hit * per_expert + batch * (first + step + 1) * kv_token_bytes);
        }
      };
      double seconds = 0, bytes = 0, sampled_seconds = 0, host_seconds = 0, unused = 0;
      decode(o.prompt_len, End::kGreedy, seconds, bytes);
      decode(o.prompt_len + o.decode_steps + 2, End::kSampled, sampled_seconds, unused);
      decode(o.prompt_len + 2 * (o.decode_steps + 2), End::kHostLogits, host_seconds, unused);
      const sy::cuda::AllocatorStats mem = sy::cuda::allocator_stats();  // weights + KV pool + cached buffers
      const double held_gib = static_cast<double>(mem.bytes_in_use + mem.bytes_cached) / (1024.0 * 1024 * 1024);
      const double steps = static_cast<double>(o.decode_steps);
      const double step_s = seconds / steps;
      return Row{batch, batch * o.prompt_len / std::chrono::duration<double>(p1 - p0).count(), step_s * 1e3,
                 batch / step_s, bytes / steps / 1e9, bytes / steps / step_s / bandwidth, held_gib,
                 sampled_seconds / steps * 1e3, host_seconds / steps * 1e3, ranks * batch / step_s};
    };
    std::vector<Row> rows;
    for (int64_t batch : o.batches) rows.push_back(measure(batch));
    // --ab: each set of switches on the same loaded model, between two default runs.
    struct AbRow {
      std::string label;
      Row row;
    };
    std::vector<AbRow> ab_rows;
    auto run_ab = [&](const std::string& label) {
      for (int64_t batch : o.ab_batches) ab_rows.push_back({label, measure(batch)});
    };
    if (!o.ab.empty()) {
      run_ab("default");
      for (const auto& set : o.ab) {
        std::string label;
        std::vector<std::pair<std::string, std::optional<std::string>>> saved;  // name, earlier value
        for (const auto& [name, value] : set) {
          const char* old = std::getenv(name.c_str());
          saved.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
          setenv(name.c_str(), value.c_str(), 1);
          label += (label.empty() ? "" : " ") + name + "=" + value;
        }
        try {
          model->reconfigure_device();
          run_ab(label);
        } catch (const sy::Error& e) {  // a setting this GPU or build refuses: say so, go on with the rest
          std::printf("%s: not measured: %s\n", label.c_str(), e.what());
        }
        for (auto it = saved.rbegin(); it != saved.rend(); ++it) {
          if (it->second) {
            setenv(it->first.c_str(), it->second->c_str(), 1);
          } else {
            unsetenv(it->first.c_str());
          }
        }
        model->reconfigure_device();
      }
      run_ab("default, again");
    }
    std::printf("\n| batch | prefill tok/s | decode step | decode tok/s | GB read/step | share of copy bandwidth | "
                "device GiB held | step, sampled | step, host logits | decode tok/s, all %d ranks |\n"
                "|---|---|---|---|---|---|---|---|---|---|\n", ranks);
    for (const Row& r : rows) {
      std::printf("| %lld | %.0f | %.2f ms | %.1f | %.2f | %.1f%% | %.1f | %.2f ms | %.2f ms | %.1f |\n",
                  static_cast<long long>(r.batch), r.prefill_tok_s, r.step_ms, r.tok_s, r.gbytes, 100 * r.fraction,
                  r.held_gib, r.sampled_step_ms, r.host_logits_step_ms, r.all_ranks_tok_s);
    }
    if (!ab_rows.empty()) {
      std::printf("\n| switches | batch | decode step | share of copy bandwidth | step, sampled | step / default |\n"
                  "|---|---|---|---|---|---|\n");
      for (const AbRow& a : ab_rows) {
        double base = 0;  // the first default run at this batch
        for (const AbRow& d : ab_rows) {
          if (d.label == "default" && d.row.batch == a.row.batch) {
            base = d.row.step_ms;
            break;
          }
        }
        std::printf("| %s | %lld | %.3f ms | %.1f%% | %.2f ms | %.3f |\n", a.label.c_str(),
                    static_cast<long long>(a.row.batch), a.row.step_ms, 100 * a.row.fraction, a.row.sampled_step_ms,
                    base > 0 ? a.row.step_ms / base : 0.0);
      }
    }
    return 0;
#endif
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
