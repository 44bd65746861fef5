// bench_decode: end-to-end CPU prefill and decode speed at batch 1, next to the memory-bandwidth limit
// measured in the same run (weight bytes a decode step reads / measured bandwidth).
//   bench_decode --model DIR [--prompt-len 128] [--decode-tokens 64] [--threads N] [--repeats 3]
//   bench_decode --make-olmoe DIR      writes an OLMoE-1B-7B-shaped checkpoint with random bf16 weights
//   bench_decode --bandwidth-only      the buffer bandwidth lines alone (to bracket a peer's run)
// Decode bytes are counted exactly from the routing the model did: per step, attention + norms + router of
// every layer, the experts that received the token, the embedding row and the LM head. KV-cache reads are
// printed apart and are not part of the limit. Bandwidth is measured three ways with the engine's thread pool:
// memcpy and a read-only stream over a fresh 1 GiB buffer (before and after the runs), and, paired with every
// decode step, a read-only stream over exactly the weights that step read (same pages, same moment), which
// cancels the bandwidth drift of a shared VM. Not a serving benchmark: one sequence, greedy, no batching.
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

#include "bench_random.h"
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

struct Span {
  const uint8_t* data;
  size_t bytes;
};

// Reads every byte of `spans` once with the pool (pieces of <= 4 MiB, contiguous runs of pieces per thread).
// Returns seconds. The integer sum keeps the loads alive; 32 lanes = four independent 512-bit chains.
double read_spans(const std::vector<Span>& spans) {
  constexpr size_t kPiece = size_t{4} << 20;
  std::vector<Span> pieces;
  for (const Span& s : spans) {
    for (size_t off = 0; off < s.bytes; off += kPiece) pieces.push_back({s.data + off, std::min(kPiece, s.bytes - off)});
  }
  std::vector<uint64_t> sink(pieces.size());
  auto t0 = Clock::now();
  sy::parallel_for(static_cast<int64_t>(pieces.size()), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const uint64_t* p = reinterpret_cast<const uint64_t*>(pieces[k].data);
      const size_t n = pieces[k].bytes / 8;
      uint64_t acc[32] = {};
      size_t i = 0;
      for (; i + 32 <= n; i += 32) {
        for (int j = 0; j < 32; ++j) acc[j] += p[i + j];
      }
      for (; i < n; ++i) acc[0] += p[i];
      uint64_t t = 0;
      for (uint64_t v : acc) t += v;
      sink[k] = t;
    }
  });
  const double sec = seconds_since(t0);
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  return sec;
}

struct Bandwidth {
  double copy_gbs = 0;  // memcpy of a fresh buffer, STREAM convention: bytes read + bytes written per second
  double read_gbs = 0;  // read-only streaming over a fresh buffer
};

Bandwidth measure_bandwidth(size_t bytes) {
  sy::Tensor a = sy::Tensor::empty({static_cast<int64_t>(bytes)}, sy::DType::kU8);
  sy::Tensor b = sy::Tensor::empty({static_cast<int64_t>(bytes)}, sy::DType::kU8);
  uint8_t* src = static_cast<uint8_t*>(a.raw());
  uint8_t* dst = static_cast<uint8_t*>(b.raw());
  const int64_t grain = 1 << 22;
  sy::parallel_for(static_cast<int64_t>(bytes), [&](int64_t s, int64_t e) {  // first touch on the worker threads
    std::memset(src + s, 1, static_cast<size_t>(e - s));
    std::memset(dst + s, 0, static_cast<size_t>(e - s));
  }, grain);
  Bandwidth bw;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = Clock::now();
    sy::parallel_for(static_cast<int64_t>(bytes), [&](int64_t s, int64_t e) {
      std::memcpy(dst + s, src + s, static_cast<size_t>(e - s));
    }, grain);
    bw.copy_gbs = std::max(bw.copy_gbs, 2.0 * bytes / seconds_since(t0) / 1e9);
  }
  for (int rep = 0; rep < 5; ++rep) bw.read_gbs = std::max(bw.read_gbs, bytes / read_spans({{src, bytes}}) / 1e9);
  return bw;
}

// ---------------------------------------------------------------------------------------------------------------
// Bytes of weights one decode step reads, from the experts the model actually routed the token to.

void add_span(std::vector<Span>& spans, const sy::Tensor& t) {
  if (t.defined() && t.nbytes() > 0) spans.push_back({static_cast<const uint8_t*>(t.raw()), t.nbytes()});
}

void add_mlp(std::vector<Span>& spans, const sy::moe::GatedMlpWeights& w) {
  for (const sy::Tensor* t : {&w.gate, &w.up, &w.down, &w.gate_bias, &w.up_bias, &w.down_bias}) add_span(spans, *t);
}

size_t total_bytes(const std::vector<Span>& spans) {
  size_t n = 0;
  for (const Span& s : spans) n += s.bytes;
  return n;
}

// The tensors every decode step reads (attention, norms, routers, shared experts, LM head, one embedding row)
// and, per layer, one routed expert's tensors.
struct StepWeights {
  std::vector<Span> dense;
  std::vector<std::vector<std::vector<Span>>> expert;  // [layer][expert]: that expert's tensors (none: dense layer)
  std::vector<size_t> expert_bytes;       // [layer]: bytes of one routed expert
};

StepWeights step_weights(const sy::Model& model) {
  const sy::ModelWeights& w = model.weights();
  StepWeights s;
  add_span(s.dense, w.final_norm);
  add_span(s.dense, w.lm_head);
  s.dense.push_back({static_cast<const uint8_t*>(w.embed.raw()), w.embed.nbytes() / static_cast<size_t>(w.embed.size(0))});
  for (const sy::LayerWeights& l : w.layers) {
    const sy::AttentionWeights& a = l.attention;
    for (const sy::Tensor* t : {&a.q, &a.k, &a.v, &a.o, &a.q_bias, &a.k_bias, &a.v_bias, &a.o_bias, &a.q_norm,
                                &a.k_norm, &a.sinks, &a.q_a, &a.q_a_norm, &a.q_b, &a.kv_a, &a.kv_a_bias, &a.kv_a_norm,
                                &a.kv_b, &l.input_norm, &l.post_attention_norm}) {
      add_span(s.dense, *t);
    }
    s.expert.emplace_back();
    if (l.is_moe) {
      for (const sy::Tensor* t : {&l.moe.router, &l.moe.router_bias, &l.moe.score_bias, &l.moe.shared_gate}) add_span(s.dense, *t);
      if (l.moe.shared.gate.defined()) add_mlp(s.dense, l.moe.shared);
      for (const auto& e : l.moe.experts) {
        s.expert.back().emplace_back();
        add_mlp(s.expert.back().back(), e);
      }
    } else {
      add_mlp(s.dense, l.mlp);
    }
    s.expert_bytes.push_back(s.expert.back().empty() ? 0 : total_bytes(s.expert.back()[0]));
  }
  return s;
}

// The spans of a typical step: the dense part and the first top_k experts of every layer.
std::vector<Span> typical_step_spans(const StepWeights& sw, int top_k) {
  std::vector<Span> spans = sw.dense;
  for (const auto& layer : sw.expert) {
    for (int e = 0; e < std::min<int>(top_k, static_cast<int>(layer.size())); ++e) {
      spans.insert(spans.end(), layer[e].begin(), layer[e].end());
    }
  }
  return spans;
}

// Spans of the step just run: dense part + every expert that received a token.
std::vector<Span> routed_spans(const sy::Model& model, const StepWeights& s) {
  std::vector<Span> spans = s.dense;
  const auto& load = model.expert_load().tokens;
  for (size_t l = 0; l < load.size(); ++l) {
    for (size_t e = 0; e < load[l].size(); ++e) {
      if (load[l][e] > 0) spans.insert(spans.end(), s.expert[l][e].begin(), s.expert[l][e].end());
    }
  }
  return spans;
}

// Weight bytes of the step just run: dense part + every expert with at least one token.
size_t routed_bytes(const sy::Model& model, const StepWeights& s) {
  size_t total = total_bytes(s.dense);
  const auto& load = model.expert_load().tokens;
  for (size_t l = 0; l < load.size(); ++l) {
    for (int64_t t : load[l]) total += t > 0 ? s.expert_bytes[l] : 0;
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
  bool bandwidth_only = false;
  size_t bw_bytes = size_t{1} << 30;
};

void usage() {
  std::printf(
      "usage: bench_decode --model DIR [--prompt-len N] [--decode-tokens N] [--warmup-tokens N] [--threads N]\n"
      "                    [--repeats N] [--bandwidth-mib N]\n"
      "       bench_decode --bandwidth-only [--threads N]   (the bandwidth lines alone, e.g. next to a peer run)\n"
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
    else if (a == "--bandwidth-only") o.bandwidth_only = true;
    else if (a == "--bandwidth-mib") o.bw_bytes = static_cast<size_t>(integer()) << 20;
    else if (a == "-h" || a == "--help") { usage(); std::exit(0); }
    else throw sy::make_error<sy::InvalidArgument>("bench", "unknown flag \"", a, "\"; see --help");
  }
  SY_REQUIRE(!o.model.empty() || !o.make_dir.empty() || o.bandwidth_only, sy::InvalidArgument, "bench", "give --model DIR or --make-olmoe DIR");
  SY_REQUIRE(o.prompt_len > 0 && o.decode_tokens > 0, sy::InvalidArgument, "bench", "--prompt-len and --decode-tokens must be > 0");
  return o;
}

// Read-only bandwidth over the weights of one typical decode step, in place (the model's own mmap'd pages,
// so the same physical memory the decode reads). Best of 5.
double weight_read_gbs(const std::vector<Span>& spans) {
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) best = std::max(best, total_bytes(spans) / read_spans(spans) / 1e9);
  return best;
}

int run(const Options& o) {
  if (!o.make_dir.empty()) {
    make_olmoe(o.make_dir);
    if (o.model.empty() && !o.bandwidth_only) return 0;
  }
  const int threads = sy::ThreadPool::global().num_threads();
  std::printf("threads: %d (pool; set SY_NUM_THREADS)\n", threads);
  // Measured before and after the model runs (a shared VM's bandwidth drifts); the higher value sets the limit.
  Bandwidth bw = measure_bandwidth(o.bw_bytes);
  std::printf("bandwidth over a %zu MiB buffer: copy %.2f GB/s (read+write), read-only %.2f GB/s\n",
              o.bw_bytes >> 20, bw.copy_gbs, bw.read_gbs);
  if (o.bandwidth_only) return 0;

  auto t_load = Clock::now();
  auto model = sy::Model::load(o.model);
  const sy::ModelConfig& cfg = model->config();
  std::printf("loaded %s (%s, %d layers) in %.1f s\n", o.model.c_str(), cfg.model_type.c_str(), cfg.num_layers,
              seconds_since(t_load));
  const StepWeights sw = step_weights(*model);
  const std::vector<Span> typical = typical_step_spans(sw, cfg.moe.top_k);

  std::vector<int64_t> prompt(static_cast<size_t>(o.prompt_len));
  for (int64_t i = 0; i < o.prompt_len; ++i) prompt[i] = static_cast<int64_t>(mix64(777 + i) % static_cast<uint64_t>(cfg.vocab_size));

  // Warm-up prefill: pages every weight into memory (a long prompt touches nearly every expert).
  {
    auto cache = model->new_cache(o.prompt_len + o.decode_tokens + o.warmup_tokens);
    auto t0 = Clock::now();
    model->forward(prompt, cache, false);
    std::printf("warm-up prefill: %.2f s\n", seconds_since(t0));
  }
  double wread = weight_read_gbs(typical);
  std::printf("read-only bandwidth over one step's weights in place (%.3f GB): %.2f GB/s\n", total_bytes(typical) / 1e9,
              wread);
  std::vector<double> prefill_tps, decode_tps, step_gb, paired, paired_gbs;
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
    double weight_bytes = 0, kv_bytes = 0, t_decode = 0, t_stream = 0;
    for (int64_t i = 0; i < o.decode_tokens; ++i) {
      model->reset_expert_load();
      auto ts = Clock::now();
      sy::Tensor step = model->forward({tok}, cache, false);
      t_decode += seconds_since(ts);
      tok = argmax(step);
      weight_bytes += static_cast<double>(routed_bytes(*model, sw));
      // Paired limit: right after the step, stream exactly the weights it read (same pages, same threads), so
      // that the bandwidth drift of a shared machine cancels out of the ratio.
      t_stream += read_spans(routed_spans(*model, sw));
      // KV rows read by attention: keys and values of every cached position, every layer (f32; MLA's values
      // are the keys' latent columns, read once).
      for (int l = 0; l < cfg.num_layers; ++l) {
        const double row_bytes = static_cast<double>(cache.keys(l).nbytes() +
                                                     (cache.layout().values_in_keys ? 0 : cache.values(l).nbytes()));
        kv_bytes += static_cast<double>(cache.length()) * row_bytes / cache.capacity();
      }
    }
    decode_tps.push_back(o.decode_tokens / t_decode);
    paired.push_back(t_stream / t_decode);
    paired_gbs.push_back(weight_bytes / t_stream / 1e9);
    step_gb.push_back(weight_bytes / o.decode_tokens / 1e9);
    kv_mb = kv_bytes / o.decode_tokens / 1e6;
    std::printf("run %d: prefill %lld tokens %.2f tok/s | decode %lld tokens %.3f tok/s, %.3f GB/step | paired "
                "stream %.2f GB/s, decode at %.1f%% of it\n", r + 1, static_cast<long long>(o.prompt_len),
                prefill_tps.back(), static_cast<long long>(o.decode_tokens), decode_tps.back(), step_gb.back(),
                paired_gbs.back(), 100.0 * paired.back());
    std::fflush(stdout);
  }
  const Bandwidth after = measure_bandwidth(o.bw_bytes);
  const double wread_after = weight_read_gbs(typical);
  std::printf("after the runs: buffer copy %.2f GB/s, buffer read %.2f GB/s, weight read %.2f GB/s\n",
              after.copy_gbs, after.read_gbs, wread_after);
  bw.copy_gbs = std::max(bw.copy_gbs, after.copy_gbs);
  bw.read_gbs = std::max(bw.read_gbs, after.read_gbs);
  wread = std::max(wread, wread_after);
  const double dec = median(decode_tps), pre = median(prefill_tps), gb = median(step_gb);
  const double best = std::max({bw.copy_gbs, bw.read_gbs, wread});
  std::printf("\nfirst greedy token after the prompt: %lld\n", static_cast<long long>(first_token));
  std::printf("| %-52s | %9s |\n", ("Switchyard, median of " + std::to_string(o.repeats) + " runs").c_str(), "value");
  std::printf("|------------------------------------------------------|-----------|\n");
  auto row = [](const std::string& name, double v, const char* fmt) {
    char buf[32];
    std::snprintf(buf, sizeof buf, fmt, v);
    std::printf("| %-52s | %9s |\n", name.c_str(), buf);
  };
  row("prefill tok/s (batch 1, " + std::to_string(o.prompt_len) + " tokens)", pre, "%.2f");
  row("decode tok/s (batch 1, " + std::to_string(o.decode_tokens) + " tokens)", dec, "%.3f");
  row("weight GB read per decode step (routed, exact)", gb, "%.3f");
  row("KV-cache MB read per decode step (not in the limit)", kv_mb, "%.1f");
  row("achieved weight GB/s in decode", dec * gb, "%.2f");
  row("copy bandwidth GB/s (buffer, read+write, max of 2)", bw.copy_gbs, "%.2f");
  row("read bandwidth GB/s (buffer, max of 2)", bw.read_gbs, "%.2f");
  row("read bandwidth GB/s (step weights in place, max 2)", wread, "%.2f");
  row("decode limit tok/s (copy bandwidth / step bytes)", bw.copy_gbs / gb, "%.3f");
  row("decode % of copy-bandwidth limit", 100.0 * dec * gb / bw.copy_gbs, "%.1f%%");
  row("decode % of the highest measured bandwidth", 100.0 * dec * gb / best, "%.1f%%");
  row("paired: stream GB/s of each step's own weights", median(paired_gbs), "%.2f");
  row("paired: decode % of streaming those weights", 100.0 * median(paired), "%.1f%%");
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
