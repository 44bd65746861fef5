// bench_decode: end-to-end CPU prefill and decode speed at batch 1, next to the memory-bandwidth limit
// measured in the same run (weight bytes a decode step reads / measured bandwidth).
//   bench_decode --model DIR [--prompt-len 128] [--decode-tokens 64] [--threads N] [--repeats 3]
//   bench_decode --make-olmoe DIR      writes an OLMoE-1B-7B-shaped checkpoint with random bf16 weights
// Decode bytes are counted exactly from the routing the model did: per step, attention + norms + router of
// every layer, the experts that received the token, the embedding row and the LM head. KV-cache reads are
// printed apart and are not part of the limit. Not a serving benchmark: one sequence, greedy, no batching.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "switchyard/core/dtype.h"
#include "switchyard/core/error.h"
#include "switchyard/core/tensor.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/io/safetensors.h"
#include "switchyard/model/model.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ---------------------------------------------------------------------------------------------------------------
// Synthetic OLMoE-1B-7B checkpoint: config.json + one safetensors shard per layer (plus one for the embedding and
// the head) + model.safetensors.index.json. One shard is in memory at a time (~0.9 GB), so peak RAM stays ~1 GB.

constexpr int64_t kVocab = 50304, kHidden = 2048, kLayers = 16, kHeads = 16, kExperts = 64, kTopK = 8, kInter = 1024;

nlohmann::json olmoe_config() {
  return {{"model_type", "olmoe"},
          {"architectures", {"OlmoeForCausalLM"}},
          {"vocab_size", kVocab},
          {"hidden_size", kHidden},
          {"intermediate_size", kInter},
          {"num_hidden_layers", kLayers},
          {"num_attention_heads", kHeads},
          {"num_key_value_heads", kHeads},
          {"num_experts", kExperts},
          {"num_experts_per_tok", kTopK},
          {"norm_topk_prob", false},
          {"attention_bias", false},
          {"clip_qkv", nullptr},
          {"hidden_act", "silu"},
          {"max_position_embeddings", 4096},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"tie_word_embeddings", false},
          {"pad_token_id", 1},
          {"bos_token_id", nullptr},
          {"eos_token_id", 50279},
          {"torch_dtype", "bfloat16"}};
}

// Counter-based generator: value i of stream `seed` depends only on (seed, i), so tensors are reproducible
// whatever the thread count. Sum of four 16-bit uniforms (Irwin-Hall), scaled to unit variance.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

sy::Tensor random_bf16(uint64_t seed, const sy::Shape& shape, float scale, float offset) {
  sy::Tensor t = sy::Tensor::empty(shape, sy::DType::kBF16);
  uint16_t* p = t.u16();
  const uint64_t key = mix64(seed * 0x9e3779b97f4a7c15ull + 1);
  // Sum of four uniforms in [0, 65536): mean 131070, variance 4 * 65536^2 / 12.
  const float mean = 4.f * 32767.5f, inv_sd = 1.f / (65536.f * std::sqrt(4.f / 12.f));
  sy::parallel_for(t.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint64_t r = mix64(key + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull);
      float s = static_cast<float>((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
      p[i] = sy::f32_to_bf16(offset + scale * (s - mean) * inv_sd);
    }
  }, 1 << 16);
  return t;
}

void make_olmoe(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const int num_shards = kLayers + 1;
  auto shard_name = [&](int s) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", s + 1, num_shards);
    return std::string(buf);
  };
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total = 0, seed = 20251123;
  const float proj = 1.f / std::sqrt(static_cast<float>(kHidden));
  const float down = 1.f / std::sqrt(static_cast<float>(kInter));
  const auto t0 = Clock::now();
  for (int s = 0; s < num_shards; ++s) {
    std::vector<std::pair<std::string, sy::Tensor>> tensors;
    auto add = [&](const std::string& name, const sy::Shape& shape, float scale, float offset = 0.f) {
      tensors.emplace_back(name, random_bf16(++seed, shape, scale, offset));
      weight_map[name] = shard_name(s);
      total += tensors.back().second.nbytes();
    };
    if (s == 0) {
      add("model.embed_tokens.weight", {kVocab, kHidden}, 1.f);
      add("model.norm.weight", {kHidden}, 0.05f, 1.f);
      add("lm_head.weight", {kVocab, kHidden}, proj);
    } else {
      const std::string p = "model.layers." + std::to_string(s - 1) + ".";
      add(p + "input_layernorm.weight", {kHidden}, 0.05f, 1.f);
      add(p + "post_attention_layernorm.weight", {kHidden}, 0.05f, 1.f);
      for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"}) add(p + "self_attn." + n + ".weight", {kHidden, kHidden}, proj);
      add(p + "self_attn.q_norm.weight", {kHidden}, 0.05f, 1.f);
      add(p + "self_attn.k_norm.weight", {kHidden}, 0.05f, 1.f);
      add(p + "mlp.gate.weight", {kExperts, kHidden}, proj);
      for (int e = 0; e < kExperts; ++e) {
        const std::string ep = p + "mlp.experts." + std::to_string(e) + ".";
        add(ep + "gate_proj.weight", {kInter, kHidden}, proj);
        add(ep + "up_proj.weight", {kInter, kHidden}, proj);
        add(ep + "down_proj.weight", {kHidden, kInter}, down);
      }
    }
    sy::write_safetensors((fs::path(dir) / shard_name(s)).string(), tensors, {{"format", "pt"}});
    std::printf("  shard %2d/%d written (%.2f GB so far, %.0f s)\n", s + 1, num_shards, total / 1e9, seconds_since(t0));
    std::fflush(stdout);
  }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::ofstream(fs::path(dir) / "model.safetensors.index.json") << index.dump(1) << "\n";
  std::ofstream cfg(fs::path(dir) / "config.json");
  if (!cfg) throw sy::make_error<sy::IoError>("bench", "cannot write ", dir, "/config.json");
  cfg << olmoe_config().dump(2) << "\n";
  std::printf("wrote %s: %.2f GB of bf16 weights in %.0f s\n", dir.c_str(), total / 1e9, seconds_since(t0));
}

// ---------------------------------------------------------------------------------------------------------------
// Memory bandwidth with the engine's own thread pool (same thread count as the model run).

struct Bandwidth {
  double copy_gbs = 0;  // memcpy, STREAM convention: bytes read + bytes written per second
  double read_gbs = 0;  // read-only streaming sum
};

Bandwidth measure_bandwidth(size_t bytes) {
  const size_t n = bytes / sizeof(float);
  sy::Tensor a = sy::Tensor::empty({static_cast<int64_t>(n)}, sy::DType::kF32);
  sy::Tensor b = sy::Tensor::empty({static_cast<int64_t>(n)}, sy::DType::kF32);
  float* src = a.f32();
  float* dst = b.f32();
  const int64_t chunk_grain = 1 << 20;
  sy::parallel_for(static_cast<int64_t>(n), [&](int64_t s, int64_t e) {  // first touch on the worker threads
    for (int64_t i = s; i < e; ++i) src[i] = static_cast<float>(i & 1023), dst[i] = 0.f;
  }, chunk_grain);
  Bandwidth bw;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = Clock::now();
    sy::parallel_for(static_cast<int64_t>(n), [&](int64_t s, int64_t e) {
      std::memcpy(dst + s, src + s, static_cast<size_t>(e - s) * sizeof(float));
    }, chunk_grain);
    bw.copy_gbs = std::max(bw.copy_gbs, 2.0 * bytes / seconds_since(t0) / 1e9);
  }
  std::vector<double> sums(64, 0.0);
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = Clock::now();
    sy::parallel_for(static_cast<int64_t>(n), [&](int64_t s, int64_t e) {
      float acc[16] = {};
      int64_t i = s;
      for (; i + 16 <= e; i += 16) {
        for (int j = 0; j < 16; ++j) acc[j] += src[i + j];
      }
      for (; i < e; ++i) acc[0] += src[i];
      double t = 0;
      for (float v : acc) t += v;
      sums[static_cast<size_t>(s * 63 / static_cast<int64_t>(n))] += t;  // keep the loads alive
    }, chunk_grain);
    bw.read_gbs = std::max(bw.read_gbs, bytes / seconds_since(t0) / 1e9);
  }
  if (sums[0] == 12345.678) std::printf(" ");
  return bw;
}

// ---------------------------------------------------------------------------------------------------------------
// Bytes of weights one decode step reads, from the experts the model actually routed the token to.

size_t nbytes(const sy::Tensor& t) { return t.defined() ? t.nbytes() : 0; }

size_t mlp_bytes(const sy::moe::GatedMlpWeights& w) {
  return nbytes(w.gate) + nbytes(w.up) + nbytes(w.down) + nbytes(w.gate_bias) + nbytes(w.up_bias) + nbytes(w.down_bias);
}

struct StepBytes {
  size_t dense = 0;    // attention, norms, routers, shared experts, LM head, one embedding row: every step
  std::vector<size_t> expert;  // [layer]: bytes of one routed expert
};

StepBytes step_bytes(const sy::Model& model) {
  const sy::ModelWeights& w = model.weights();
  StepBytes s;
  s.dense = nbytes(w.final_norm) + nbytes(w.lm_head) + w.embed.nbytes() / static_cast<size_t>(w.embed.size(0));
  for (const sy::LayerWeights& l : w.layers) {
    const sy::AttentionWeights& a = l.attention;
    for (const sy::Tensor* t : {&a.q, &a.k, &a.v, &a.o, &a.q_bias, &a.k_bias, &a.v_bias, &a.o_bias, &a.q_norm,
                                &a.k_norm, &a.sinks, &a.q_a, &a.q_a_norm, &a.q_b, &a.kv_a, &a.kv_a_bias, &a.kv_a_norm,
                                &a.kv_b, &l.input_norm, &l.post_attention_norm}) {
      s.dense += nbytes(*t);
    }
    if (l.is_moe) {
      s.dense += nbytes(l.moe.router) + nbytes(l.moe.router_bias) + nbytes(l.moe.score_bias) + nbytes(l.moe.shared_gate);
      if (l.moe.shared.gate.defined()) s.dense += mlp_bytes(l.moe.shared);
      s.expert.push_back(l.moe.experts.empty() ? 0 : mlp_bytes(l.moe.experts[0]));
    } else {
      s.dense += mlp_bytes(l.mlp);
      s.expert.push_back(0);
    }
  }
  return s;
}

// Weight bytes of the step just run: dense part + every expert with at least one token.
size_t routed_bytes(const sy::Model& model, const StepBytes& s) {
  size_t total = s.dense;
  const auto& load = model.expert_load().tokens;
  for (size_t l = 0; l < load.size(); ++l) {
    for (int64_t t : load[l]) total += t > 0 ? s.expert[l] : 0;
  }
  return total;
}

int64_t argmax(const sy::Tensor& logits) {
  const float* p = logits.f32();
  return std::max_element(p, p + logits.numel()) - p;
}

// ---------------------------------------------------------------------------------------------------------------

struct Options {
  std::string model, make_dir;
  int64_t prompt_len = 128, decode_tokens = 64, warmup_tokens = 4;
  int threads = 0, repeats = 3;
  size_t bw_bytes = size_t{1} << 30;
};

void usage() {
  std::printf(
      "usage: bench_decode --model DIR [--prompt-len N] [--decode-tokens N] [--warmup-tokens N] [--threads N]\n"
      "                    [--repeats N] [--bandwidth-mib N]\n"
      "       bench_decode --make-olmoe DIR   (writes an OLMoE-1B-7B-shaped random bf16 checkpoint, ~13.8 GB)\n");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      SY_REQUIRE(i + 1 < argc, sy::InvalidArgument, "bench", a, " needs a value");
      return argv[++i];
    };
    auto integer = [&]() -> int64_t {
      std::string v = value();
      char* end = nullptr;
      long long x = std::strtoll(v.c_str(), &end, 10);
      SY_REQUIRE(end && *end == 0 && x >= 0, sy::InvalidArgument, "bench", a, " wants a non-negative integer, got \"", v, "\"");
      return x;
    };
    if (a == "--model") o.model = value();
    else if (a == "--make-olmoe") o.make_dir = value();
    else if (a == "--prompt-len") o.prompt_len = integer();
    else if (a == "--decode-tokens") o.decode_tokens = integer();
    else if (a == "--warmup-tokens") o.warmup_tokens = integer();
    else if (a == "--threads") o.threads = static_cast<int>(integer());
    else if (a == "--repeats") o.repeats = static_cast<int>(std::max<int64_t>(1, integer()));
    else if (a == "--bandwidth-mib") o.bw_bytes = static_cast<size_t>(integer()) << 20;
    else if (a == "-h" || a == "--help") { usage(); std::exit(0); }
    else throw sy::make_error<sy::InvalidArgument>("bench", "unknown flag \"", a, "\"; see --help");
  }
  SY_REQUIRE(!o.model.empty() || !o.make_dir.empty(), sy::InvalidArgument, "bench", "give --model DIR or --make-olmoe DIR");
  SY_REQUIRE(o.prompt_len > 0 && o.decode_tokens > 0, sy::InvalidArgument, "bench", "--prompt-len and --decode-tokens must be > 0");
  return o;
}

int run(const Options& o) {
  if (!o.make_dir.empty()) {
    make_olmoe(o.make_dir);
    if (o.model.empty()) return 0;
  }
  const int threads = sy::ThreadPool::global().num_threads();
  std::printf("threads: %d (pool; set SY_NUM_THREADS)\n", threads);
  Bandwidth bw = measure_bandwidth(o.bw_bytes);
  std::printf("bandwidth over %zu MiB: copy %.2f GB/s (read+write), read-only %.2f GB/s\n", o.bw_bytes >> 20,
              bw.copy_gbs, bw.read_gbs);

  auto t_load = Clock::now();
  auto model = sy::Model::load(o.model);
  const sy::ModelConfig& cfg = model->config();
  std::printf("loaded %s (%s, %d layers) in %.1f s\n", o.model.c_str(), cfg.model_type.c_str(), cfg.num_layers,
              seconds_since(t_load));
  const StepBytes sb = step_bytes(*model);

  std::vector<int64_t> prompt(static_cast<size_t>(o.prompt_len));
  for (int64_t i = 0; i < o.prompt_len; ++i) prompt[i] = static_cast<int64_t>(mix64(777 + i) % static_cast<uint64_t>(cfg.vocab_size));

  // Warm-up prefill: pages every weight into memory (a long prompt touches nearly every expert).
  {
    auto cache = model->new_cache(o.prompt_len + o.decode_tokens + o.warmup_tokens);
    auto t0 = Clock::now();
    model->forward(prompt, cache, false);
    std::printf("warm-up prefill: %.2f s\n", seconds_since(t0));
  }
  std::vector<double> prefill_tps, decode_tps, step_gb;
  double kv_mb = 0;
  int64_t first_token = -1;
  for (int r = 0; r < o.repeats; ++r) {
    auto cache = model->new_cache(o.prompt_len + o.decode_tokens + o.warmup_tokens);
    auto t0 = Clock::now();
    sy::Tensor logits = model->forward(prompt, cache, false);
    const double tp = seconds_since(t0);
    prefill_tps.push_back(o.prompt_len / tp);
    int64_t tok = argmax(logits);
    if (r == 0) first_token = tok;
    for (int64_t i = 0; i < o.warmup_tokens; ++i) tok = argmax(model->forward({tok}, cache, false));
    double total_bytes = 0, kv_bytes = 0, t_decode = 0;
    for (int64_t i = 0; i < o.decode_tokens; ++i) {
      model->reset_expert_load();
      auto ts = Clock::now();
      sy::Tensor step = model->forward({tok}, cache, false);
      t_decode += seconds_since(ts);
      tok = argmax(step);
      total_bytes += static_cast<double>(routed_bytes(*model, sb));
      // KV rows read by attention: keys and values of every cached position, every layer (f32).
      for (int l = 0; l < cfg.num_layers; ++l) kv_bytes += static_cast<double>(cache.length()) * (cache.keys(l).nbytes() + cache.values(l).nbytes()) / cache.capacity();
    }
    decode_tps.push_back(o.decode_tokens / t_decode);
    step_gb.push_back(total_bytes / o.decode_tokens / 1e9);
    kv_mb = kv_bytes / o.decode_tokens / 1e6;
    std::printf("run %d: prefill %lld tokens %.2f tok/s | decode %lld tokens %.3f tok/s, %.3f GB/step\n", r + 1,
                static_cast<long long>(o.prompt_len), prefill_tps.back(), static_cast<long long>(o.decode_tokens),
                decode_tps.back(), step_gb.back());
    std::fflush(stdout);
  }
  const double dec = median(decode_tps), pre = median(prefill_tps), gb = median(step_gb);
  const double limit_copy = bw.copy_gbs / gb, limit_read = bw.read_gbs / gb;
  std::printf("\nfirst greedy token after the prompt: %lld\n", static_cast<long long>(first_token));
  std::printf("| metric (median of %d)                      | value    |\n", o.repeats);
  std::printf("|---------------------------------------------|----------|\n");
  std::printf("| prefill tok/s (batch 1, %4lld tokens)         | %8.2f |\n", static_cast<long long>(o.prompt_len), pre);
  std::printf("| decode tok/s (batch 1, %4lld tokens)          | %8.3f |\n", static_cast<long long>(o.decode_tokens), dec);
  std::printf("| weight GB read per decode step (routed)     | %8.3f |\n", gb);
  std::printf("| KV-cache MB read per decode step (not in limit) | %4.1f |\n", kv_mb);
  std::printf("| copy bandwidth GB/s (read+write)            | %8.2f |\n", bw.copy_gbs);
  std::printf("| read-only bandwidth GB/s                    | %8.2f |\n", bw.read_gbs);
  std::printf("| decode limit tok/s (copy BW / bytes)        | %8.3f |\n", limit_copy);
  std::printf("| decode %% of copy-bandwidth limit            | %7.1f%% |\n", 100.0 * dec / limit_copy);
  std::printf("| decode %% of read-bandwidth limit            | %7.1f%% |\n", 100.0 * dec / limit_read);
  std::printf("| achieved weight GB/s in decode              | %8.2f |\n", dec * gb);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    if (o.threads > 0) setenv("SY_NUM_THREADS", std::to_string(o.threads).c_str(), 1);  // before the pool exists
    return run(o);
  } catch (const sy::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
